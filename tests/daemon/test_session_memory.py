"""`establish()` and `PeerSession` end to end over `trio.testing.memory_stream_pair`:
no sockets, no daemon process. Both sides run the daemon's own code unless a
test needs one side to misbehave, in which case it drives a Connection by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.library.datasets import Library
from shoal.daemon.net.ratelimit import MIN_SLICE, Throttle, TokenBucket
from shoal.daemon.net.session import PeerSession, Rejected, SessionClosed, establish
from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.hashing import Kind, chunk_id, object_id
from shoal.protocol.format.identity import PeerId, public_key_bytes
from shoal.protocol.format.manifest import file_chunks, walk_tree
from shoal.protocol.format.objects import EntryType, Ref, decode_file, decode_tree, decode_version
from shoal.protocol.wire.channel import Role
from shoal.protocol.wire.connection import NEED_DATA, Connection, ConnectionClosed, MessageReceived, PeerAuthenticated
from shoal.protocol.wire.messages import Catalog, CatalogEntry, DataRuns, GetObjects, Run

pytestmark = pytest.mark.trio

TIMEOUT = 10
SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x33" * 32)


def peer_id(key: Ed25519PrivateKey) -> PeerId:
    return PeerId.from_public_key(public_key_bytes(key))


def trust_all(peer: PeerId) -> bool:
    return True


def distrust(peer: PeerId) -> bool:
    return False


async def establish_both(
    initiator_key: Ed25519PrivateKey,
    responder_key: Ed25519PrivateKey,
    *,
    initiator_trusts: Callable[[PeerId], bool] = trust_all,
    responder_trusts: Callable[[PeerId], bool] = trust_all,
    expected: str | None = None,
) -> tuple[dict[str, Any], tuple[trio.abc.Stream, trio.abc.Stream]]:
    """Run `establish` on both ends of a memory stream; each side's (conn, peer) or exception."""
    responder_stream, initiator_stream = trio.testing.memory_stream_pair()
    results: dict[str, Any] = {}

    async def side(name: str, stream: trio.abc.Stream, role: Role, key: Ed25519PrivateKey, trusts, *args) -> None:
        try:
            results[name] = await establish(stream, role, key, trusts, *args)
        except (ProtocolError, Rejected) as e:
            results[name] = e
            await stream.aclose()  # as the daemon does: a refused session's socket is closed

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            # The responder listens on 7001 for peers to dial; the initiator dials `expected`.
            nursery.start_soon(
                side, "responder", responder_stream, Role.RESPONDER, responder_key, responder_trusts, 7001, None
            )
            nursery.start_soon(
                side, "initiator", initiator_stream, Role.INITIATOR, initiator_key, initiator_trusts, None, expected
            )
    return results, (responder_stream, initiator_stream)


# --- establish --------------------------------------------------------------------------


async def test_both_sides_establish_and_learn_each_others_proven_id() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    seen: list[PeerId] = []

    def responder_trusts(peer: PeerId) -> bool:
        seen.append(peer)
        return True

    results, _ = await establish_both(a, b, responder_trusts=responder_trusts, expected=str(peer_id(b)))
    initiator_conn, responder_seen_by_initiator = results["initiator"]
    responder_conn, initiator_seen_by_responder = results["responder"]
    assert responder_seen_by_initiator == peer_id(b) and initiator_seen_by_responder == peer_id(a)
    assert seen == [peer_id(a)]  # asked once, about the key the initiator proved
    assert initiator_conn.state.value == responder_conn.state.value == "open"
    # Each side's HELLO reached the other: the responder's listening port, the initiator's none.
    assert initiator_conn.peer_hello.listen_port == 7001
    assert responder_conn.peer_hello.listen_port is None


async def test_an_untrusted_initiator_is_refused_and_told_why() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    results, _ = await establish_both(a, b, responder_trusts=distrust)
    assert isinstance(results["responder"], Rejected) and str(results["responder"]) == str(peer_id(a))
    refused = results["initiator"]
    assert isinstance(refused, ProtocolError) and refused.code == "untrusted"


