"""The manifest walk: fetching and checking a version's TREE, FILE and CHUNKS objects.

Depth first, a directory page at a time, so memory follows the tree's depth
rather than its size; a few sibling directories at once (WALK_DIRS), since each
costs two round trips to a peer busy serving data. Every directory is checked
as it arrives; the version as a whole once the walk ends (SPEC.md, "What a
receiver checks before writing").
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from shoal.daemon.fetch.checked_dirs import CheckedDirs
from shoal.daemon.fetch.job import Matcher
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.state import Transfer
from shoal.daemon.model import PARTIAL_DIR
from shoal.daemon.store.loader import index_loader
from shoal.protocol.errors import IntegrityError, ProtocolError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import check_dir_size, file_chunks
from shoal.protocol.format.objects import DirEntry, EntryType, FileEntry, FileObject, TreeEntry, VersionRecord
from shoal.protocol.format.paths import check_symlink_target

#: Entries a version may hold besides one per file: directories and links are
#: cheap to declare, so without a bound a few shared tree objects could name
#: billions of directories (SPEC.md, "Fetching").
EXTRA_ENTRIES = 65536

#: What a directory declares below it: (bytes, files, entries).
Totals = tuple[int, int, int]

#: Directories whose objects are fetched and checked at once, in the whole walk, and
#: subdirectories of one directory walked at once. One at a time, a 200,000-file
#: folder's walk took about 18 s, during which at most MAX_UNINSTALLED complete files
#: could wait (copier.py) and the data stopped.
WALK_DIRS = 4


@dataclass(frozen=True, slots=True)
class Walk:
    """One walk of a version's manifest."""

    objects: Objects
    transfer: Transfer
    sources: Sequence[Source]
    matcher: Matcher
    #: Record each checked subtree, so that later fetches need not walk it. Not with
    #: --include or a subset: the walk then depends on the path.
    remember: bool
    #: Told of each directory checked, for a planner following behind.
    checked: CheckedDirs | None = None
    #: Directories fetched and checked at once: WALK_DIRS, or one until `widen` (a walk the
    #: first data waits for: its first directories are checked sooner alone, see the engine).
    fetching: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(WALK_DIRS))

    def widen(self) -> None:
        """Fetch and check WALK_DIRS directories at once from now on."""
        self.fetching.total_tokens = WALK_DIRS

    async def version(self, record: VersionRecord, old_root: bytes | None = None) -> Totals:
        """Walk the whole version and check its declared totals; `old_root` as `tree`'s `old_id`."""
        totals = await self.tree(record.root, (), old_root)
        if self.remember:
            check_totals(self.transfer, record, totals[0], totals[1])
        return totals

    async def tree(self, tree_id: bytes, prefix: tuple[str, ...] = (), old_id: bytes | None = None) -> Totals:
        """Fetch a directory's manifest objects; return what it declares below it.

        A subtree met again (the same tree id elsewhere) is not walked again, but
        its entries count again towards the version's bound on entries. `old_id` is
        this directory in a version DEST holds in full: its file entries that are
        unchanged were fetched and checked with it.
        """
        depth = len(prefix)
        found = await self._checked_before(tree_id, depth)
        if found is not None:
            _count_entries(self.transfer, found[2])
            self._tell(tree_id, depth, whole=True)
            return found
        async with self.fetching:
            entries = await self.objects.tree(tree_id, self.sources)
            check_entries(prefix, entries)
            _count_entries(self.transfer, len(entries))
            old = await trio.to_thread.run_sync(self._by_name, old_id) if old_id is not None else {}
            await self._files(prefix, entries, old)
        self._tell(tree_id, depth, whole=False)
        size = sum(e.size for e in entries)
        count = sum(1 for e in entries if e.type == EntryType.FILE)
        below_entries = len(entries)
        subdirs = []
        for e in entries:
            if e.type == EntryType.DIR and self.matcher(prefix + (e.name,), True):
                was = old.get(e.name)
                subdirs.append((e, was.id if was is not None and was.type == EntryType.DIR else None))
        del entries, old
        for (e, _), below in zip(subdirs, await self._subtrees(prefix, subdirs)):
            check_dir_size(prefix + (e.name,), e, below[0])
            count += below[1]
            below_entries += below[2]
        if self.remember:
            # The whole subtree is now stored and checked.
            self.transfer.subtrees[tree_id] = (size, count, below_entries, depth)
            await trio.to_thread.run_sync(
                self.objects.index.add_checked_tree, tree_id, size, count, below_entries, depth
            )
            self._tell(tree_id, depth, whole=True)
        return size, count, below_entries

    async def _subtrees(self, prefix: tuple[str, ...], subdirs: list[tuple[DirEntry, bytes | None]]) -> list[Totals]:
        """`tree` of each subdirectory, WALK_DIRS of them at once, in order; the first error
        stops the others and is raised as it is, not in a group."""
        results: list[Totals] = [(0, 0, 0)] * len(subdirs)
        failed: list[Exception] = []
        window = trio.Semaphore(WALK_DIRS)

        async def walk_one(i: int, entry: DirEntry, old_dir: bytes | None, scope: trio.CancelScope) -> None:
            try:
                results[i] = await self.tree(entry.id, prefix + (entry.name,), old_dir)
            except Exception as e:
                failed.append(e)
                scope.cancel()
            finally:
                window.release()

        async with trio.open_nursery() as nursery:
            for i, (entry, old_dir) in enumerate(subdirs):
                await window.acquire()
                if failed:
                    break
                nursery.start_soon(walk_one, i, entry, old_dir, nursery.cancel_scope)
        if failed:
            raise failed[0]
        return results

    async def _checked_before(self, tree_id: bytes, depth: int) -> Totals | None:
        seen = self.transfer.subtrees.get(tree_id)
        if seen is not None and seen[3] > depth:
            seen = None  # checked deeper down: its links may climb too far up here
        if seen is not None:
            return seen[:3]
        return await trio.to_thread.run_sync(self.objects.index.checked_tree, tree_id, depth)

    async def _files(self, prefix: tuple[str, ...], entries: list[TreeEntry], old: dict[str, TreeEntry]) -> None:
        """Fetch and check the FILE objects (and their CHUNKS pages) of a directory's selected, changed files."""
        files = [
            e for e in entries
            if isinstance(e, FileEntry) and old.get(e.name) != e and self.matcher(prefix + (e.name,), False)
        ]
        downloaded = await self.objects.ensure(Kind.FILE, [e.id for e in files], self.sources)
        # Kept for the copier when it follows close behind (a planner is told of each directory).
        keep = self.checked is not None
        decoded = await trio.to_thread.run_sync(partial(self.objects.files, files, downloaded, keep=keep))
        await self.objects.ensure_file_pages(decoded, self.sources)
        await trio.to_thread.run_sync(self._check_file_sizes, prefix, files, decoded)

    def _tell(self, tree_id: bytes, depth: int, *, whole: bool) -> None:
        if self.checked is not None:
            self.checked.add(tree_id, depth, whole=whole)

    def _by_name(self, tree_id: bytes) -> dict[str, TreeEntry]:
        return {e.name: e for e in self.objects.entries(tree_id)}

    def _check_file_sizes(self, prefix: tuple[str, ...], files: list[FileEntry], decoded: list[FileObject]) -> None:
        """Every size a file declares must be what its chunk list holds, before any space is allocated for it."""
        load = index_loader(self.objects.index)
        for entry, file in zip(files, decoded):
            path = "/".join(prefix + (entry.name,))
            if file.size != entry.size:
                raise IntegrityError(f"{path}: the tree says {entry.size} bytes, its content object {file.size}")
            if file.level > 0 and sum(ref.size for ref in file_chunks(load, file)) != file.size:
                raise IntegrityError(f"{path}: its chunk list does not add up to its {file.size} bytes")


