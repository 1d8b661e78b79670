"""Two or three daemons' peer layers in one process, over real loopback sockets."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.fetch.errors import NoPeer
from shoal.daemon.fetch.state import FetchSpec, Transfer
from shoal.daemon.keys import load_or_create_private_key
from shoal.daemon.library.datasets import Library
from shoal.daemon.net import peers as peers_mod
from shoal.daemon.net import session as session_mod
from shoal.daemon.net.peers import PeerManager
from shoal.daemon.net.trust import TrustStore
from shoal.daemon.store.index import FileStat
from shoal.protocol.format.hashing import Kind, object_id
from shoal.protocol.format.identity import peer_id_of

pytestmark = pytest.mark.trio


class Node:
    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True)
        self.home = home
        self.key = load_or_create_private_key(home)
        self.id = str(peer_id_of(self.key))
        self.library = Library.open(home, self.key)
        self.trust = TrustStore.open(home)
        self.peers = PeerManager(self.key, self.trust, self.library, "127.0.0.1:0")
        self.port = 0

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fetcher(self) -> Fetcher:
        return Fetcher(self.library.index, self.peers)


def make_data(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "model.pt").write_bytes(os.urandom(3_000_000))
    for i in range(20):
        (root / "sub" / f"s{i}.bin").write_bytes(os.urandom(500 * i))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".shoal-partial" not in p.parts
    }


async def start(nursery: trio.Nursery, *nodes: Node) -> None:
    for node in nodes:
        node.port = await nursery.start(node.peers.run)


def befriend(a: Node, b: Node) -> None:
    """a and b trust each other; b knows a's address."""
    a.trust.trust(b.id, "b", [])
    b.trust.trust(a.id, "a", [a.address()])
    b.peers.wake_dialer()


async def fetch(node: Node, dest: Path, version: str | None = None, timeout: float = 10) -> object:
    transfer = Transfer(FetchSpec("data", version, dest, timeout=timeout))
    return await node.fetcher().fetch(transfer.spec, transfer)