async def test_a_refusing_responder_reveals_nothing_about_itself() -> None:
    """SPEC: a responder that refuses a peer has told it nothing about who it is."""
    responder_stream, initiator_stream = trio.testing.memory_stream_pair()
    conn = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    events: list[object] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def responder() -> None:
                with pytest.raises(Rejected):
                    await establish(responder_stream, Role.RESPONDER, Ed25519PrivateKey.generate(), distrust, None)
                await responder_stream.aclose()

            nursery.start_soon(responder)
            conn.start()
            while not events or not isinstance(events[-1], ConnectionClosed):
                event = conn.next_event()
                if data := conn.data_to_send():
                    await initiator_stream.send_all(data)
                if event is NEED_DATA:
                    conn.receive_data(await initiator_stream.receive_some(65536))
                else:
                    events.append(event)
    assert len(events) == 1 and not any(isinstance(e, PeerAuthenticated) for e in events)
    closed = events[0]
    assert isinstance(closed, ConnectionClosed) and (closed.error_code, closed.by_peer) == ("untrusted", True)
    assert conn.peer_id is None and conn.peer_public_key is None


async def test_an_initiator_refuses_a_responder_with_another_key_than_expected() -> None:
    a, b, meant = (Ed25519PrivateKey.generate() for _ in range(3))
    results, _ = await establish_both(a, b, expected=str(peer_id(meant)))
    assert isinstance(results["initiator"], Rejected) and str(results["initiator"]) == str(peer_id(b))
    refused = results["responder"]
    assert isinstance(refused, ProtocolError) and refused.code == "untrusted"


async def test_an_initiator_that_no_longer_trusts_the_responder_refuses_it() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    results, _ = await establish_both(a, b, initiator_trusts=lambda peer: peer != peer_id(b))
    assert isinstance(results["initiator"], Rejected)
    assert isinstance(results["responder"], ProtocolError) and results["responder"].code == "untrusted"


async def test_a_peer_holding_our_own_key_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    results, _ = await establish_both(key, key)
    codes = {name: getattr(result, "code", None) for name, result in results.items()}
    # The responder sees its own key in the initiator's AUTH; the initiator hears why.
    assert codes == {"responder": "self-connection", "initiator": "self-connection"}


