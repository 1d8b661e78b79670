"""Lanes (SPEC "Lanes"): a worker's extra connections to a peer beside the daemon's session,
two daemons' peer layers in one process over real loopback sockets."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.net.lanes import open_lane
from shoal.daemon.net.peers import PeerEvent, PeerManager
from shoal.daemon.net.session import PeerSession, Rejected, SessionClosed, establish
from shoal.protocol.errors import LocalProtocolError, ProtocolError
from shoal.protocol.format.chunking import DEFAULT_PARAMS, make_chunker
from shoal.protocol.format.hashing import chunk_id
from shoal.protocol.format.identity import peer_id_of
from shoal.protocol.wire.channel import Role
from shoal.protocol.wire.connection import ConnectionClosed, State
from shoal.protocol.wire.messages import Run
from tests.daemon.test_peers import Node, make_data, start

pytestmark = pytest.mark.trio

#: b's upload cap to each peer in the test of the shared cap, bytes/s.
PER_PEER_CAP = 1_000_000


class Pair:
    """a and b with a session open between them; b shares make_data's folder as "data"."""

    def __init__(self, tmp_path: Path, nursery: trio.Nursery, per_peer_cap: int) -> None:
        self.a, self.b = Node(tmp_path / "a"), Node(tmp_path / "b")
        self.data = tmp_path / "data"
        self.events: list[PeerEvent] = []
        self.b.peers = PeerManager(
            self.b.key, self.b.trust, self.b.library, "127.0.0.1:0", on_event=self.events.append,
            limits=lambda: (0, per_peer_cap),
        )
        self.nursery = nursery
        #: a's peer layer runs in this scope, so that a test can stop it.
        self.a_layer = trio.CancelScope()

    async def lane(self, number: int, key: Ed25519PrivateKey | None = None, peer_id: str | None = None) -> PeerSession:
        """Lane `number` from a (or the holder of `key`) to b, once b runs it (it does so right
        after its HELLO has gone out, so a moment after open_lane returns)."""
        session = await open_lane(
            self.nursery, key or self.a.key, self.b.address(), peer_id or self.b.id, number, self.a.library.index, "b"
        )
        with trio.fail_after(5):
            while (self.a.id, number) not in self.b.peers.lanes:
                await trio.sleep(0.01)
        return session

    def main_of_b(self) -> PeerSession:
        return self.b.peers.sessions[self.a.id]