@asynccontextmanager
async def shared_pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """a shares make_data's folder; a and b run and trust each other."""
    a, b = Node(tmp_path / "a"), Node(tmp_path / "b")
    make_data(tmp_path / "data")
    await a.library.share(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        await start(nursery, a, b)
        befriend(a, b)
        yield a, b
        nursery.cancel_scope.cancel()


async def test_fetch_full_then_delta(tmp_path: Path) -> None:
    async with shared_pair(tmp_path) as (a, b):
        result = await fetch(b, tmp_path / "dest")
        assert tree_bytes(tmp_path / "dest") == tree_bytes(tmp_path / "data")
        assert result.files_written == 21

        with open(tmp_path / "data" / "model.pt", "r+b") as f:
            f.seek(1_000_000)
            f.write(os.urandom(100_000))
        second = await a.library.share(tmp_path / "data")
        await a.peers.publish_catalog()
        with trio.fail_after(5):
            while not any(e.seq == 2 for _, e in b.peers.offers("data")):
                await b.peers.wait_for_change()
        result = await fetch(b, tmp_path / "dest")
        assert result.version.id == second.version.id
        assert tree_bytes(tmp_path / "dest") == tree_bytes(tmp_path / "data")
        assert result.files_written == 1
        # Only the changed region and its boundary chunks cross the wire.
        assert result.bytes_received < 100_000 + 4 * 256 * 1024
    assert not (tmp_path / "dest" / ".shoal-partial").exists()


async def test_a_peer_counts_as_served_for_a_moment_after_its_last_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keeper gives way while serving(): a fetch asks in bursts, so the gaps count too.
    monkeypatch.setattr(peers_mod, "SERVING_GRACE", 0.5)
    async with shared_pair(tmp_path) as (a, b):
        assert not a.peers.serving()
        await fetch(b, tmp_path / "dest")
        assert a.peers.serving() and not b.peers.serving()
        await trio.sleep(0.6)
        assert not a.peers.serving()


async def test_untrusted_peer_gets_nothing(tmp_path: Path) -> None:
    a, b = Node(tmp_path / "a"), Node(tmp_path / "b")
    make_data(tmp_path / "data")
    await a.library.share(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        await start(nursery, a, b)
        # b trusts a, but a does not trust b.
        b.trust.trust(a.id, "a", [a.address()])
        b.peers.wake_dialer()
        with pytest.raises(NoPeer):
            await fetch(b, tmp_path / "dest", timeout=2)
        assert b.peers.offers("data") == []
        assert [p.peer_id for p in a.trust.list().pending] == [b.id]
        nursery.cancel_scope.cancel()
    assert not (tmp_path / "dest").exists() or tree_bytes(tmp_path / "dest") == {}


async def test_corrupt_peer_is_dropped_and_fetch_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    honest, liar, b = Node(tmp_path / "h"), Node(tmp_path / "l"), Node(tmp_path / "b")
    make_data(tmp_path / "data")
    await honest.library.share(tmp_path / "data")
    real_runs = session_mod.chunkio.read_runs

    def lying_runs(index, runs, places, buf):
        views = real_runs(index, runs, places, buf)
        if index is liar.library.index:
            for view in views:
                if view is not None:
                    view[:] = bytes(len(view))  # right length, wrong bytes
        return views

    monkeypatch.setattr(session_mod.chunkio, "read_runs", lying_runs)
    async with trio.open_nursery() as nursery:
        await start(nursery, honest, liar, b)
        # The liar becomes a second seeder of the same version by fetching it.
        befriend(honest, liar)
        await fetch(liar, tmp_path / "liar-copy")
        # b meets the liar first, so the liar is certain to be asked for chunks.
        befriend(liar, b)
        with trio.fail_after(5):
            while not b.peers.offers("data"):
                await b.peers.wait_for_change()
        transfer = Transfer(FetchSpec("data", None, tmp_path / "dest", timeout=10))
        outcome = []

        async def run_fetch() -> None:
            outcome.append(await b.fetcher().fetch(transfer.spec, transfer))

        nursery.start_soon(run_fetch)
        with trio.fail_after(10):
            while not (liar.id in transfer.peers and transfer.peers[liar.id].dropped):
                await trio.sleep(0.01)
        # The fetch goes on with the honest peer once it appears.
        befriend(honest, b)
        with trio.fail_after(20):
            while not outcome:
                await trio.sleep(0.05)
        result = outcome[0]
        assert tree_bytes(tmp_path / "dest") == tree_bytes(tmp_path / "data")
        nursery.cancel_scope.cancel()
    # b trusts the liar under the name "a": the warning says that name, not a 56-character id.
    assert result.warnings == ("dropped peer a: sent chunks whose bytes do not match their ids",)
    assert result.peers.get(honest.id, 0) > 0


async def test_a_file_whose_index_record_a_crash_cut_short_is_checked_not_fetched_again(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    async with shared_pair(tmp_path) as (a, b):
        await fetch(b, dest)
        # As a receiver killed between renaming model.pt into place and finishing its
        # record leaves things: the row has the file's stat but no content id yet, and
        # the fetch is still in progress (not recorded as done, its partial folder there).
        index = b.library.index
        st = (dest / "model.pt").stat()
        index.begin_file(str(dest), "", "model.pt", FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        index.unlist_dataset("data", str(dest))
        index.set_dest_state(str(dest), "another", b"\0" * 32, b"\0" * 32, None)
        (dest / ".shoal-partial").mkdir()
        (dest / ".shoal-partial" / "dataset").write_text("data")

        again = await fetch(b, dest)
        assert again.files_written == 0 and again.bytes_received == 0
        assert tree_bytes(dest) == tree_bytes(tmp_path / "data")


async def test_objects_are_served_in_groups_bounded_by_their_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[int] = []
    read_objects = session_mod.PeerSession._read_objects

    def counted(self, ids):
        found = read_objects(self, ids)
        groups.append(sum(len(data) for _, data in found if data is not None))
        return found

    monkeypatch.setattr(session_mod.PeerSession, "_read_objects", counted)
    big = [os.urandom(700_000) for _ in range(3)]
    big_ids = [object_id(Kind.TREE, data) for data in big]
    absent = object_id(Kind.TREE, b"never stored")
    async with shared_pair(tmp_path) as (a, b):
        a.library.index.put_objects((oid, Kind.TREE, data) for oid, data in zip(big_ids, big))
        with trio.fail_after(5):
            while not b.peers.offers("data"):
                await b.peers.wait_for_change()
        session, entry = b.peers.offers("data")[0]
        wanted = [entry.head, big_ids[0], absent, big_ids[1], big_ids[2]]
        got, missing = await session.get_objects(wanted)
    assert dict(got) == {entry.head: a.library.index.get_object(entry.head)[1], **dict(zip(big_ids, big))}
    assert missing == [absent]
    # Two 700 kB objects never share a 1 MiB group; the small one rides with the first.
    assert len(groups) == 3 and max(groups) <= session_mod.OBJECT_GROUP_BYTES


async def test_size_groups_keep_the_order_and_the_bound() -> None:
    ids = [bytes([i]) * 32 for i in range(6)]
    sizes = dict(zip(ids, [10, 20, 70, 200, 5, 5]))
    groups = list(session_mod._groups_by_size(ids, sizes, 100))
    assert groups == [ids[0:3], ids[3:4], ids[4:6]]