async def test_a_peer_that_hangs_up_during_the_handshake_fails_establish() -> None:
    responder_stream, initiator_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def hang_up() -> None:
                conn = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
                conn.start()
                first = conn.data_to_send()
                await initiator_stream.send_all(first[: len(first) // 2])  # half the first Noise message
                await initiator_stream.aclose()

            nursery.start_soon(hang_up)
            with pytest.raises(ProtocolError) as failed:
                await establish(responder_stream, Role.RESPONDER, Ed25519PrivateKey.generate(), trust_all, None)
    assert failed.value.code == "truncated"


# --- open sessions ----------------------------------------------------------------------


@pytest.fixture
async def library(tmp_path: Path):
    """A library that shares one small folder: a multi-chunk file, a small one, a link."""
    home = tmp_path / "home"
    home.mkdir()
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "big.bin").write_bytes(os.urandom(600_000))
    (folder / "sub" / "small.txt").write_bytes(b"small\n")
    (folder / "link").symlink_to("big.bin")
    library = Library.open(home, SIGNER)
    result = await library.share(folder, name="ds", message="for the session tests")
    yield library, folder, result.version
    library.close()


async def open_sessions(
    nursery: trio.Nursery,
    index: Index,
    catalogs: list[tuple[CatalogEntry, ...]] | None = None,
    server_caps: Throttle | None = None,
) -> tuple[PeerSession, PeerSession, list[str]]:
    """(server, client, reasons): `server` answers from `index` under `server_caps`; each
    session's run() ends into `reasons`."""
    keys = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    results, (server_stream, client_stream) = await establish_both(*keys)
    reasons: list[str] = []
    server_conn, client_id = results["responder"]
    client_conn, server_id = results["initiator"]
    on_catalog = (lambda s: catalogs.append(s.catalog)) if catalogs is not None else (lambda s: None)
    server = PeerSession(server_conn, server_stream, client_id, "memory", index, on_catalog=lambda s: None,
                         caps=server_caps)
    client = PeerSession(client_conn, client_stream, server_id, "memory", None, on_catalog=on_catalog)  # type: ignore[arg-type]

    async def run(session: PeerSession) -> None:
        reasons.append(await session.run())

    nursery.start_soon(run, server)
    nursery.start_soon(run, client)
    return server, client, reasons


async def test_objects_and_chunks_are_asked_for_and_served(library) -> None:
    lib, folder, version = library
    unknown = b"\x07" * 32
    catalogs: list[tuple[CatalogEntry, ...]] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server, client, reasons = await open_sessions(nursery, lib.index, catalogs)
            v = version
            entry = CatalogEntry("ds", v.id, v.seq, v.size, v.files, v.time, (v.id,))
            await server.send(Catalog((entry,)))

            got, missing = await client.get_objects([version.id, unknown, version.root])
            assert missing == [unknown]
            objects = dict(got)
            record = decode_version(objects[version.id], version.id)
            assert record.root == version.root and record.message == "for the session tests"
            root = decode_tree(objects[version.root], version.root)
            names = {e.name: e for e in root.entries if not isinstance(e, Ref)}
            big = names["big.bin"]
            assert big.type == EntryType.FILE and names["link"].type == EntryType.SYMLINK

            (file_data,), _ = await client.get_objects([big.id])
            file = decode_file(file_data[1], big.id)
            ids = [ref.id for ref in file_chunks(index_loader(lib.index), file)]
            assert len(ids) > 1
            received: dict[bytes, bytes] = {}
            missing = await client.get_chunks(ids + [unknown], lambda cid, data: received.__setitem__(cid, bytes(data)))
            assert missing == [unknown]
            assert all(chunk_id(data) == cid for cid, data in received.items())
            assert b"".join(received[cid] for cid in ids) == (folder / "big.bin").read_bytes()

            assert client.offer("ds") == entry and catalogs == [(entry,)]
            assert not client.conn.sent_requests and not server.conn.received_requests
            await client.close("done")
    assert "done" in reasons  # the server heard the client's BYE


async def test_every_object_of_a_version_walks_over_a_session(library) -> None:
    """A client that only has the session (no index) reads a whole manifest through it."""
    lib, folder, version = library
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, client, _ = await open_sessions(nursery, lib.index)
            fetched: dict[bytes, bytes] = {}

            async def fetch(ids: list[bytes]) -> None:
                got, missing = await client.get_objects(ids)
                assert missing == []
                fetched.update(got)

            await fetch([version.id, version.root])
            pending = [version.root]
            while pending:
                # Directories this small are one page: their entries are inline.
                entries = [e for e in decode_tree(fetched[pending.pop()]).entries if not isinstance(e, Ref)]
                await fetch([e.id for e in entries if e.type != EntryType.SYMLINK])
                pending += [e.id for e in entries if e.type == EntryType.DIR]
            nursery.cancel_scope.cancel()

    def load(kind: Kind, oid: bytes) -> bytes:
        assert object_id(kind, fetched[oid]) == oid
        return fetched[oid]

    walked = {"/".join(path) for path, _ in walk_tree(load, version.root)}
    assert walked == {"big.bin", "link", "sub", "sub/small.txt"}


async def _mute_peer(stream: trio.abc.Stream, on_request: Callable[[Connection], bytes | None]) -> None:
    """A responder that opens the session, waits for the first request, writes whatever
    `on_request` says (raw plaintext for the channel, or nothing), and hangs up."""
    conn, _ = await establish(stream, Role.RESPONDER, Ed25519PrivateKey.generate(), trust_all, None)
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, MessageReceived) and isinstance(event.message, GetObjects):
            break
    plaintext = on_request(conn)
    if plaintext is not None:
        conn._channel.write(plaintext)
        await stream.send_all(conn.data_to_send())
    await stream.aclose()


@pytest.mark.parametrize(
    "how, reason",
    [
        ("between frames", "the peer closed the connection"),
        # A frame header announcing 4,000 bytes, and 10 of them.
        ("inside a frame", "the connection ended inside a frame"),
    ],
)
async def test_a_peer_closing_mid_stream_ends_the_session_and_fails_its_requests(how: str, reason: str) -> None:
    responder_stream, initiator_stream = trio.testing.memory_stream_pair()
    partial = (4000).to_bytes(4, "big") + b"ten bytes."
    reasons: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_mute_peer, responder_stream, lambda conn: partial if how == "inside a frame" else None)
            key = Ed25519PrivateKey.generate()
            conn, peer = await establish(initiator_stream, Role.INITIATOR, key, trust_all, None)
            client = PeerSession(conn, initiator_stream, peer, "memory", None, on_catalog=lambda s: None)  # type: ignore[arg-type]

            async def run() -> None:
                reasons.append(await client.run())

            nursery.start_soon(run)
            with pytest.raises(SessionClosed):
                await client.get_objects([b"\x01" * 32])
    assert reasons == [reason]
    assert conn.state.value == ("closed" if how == "between frames" else "error")
    with pytest.raises(SessionClosed):
        await client.get_objects([b"\x01" * 32])  # a closed session takes no more requests


def _big_chunks(lib: Library, version) -> list[Ref]:
    """The chunks of the library fixture's big.bin (at least 3), from its index."""
    root = decode_tree(lib.index.get_objects([version.root])[version.root][1], version.root)
    entry = next(e for e in root.entries if not isinstance(e, Ref) and e.name == "big.bin")
    file = decode_file(lib.index.get_objects([entry.id])[entry.id][1], entry.id)
    refs = list(file_chunks(index_loader(lib.index), file))
    assert len(refs) >= 3
    return refs


