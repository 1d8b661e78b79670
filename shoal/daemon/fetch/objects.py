"""Manifest objects a fetch needs: read from the index, or else downloaded from peers and checked.

Objects are read in worker threads: a fetch's writer may hold the index for a
while, and the event loop must not wait for it.
"""

import logging
from collections.abc import Sequence

import trio

from shoal.daemon.fetch.errors import FetchError, PeerMisbehaved
from shoal.daemon.fetch.source import Source
from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.errors import IntegrityError, ProtocolError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import FileObject, TreeEntry, TreeNode, VersionRecord, decode

#: Object ids per GET_OBJECTS request.
OBJECT_BATCH = 1024

_log = logging.getLogger("shoal.fetch")


class Objects:
    """The index's manifest objects, completed from peers on demand."""

    def __init__(self, index: Index) -> None:
        self.index = index

    async def ensure(self, kind: Kind, ids: Sequence[bytes], sources: Sequence[Source]) -> dict[bytes, object]:
        """Make sure the index holds these objects, downloading and checking what it lacks;
        return those downloaded, decoded, so that the caller need not decode them again."""
        missing = await trio.to_thread.run_sync(self.index.missing_objects, list(ids))
        downloaded: dict[bytes, object] = {}
        for start in range(0, len(missing), OBJECT_BATCH):
            downloaded |= await self._download(kind, missing[start : start + OBJECT_BATCH], sources)
        return downloaded

    async def ensure_pages(self, kind: Kind, object_id: bytes, sources: Sequence[Source]) -> None:
        """Fetch the pages below a FILE or TREE object, level by level."""
        obj = await trio.to_thread.run_sync(self.decoded, kind, object_id)
        assert isinstance(obj, (FileObject, TreeNode))
        page_kind = Kind.CHUNKS if kind == Kind.FILE else Kind.TREE
        level, refs = obj.level, list(obj.entries)
        while level > 0:
            ids = [r.id for r in refs]  # type: ignore[union-attr]
            await self.ensure(page_kind, ids, sources)
            level -= 1
            if level == 0:
                break
            refs = await trio.to_thread.run_sync(self._page_entries, page_kind, ids, level)

    async def tree(self, tree_id: bytes, sources: Sequence[Source]) -> list[TreeEntry]:
        """The entries of a directory, its TREE object and pages fetched first."""
        await self.ensure(Kind.TREE, [tree_id], sources)
        await self.ensure_pages(Kind.TREE, tree_id, sources)
        return await trio.to_thread.run_sync(self.entries, tree_id)

    def entries(self, tree_id: bytes) -> list[TreeEntry]:
        """The entries of a stored directory."""
        return list(tree_entries(index_loader(self.index), tree_id))

    def decoded(self, kind: Kind, object_id: bytes) -> object:
        """A stored object, decoded."""
        return decode(kind, self.index.get_object(object_id)[1], object_id)  # type: ignore[index]

    def version(self, version_id: bytes) -> VersionRecord:
        """A stored VERSION object, decoded."""
        record = self.decoded(Kind.VERSION, version_id)
        assert isinstance(record, VersionRecord)
        return record

    def files(self, entries: list[TreeEntry], decoded: dict[bytes, object] | None = None) -> list[FileObject]:
        """The FILE objects of `entries`, taken from `decoded` (those just downloaded) or else
        read, a query per OBJECT_BATCH files rather than one per file, and decoded."""
        decoded = decoded or {}
        out = []
        for start in range(0, len(entries), OBJECT_BATCH):
            group = entries[start : start + OBJECT_BATCH]
            found = self.index.get_objects([e.ref for e in group if e.ref not in decoded])  # type: ignore[misc]
            for e in group:
                if e.ref in decoded:
                    out.append(decoded[e.ref])  # type: ignore[index]
                    continue
                kind, data = found.get(e.ref, (None, b""))  # type: ignore[arg-type]
                if kind != Kind.FILE:
                    raise ProtocolError(f"file object {e.ref.hex()[:16]} is not in the index")  # type: ignore[union-attr]
                out.append(decode(Kind.FILE, data, e.ref))  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    async def _download(self, kind: Kind, ids: list[bytes], sources: Sequence[Source]) -> dict[bytes, object]:
        wanted = set(ids)
        downloaded: dict[bytes, object] = {}
        refused: list[str] = []
        for source in sources:
            if not wanted:
                break
            try:
                got, _ = await source.get_objects(sorted(wanted))
                stored = await trio.to_thread.run_sync(self._check_objects, kind, got, wanted)
            except (PeerMisbehaved, ProtocolError) as e:
                _log.warning("peer %s: %s", source.peer_id, e)
                refused.append(f"peer {source.peer_id[:7]} sent a {kind.name.lower()} object that breaks the rules ({e})")
                continue
            except trio.BrokenResourceError:
                continue
            wanted -= stored.keys()
            downloaded |= stored
        if wanted and refused:
            # The peer's fault, and why: not a mere "missing", which would send the user looking elsewhere.
            raise FetchError("; ".join(refused) + "; refused, and no other connected peer has it")
        if wanted:
            raise FetchError(f"no connected peer has {len(wanted)} of the {kind.name.lower()} objects needed")
        return downloaded

    def _check_objects(self, kind: Kind, got: list[tuple[bytes, bytes]], wanted: set[bytes]) -> dict[bytes, object]:
        rows = []
        decoded = {}
        for oid, data in got:
            if oid not in wanted:
                raise PeerMisbehaved(f"sent object {oid.hex()[:16]}, which was not asked for")
            decoded[oid] = decode(kind, data, oid)
            rows.append((oid, kind, data))
        self.index.put_objects(rows)
        return decoded

    def _page_entries(self, kind: Kind, ids: list[bytes], level: int) -> list:
        """The entries of the stored pages `ids`, each of which must be at `level`."""
        entries: list = []
        for page_id in ids:
            page = self.decoded(kind, page_id)
            if page.level != level:  # type: ignore[attr-defined]
                raise IntegrityError(f"page {page_id.hex()[:16]} is at the wrong level")
            entries.extend(page.entries)  # type: ignore[attr-defined]
        return entries
