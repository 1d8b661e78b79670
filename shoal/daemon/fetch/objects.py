"""Manifest objects a fetch needs: read from the index, or else downloaded from peers and checked.

Objects are read in worker threads: a fetch's writer may hold the index for a
while, and the event loop must not wait for it.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import cast

import trio

from shoal.daemon.fetch.errors import FetchError, PeerMisbehaved
from shoal.daemon.fetch.serving import Serving
from shoal.daemon.fetch.source import Source
from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.errors import IntegrityError, ProtocolError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import (
    ChunkListNode,
    FileEntry,
    FileObject,
    ManifestObject,
    Ref,
    TreeEntry,
    TreeNode,
    VersionRecord,
    decode,
    decode_stored,
    decode_version,
    stored_file,
)

#: Object ids per GET_OBJECTS request.
OBJECT_BATCH = 1024
#: FILE objects the walk has decoded and the copier not yet taken, kept at most (the
#: oldest go first): the copier plans a directory's files soon after the walk checks
#: them, and reading and decoding each again cost it a query and a decode per file.
KEPT_FILES = 8192

_log = logging.getLogger("shoal.fetch")


class Objects:
    """The index's manifest objects, completed from peers on demand."""

    def __init__(self, index: Index, name_of: Callable[[str], str]) -> None:
        self.index = index
        #: What messages call a peer: its trust name.
        self._name_of = name_of
        #: Decoded by the walk, for the copier; worker threads of both use it.
        self._kept: OrderedDict[bytes, FileObject] = OrderedDict()
        self._kept_lock = threading.Lock()

    async def ensure(self, kind: Kind, ids: Sequence[bytes], sources: Sequence[Source]) -> dict[bytes, object]:
        """Make sure the index holds these objects, downloading and checking what it lacks;
        return those downloaded, decoded, so that the caller need not decode them again."""
        missing = await trio.to_thread.run_sync(self.index.missing_objects, list(ids))
        downloaded: dict[bytes, object] = {}
        for start in range(0, len(missing), OBJECT_BATCH):
            downloaded |= await self._download(kind, missing[start : start + OBJECT_BATCH], sources)
        return downloaded

    async def ensure_file_pages(self, files: Sequence[FileObject], sources: Sequence[Source]) -> None:
        """The CHUNKS pages below the FILE objects of a directory, a level of all of them at
        once: a round trip per level rather than per file and level, each slow while the
        peer is busy serving data, and the first data waits for the first directory."""
        await self._ensure_pages(Kind.CHUNKS, files, sources)

    async def tree(self, tree_id: bytes, sources: Sequence[Source]) -> list[TreeEntry]:
        """The entries of a directory, its TREE object and pages fetched first.

        A directory of one page is taken as decoded (by `ensure` when just downloaded, its
        entries checked in order there, or as stored, checked when it was): reading it back
        and decoding it twice more cost as much as that check, and two worker-thread calls,
        while the first data waits for it."""
        node = (await self.ensure(Kind.TREE, [tree_id], sources)).get(tree_id)
        if node is None:
            node = await trio.to_thread.run_sync(self.decoded, Kind.TREE, tree_id)
        assert isinstance(node, TreeNode)
        if node.level == 0:
            return list(cast(tuple[TreeEntry, ...], node.entries))
        await self._ensure_pages(Kind.TREE, [node], sources)
        return await trio.to_thread.run_sync(self.entries, tree_id)

    async def _ensure_pages(
        self, page_kind: Kind, tops: Sequence[FileObject | TreeNode], sources: Sequence[Source]
    ) -> None:
        """The pages below `tops`, level by level, each level of all of them in one `ensure`."""
        frontier: dict[int, list[bytes]] = {}
        for top in tops:
            if top.level > 0:
                frontier.setdefault(top.level, []).extend(r.id for r in _refs(top.entries))
        while frontier:
            await self.ensure(page_kind, [oid for ids in frontier.values() for oid in ids], sources)
            below: dict[int, list[bytes]] = {}
            for level, ids in frontier.items():
                if level > 1:
                    refs = await trio.to_thread.run_sync(self._page_entries, page_kind, ids, level - 1)
                    below.setdefault(level - 1, []).extend(r.id for r in refs)
            frontier = below

    def entries(self, tree_id: bytes) -> list[TreeEntry]:
        """The entries of a stored directory."""
        return list(tree_entries(index_loader(self.index), tree_id))

    def decoded(self, kind: Kind, object_id: bytes) -> ManifestObject:
        """A stored object, decoded."""
        return decode_stored(kind, stored_bytes(self.index, object_id), object_id)

    def version(self, version_id: bytes) -> VersionRecord:
        """A stored VERSION object, decoded."""
        return decode_version(stored_bytes(self.index, version_id), version_id)

    def file(self, file_id: bytes) -> FileObject:
        """A stored FILE object, decoded (or as the walk decoded it)."""
        with self._kept_lock:
            kept = self._kept.pop(file_id, None)
        return kept if kept is not None else stored_file(stored_bytes(self.index, file_id), file_id)

    def files(
        self, entries: list[FileEntry], decoded: dict[bytes, object] | None = None, *, keep: bool = False
    ) -> list[FileObject]:
        """The FILE objects of `entries`, taken from `decoded` (those just downloaded), or those the
        walk kept, or else read, a query per OBJECT_BATCH files rather than one per file, and
        decoded. With `keep` (the walk), they are kept for the copier's call."""
        decoded = dict(decoded or {})
        with self._kept_lock:
            for entry in entries:
                kept = self._kept.pop(entry.id, None)
                if kept is not None:
                    decoded[entry.id] = kept
        out: list[FileObject] = []
        for start in range(0, len(entries), OBJECT_BATCH):
            ids = [e.id for e in entries[start : start + OBJECT_BATCH]]
            found = self.index.get_objects([oid for oid in ids if oid not in decoded])
            out.extend(_file(oid, decoded, found) for oid in ids)
        if keep:
            with self._kept_lock:
                for entry, file in zip(entries, out):
                    self._kept[entry.id] = file
                while len(self._kept) > KEPT_FILES:
                    self._kept.popitem(last=False)
        return out

    async def _download(self, kind: Kind, ids: list[bytes], sources: Sequence[Source]) -> dict[bytes, object]:
        wanted = set(ids)
        downloaded: dict[bytes, object] = {}
        refused: list[str] = []
        # Sessions asked, and whether one ended while asked: with Serving sources the walk then waits for another.
        asked: list[Source] = []
        lost = False
        while True:
            for source in sources:
                if not wanted:
                    break
                if source in asked:
                    continue
                asked.append(source)
                try:
                    got, _ = await source.get_objects(sorted(wanted))
                    stored = await trio.to_thread.run_sync(self._check_objects, kind, got, wanted)
                except (PeerMisbehaved, ProtocolError) as e:
                    _log.warning("peer %s: %s", source.peer_id, e)
                    what = f"a {kind.name.lower()} object that breaks the rules ({e})"
                    refused.append(f"peer {self._name_of(source.peer_id)} sent {what}")
                    continue
                except trio.BrokenResourceError:
                    lost = True
                    continue
                wanted -= stored.keys()
                downloaded |= stored
            # Peers that answered without it will not have it later; a peer that left might.
            if not wanted or refused or not isinstance(sources, Serving) or not (lost or not asked):
                break
            await sources.wait_for_peer(asked)
        if wanted and refused:
            # The peer's fault, and why: not a mere "missing", which would send the user looking elsewhere.
            raise FetchError("; ".join(refused) + "; refused, and no other connected peer has it")
        if wanted:
            raise FetchError(f"no connected peer has {len(wanted)} of the {kind.name.lower()} objects needed")
        return downloaded

    def _check_objects(self, kind: Kind, got: list[tuple[bytes, bytes]], wanted: set[bytes]) -> dict[bytes, object]:
        rows = []
        decoded: dict[bytes, object] = {}
        for oid, data in got:
            if oid not in wanted:
                raise PeerMisbehaved(f"sent object {oid.hex()[:16]}, which was not asked for")
            decoded[oid] = decode(kind, data, oid)
            rows.append((oid, kind, data))
        self.index.put_objects(rows)
        return decoded

    def _page_entries(self, kind: Kind, ids: list[bytes], level: int) -> list[Ref]:
        """The entries of the stored pages `ids`, each of which must be at `level` (above 0)."""
        entries: list[Ref] = []
        for page_id in ids:
            page = self.decoded(kind, page_id)
            assert isinstance(page, (ChunkListNode, TreeNode))
            if page.level != level:
                raise IntegrityError(f"page {page_id.hex()[:16]} is at the wrong level")
            entries.extend(_refs(page.entries))
        return entries


def stored_bytes(index: Index, oid: bytes) -> bytes:
    """The bytes of an object the index holds (the caller made sure it does)."""
    stored = index.get_object(oid)
    assert stored is not None, oid.hex()
    return stored[1]


def _file(oid: bytes, decoded: dict[bytes, object], found: dict[bytes, tuple[Kind, bytes]]) -> FileObject:
    """A FILE object just downloaded and decoded, or else read from the index."""
    file = decoded.get(oid)
    if file is None:
        kind, data = found.get(oid, (None, b""))
        if kind != Kind.FILE:
            raise ProtocolError(f"file object {oid.hex()[:16]} is not in the index")
        return stored_file(data, oid)
    assert isinstance(file, FileObject)
    return file


def _refs(entries: tuple[Ref, ...] | tuple[TreeEntry | Ref, ...]) -> list[Ref]:
    """The entries of a page above level 0: references to the pages below it."""
    return [e for e in entries if isinstance(e, Ref)]