async def test_runs_are_served_whole_verified_or_listed_missing(library) -> None:
    """GET_RUNS: a run comes back as its chunks' bytes, even when this side holds them
    apart; a run it cannot send whole (sizes that do not match its chunks, a range past
    the file's end) is listed missing, and nothing of it is sent."""
    lib, folder, version = library
    big = (folder / "big.bin").read_bytes()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, client, _ = await open_sessions(nursery, lib.index)
            refs = _big_chunks(lib, version)
            ids, sizes = tuple(r.id for r in refs), tuple(r.size for r in refs)
            received: dict[bytes, bytes] = {}

            def deliver(first: bytes, data: bytes) -> None:
                received[first] = bytes(data)

            whole = Run(ids, sizes)
            apart = Run((ids[2], ids[1]), (sizes[2], sizes[1]))
            past_the_end = Run((ids[-1], b"\x09" * 32), (sizes[-1], 1000))
            missing = await client.get_runs([whole, apart, past_the_end], deliver)
            assert missing == [ids[-1]]
            assert received == {ids[0]: big, ids[2]: big[sizes[0] + sizes[1] : sum(sizes[:3])] + big[sizes[0] : sum(sizes[:2])]}

            received.clear()
            wrong_sizes = Run(ids[:2], (sizes[0] + 1, sizes[1] - 1))
            assert await client.get_runs([wrong_sizes], deliver) == [ids[0]]
            assert received == {}
            assert not client.conn.sent_requests
            await client.close("done")


async def test_runs_held_back_to_back_come_many_to_a_message(library, monkeypatch) -> None:
    """Each chunk of big.bin asked for as a run of its own, with one this side lacks in the
    middle: the runs before it and those after it come as one DATA_RUNS each, cut by their sizes."""
    lib, folder, version = library
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, client, _ = await open_sessions(nursery, lib.index)
            refs = _big_chunks(lib, version)
            unknown = b"\x09" * 32
            runs = [Run((r.id,), (r.size,)) for r in refs]
            runs.insert(1, Run((unknown,), (1000,)))
            messages: list[tuple[bytes, ...]] = []
            dispatch = client._dispatch

            def counting(message, nursery) -> None:
                if isinstance(message, DataRuns):
                    messages.append(message.ids)
                dispatch(message, nursery)

            monkeypatch.setattr(client, "_dispatch", counting)
            received: dict[bytes, bytes] = {}
            kinds: dict[bytes, type] = {}

            def deliver(first: bytes, data: bytes | memoryview) -> None:
                received[first], kinds[first] = bytes(data), type(data)

            missing = await client.get_runs(runs, deliver)
            assert missing == [unknown]
            assert messages == [(refs[0].id,), tuple(r.id for r in refs[1:])]
            # Every run stays where its frame was received: none is copied.
            assert all(kinds[r.id] is memoryview for r in refs)
            assert b"".join(received[r.id] for r in refs) == (folder / "big.bin").read_bytes()
            await client.close("done")


class CountedCaps(Throttle):
    """A throttle at `rate` bytes/s that keeps every payment, and waits for none."""

    def __init__(self, rate: int) -> None:
        super().__init__(TokenBucket(lambda: rate))
        self.payments: list[int] = []

    async def pay(self, n: int) -> None:
        self.payments.append(n)


@pytest.mark.parametrize(("rate", "most"), [(1_000_000, 100_000), (100_000, MIN_SLICE), (10**9, None)])
async def test_runs_are_paid_for_in_slices_of_a_tenth_of_a_second_of_the_cap(library, rate: int, most) -> None:
    """Under a cap, the served runs are paid for (and sent) about 0.1 s of it at a time, so
    capped data flows steadily; under a cap they cannot reach, all at once (one thread call)."""
    lib, folder, version = library
    caps = CountedCaps(rate)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            _, client, _ = await open_sessions(nursery, lib.index, server_caps=caps)
            refs = _big_chunks(lib, version)
            received: list[bytes] = []
            run = Run(tuple(r.id for r in refs), tuple(r.size for r in refs))
            assert await client.get_runs([run], lambda first, data: received.append(bytes(data))) == []
            assert received == [(folder / "big.bin").read_bytes()]
            await client.close("done")
    assert sum(caps.payments) > 600_000
    if most is None:
        assert max(caps.payments) > 600_000  # the run's whole DATA_RUNS
    else:
        assert max(caps.payments) == most
