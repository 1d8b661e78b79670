"""The chunk-list pages of a directory's files come a level of all of them at a time."""

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from shoal.daemon.fetch.objects import Objects
from shoal.daemon.store.index import Index
from shoal.protocol.errors import IntegrityError
from shoal.protocol.format.chunking import DEFAULT_PARAMS
from shoal.protocol.format.objects import ChunkListNode, FileObject, Ref, encode_with_id


class CountingPeer:
    """A source holding some objects, counting the requests it answers."""

    peer_id = "PEER"
    peer_cap = 0
    bytes_in = 0

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.asked: list[int] = []

    def put(self, obj: object) -> bytes:
        oid, data = encode_with_id(obj)
        self.objects[oid] = data
        return oid

    async def get_objects(self, ids: Sequence[bytes]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        self.asked.append(len(ids))
        return [(i, self.objects[i]) for i in ids if i in self.objects], [i for i in ids if i not in self.objects]


def leaf(peer: CountingPeer) -> Ref:
    size = 1000
    return Ref(size, peer.put(ChunkListNode(0, (Ref(size, os.urandom(32)),))))


def two_level_file(peer: CountingPeer) -> FileObject:
    """A FILE of level 2: one page of level 1 over two leaf pages."""
    upper = ChunkListNode(1, (leaf(peer), leaf(peer)))
    return FileObject(2000, DEFAULT_PARAMS, 2, (Ref(2000, peer.put(upper)),))


def one_level_file(peer: CountingPeer) -> FileObject:
    return FileObject(1000, DEFAULT_PARAMS, 1, (leaf(peer),))


@pytest.mark.trio
async def test_twenty_files_cost_one_request_per_level_not_per_file(tmp_path: Path) -> None:
    peer = CountingPeer()
    files = [two_level_file(peer) for _ in range(10)] + [one_level_file(peer) for _ in range(10)]
    files.append(FileObject(5, DEFAULT_PARAMS, 0, (Ref(5, os.urandom(32)),)))
    objects = Objects(Index(tmp_path / "index.db"), str)
    await objects.ensure_file_pages(files, [peer])
    # Level 1 of all files (10 upper pages and 10 leaves), then the 20 leaves below the upper pages.
    assert peer.asked == [20, 20]
    assert objects.index.missing_objects(list(peer.objects)) == []
    await objects.ensure_file_pages(files, [peer])
    assert peer.asked == [20, 20], "pages already held are not asked for again"


@pytest.mark.trio
async def test_a_page_at_the_wrong_level_is_refused(tmp_path: Path) -> None:
    peer = CountingPeer()
    # Declares level 2, but the page below it is a leaf.
    bad = FileObject(1000, DEFAULT_PARAMS, 2, (leaf(peer),))
    objects = Objects(Index(tmp_path / "index.db"), str)
    with pytest.raises(IntegrityError, match="wrong level"):
        await objects.ensure_file_pages([one_level_file(peer), bad], [peer])