def check_entries(prefix: tuple[str, ...], entries: list[TreeEntry]) -> None:
    """Refuse what a directory of a received version may not hold."""
    for entry in entries:
        if not prefix and entry.name == PARTIAL_DIR:
            raise IntegrityError(f"the version has an entry named {PARTIAL_DIR}, a name shoal reserves")
        if entry.type == EntryType.SYMLINK:
            try:
                check_symlink_target(entry.target, len(prefix))
            except ProtocolError as e:
                raise IntegrityError(f"{'/'.join(prefix + (entry.name,))}: {e}") from None


def check_totals(transfer: Transfer, record: VersionRecord, size: int, files: int) -> None:
    """The walked tree must hold what the version declares."""
    if (size, files) != (record.size, record.files):
        assert transfer.version is not None
        raise IntegrityError(
            f"version {transfer.version.id.hex()[:12]} declares {record.size} bytes in {record.files} files,"
            f" its tree holds {size} in {files}"
        )


def _count_entries(transfer: Transfer, n: int) -> None:
    assert transfer.version is not None
    transfer.entries_seen += n
    if transfer.entries_seen > 2 * transfer.version.files + EXTRA_ENTRIES:
        raise IntegrityError(
            f"version {transfer.version.id.hex()[:12]} names more entries than its {transfer.version.files} files allow"
        )