@asynccontextmanager
async def pair(tmp_path: Path, *, session: bool = True, per_peer_cap: int = 0) -> AsyncIterator[Pair]:
    """b shares data and trusts a; with `session`, b dials a and both wait for the session and catalog."""
    async with trio.open_nursery() as nursery:
        p = Pair(tmp_path, nursery, per_peer_cap)
        make_data(p.data)
        await p.b.library.share(p.data)

        async def run_a(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with p.a_layer:
                await p.a.peers.run(task_status=task_status)

        p.a.port = await nursery.start(run_a)
        await start(nursery, p.b)
        p.a.trust.trust(p.b.id, "b", [])
        p.b.trust.trust(p.a.id, "a", [p.a.address()] if session else [])
        if session:
            p.b.peers.wake_dialer()
            with trio.fail_after(5):
                while not p.a.peers.offers("data") or p.a.id not in p.b.peers.sessions:
                    await trio.sleep(0.01)
        yield p
        nursery.cancel_scope.cancel()


def runs_of(path: Path, pieces: int = 2) -> list[Run]:
    """The file's chunks as `pieces` runs in file order."""
    chunks = list(make_chunker(DEFAULT_PARAMS).cut_buf(path.read_bytes()))
    step = -(-len(chunks) // pieces)
    return [
        Run(tuple(chunk_id(c.data) for c in part), tuple(c.length for c in part))
        for part in (chunks[i : i + step] for i in range(0, len(chunks), step))
    ]


async def fetch_runs(session: PeerSession, runs: list[Run]) -> bytes:
    got: dict[bytes, bytes] = {}
    missing = await session.get_runs(runs, lambda first, data: got.__setitem__(first, bytes(data)))
    assert missing == []
    return b"".join(got[run.ids[0]] for run in runs)


async def wait_closed(session: PeerSession) -> ConnectionClosed:
    with trio.fail_after(5):
        while session.conn.state not in (State.CLOSED, State.ERROR):
            await trio.sleep(0.01)
    closed = session.conn.next_event()
    assert isinstance(closed, ConnectionClosed)
    return closed


async def test_a_lane_serves_objects_runs_and_chunks_byte_for_byte(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        main = p.main_of_b()
        sent_before, events_before = main.bytes_out, list(p.events)
        lane = await p.lane(1)
        assert set(p.b.peers.lanes) == {(p.a.id, 1)}

        head = p.a.peers.offers("data")[0][1].head
        got, missing = await lane.get_objects([head])
        assert (got, missing) == ([(head, p.b.library.index.get_object(head)[1])], [])
        model = (p.data / "model.pt").read_bytes()
        runs = runs_of(p.data / "model.pt")
        assert await fetch_runs(lane, runs) == model
        first = runs[0]
        chunks: dict[bytes, bytes] = {}
        assert await lane.get_chunks(first.ids[:2], lambda cid, data: chunks.__setitem__(cid, bytes(data))) == []
        assert b"".join(chunks[cid] for cid in first.ids[:2]) == model[: sum(first.sizes[:2])]

        # A lane is no peer: b lists, reports and counts only the session.
        assert list(p.b.peers.sessions) == p.b.peers.connected() == [p.a.id]
        assert [(r.peer_id, r.state) for r in p.b.peers.reach()] == [(p.a.id, "online")]
        assert p.events == events_before
        assert main.bytes_out == sent_before and main.conn.state is State.OPEN
        # The keeper still gives way to a peer's fetch that comes over lanes only.
        assert p.b.peers.serving()
        assert p.b.peers.peer_state(p.a.id)["bytes_out"] == sent_before


async def test_two_lanes_move_data_at_once(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        one, two = await p.lane(1), await p.lane(2)
        assert set(p.b.peers.lanes) == {(p.a.id, 1), (p.a.id, 2)}
        runs = runs_of(p.data / "model.pt", pieces=4)
        results: dict[int, bytes] = {}

        async def half(session: PeerSession, index: int, part: list[Run]) -> None:
            results[index] = await fetch_runs(session, part)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(half, one, 0, runs[:2])
            nursery.start_soon(half, two, 1, runs[2:])
        assert results[0] + results[1] == (p.data / "model.pt").read_bytes()
        assert p.b.peers.connected() == [p.a.id]


async def test_a_lane_number_already_open_is_refused_as_a_duplicate(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        first = await p.lane(3)
        with pytest.raises(ProtocolError) as caught:
            await p.lane(3)
        assert caught.value.code == "duplicate-session"
        assert "lane 3 to b" in str(caught.value)
        # The lane that was there goes on.
        head = p.a.peers.offers("data")[0][1].head
        assert (await first.get_objects([head]))[1] == []
        assert set(p.b.peers.lanes) == {(p.a.id, 3)}


async def test_a_lane_without_a_session_is_refused_with_no_session(tmp_path: Path) -> None:
    async with pair(tmp_path, session=False) as p:
        with pytest.raises(ProtocolError) as caught:
            await p.lane(1)
        assert caught.value.code == "no-session"
        assert "lane 1 to b" in str(caught.value) and "no session" in str(caught.value)
        assert p.b.peers.lanes == {} and p.b.peers.sessions == {}


async def test_a_key_b_does_not_trust_gets_no_lane(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        stranger = Ed25519PrivateKey.generate()
        with pytest.raises(ProtocolError) as caught:
            await p.lane(1, key=stranger)
        assert caught.value.code == "untrusted"
        assert p.b.peers.lanes == {}
        assert str(peer_id_of(stranger)) in [peer.peer_id for peer in p.b.trust.list().pending]


async def test_a_lane_to_another_key_than_the_one_asked_for_is_rejected(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        other = str(peer_id_of(Ed25519PrivateKey.generate()))
        with pytest.raises(Rejected, match=f"lane 1 to b at {p.b.address()}: the key there is {p.b.id}"):
            await p.lane(1, peer_id=other)


async def test_untrusting_the_peer_ends_its_lanes_with_its_session(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        lanes = [await p.lane(1), await p.lane(2)]
        p.b.trust.untrust(p.a.id)
        await p.b.peers.disconnect(p.a.id, "no longer trusted")
        for lane in lanes:
            closed = await wait_closed(lane)
            assert closed.by_peer and "the session ended" in closed.reason
        with pytest.raises(SessionClosed):
            await lanes[0].get_objects([bytes(32)])
        assert p.b.peers.lanes == {} and p.b.peers.sessions == {}


async def test_lanes_end_when_the_initiators_peer_layer_stops(tmp_path: Path) -> None:
    async with pair(tmp_path) as p:
        lane = await p.lane(5)
        p.a_layer.cancel()
        await wait_closed(lane)
        with trio.fail_after(5):
            while p.b.peers.lanes or p.b.peers.sessions:
                await trio.sleep(0.01)


async def test_a_lane_and_its_session_share_the_peers_upload_cap(tmp_path: Path) -> None:
    async with pair(tmp_path, per_peer_cap=PER_PEER_CAP) as p:
        lane = await p.lane(1)
        # One bucket for the peer (the daemon's own cap, for all peers, is the other).
        assert p.b.peers.lanes[(p.a.id, 1)].session._caps._buckets[1] is p.main_of_b()._caps._buckets[1]
        runs = runs_of(p.data / "model.pt", pieces=4)
        main_of_a = p.a.peers.sessions[p.b.id]
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_runs, main_of_a, runs[:2])
            nursery.start_soon(fetch_runs, lane, runs[2:])
        elapsed = time.monotonic() - started
        # 3 MB at 1 MB/s in all takes about 3 s; with a cap each, the two halves would take 1.5 s.
        total = sum(run.total for run in runs)
        assert elapsed > 0.8 * total / PER_PEER_CAP, elapsed


async def test_a_lane_to_an_address_where_nothing_listens_fails_with_oserror_naming_it(tmp_path: Path) -> None:
    async with pair(tmp_path, session=False) as p:
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            closed = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
            with pytest.raises(OSError, match=f"lane 2 to b at {closed}: "):
                await open_lane(p.nursery, p.a.key, closed, p.b.id, 2, p.a.library.index, "b")


async def test_only_the_initiator_opens_a_lane() -> None:
    stream, _ = trio.testing.memory_stream_pair()
    with pytest.raises(LocalProtocolError, match="only the initiator"):
        await establish(stream, Role.RESPONDER, Ed25519PrivateKey.generate(), lambda peer: True, None, lane=1)
