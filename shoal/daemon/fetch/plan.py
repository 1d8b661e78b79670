"""The first stage of a fetch's data phase: deciding, per file, whether DEST already holds it.

The planner brings DEST's tree in line with the version (folders, links, files
removed or moved aside) and hands every file it must assemble to the copier.
It runs in worker threads, a step at a time, and follows the manifest walk:
a directory is planned once the walk has checked it.
"""

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from shoal.daemon.fetch.dest import UMASK, ensure_dir, partial_name, place_symlink, prune
from shoal.daemon.fetch.job import FileTask, Job, Matcher
from shoal.daemon.fetch.local_changes import KeepLocal, Overwrite
from shoal.daemon.fetch.objects import stored_bytes
from shoal.daemon.fetch.record import record_file
from shoal.daemon.fetch.state import FetchSpec, Transfer
from shoal.daemon.library.scanner import file_id_of
from shoal.daemon.model import FULL
from shoal.daemon.store.index import CachedFile, FileStat, Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import EntryType, FileEntry, TreeEntry, stored_file

#: Plan actions per worker-thread call: a call costs milliseconds of waiting for
#: the event loop, which is busy receiving, so many files share one.
PLAN_STEP = 256


@dataclass(frozen=True, slots=True)
class _Wait:
    """The plan cannot go on until the manifest walk has checked this directory."""

    tree_id: bytes
    depth: int


#: A file to assemble, a wait for the walk, or None: a step that only gives the event loop a turn.
_Action = FileTask | _Wait | None


class Planner:
    """Walks the version against what DEST holds, yielding the files to assemble."""

    def __init__(self, job: Job, matcher: Matcher, first_files: Callable[[], None] | None = None) -> None:
        self.job = job
        self.matcher = matcher
        self._partial_dir = job.partial_dir
        #: Called once, when the plan first has files to hand over.
        self._first_files = first_files

    async def run(self, root: bytes, tasks: trio.MemorySendChannel[list[FileTask]]) -> None:
        """The stage: send the files to assemble, a step's worth at a time; close `tasks` at the end."""
        async with tasks:
            plan = self._plan(root)
            while True:
                step, waiting, moved = await trio.to_thread.run_sync(_next_step, plan)
                if step:
                    if self._first_files is not None:
                        self._first_files()
                        self._first_files = None
                    await tasks.send(step)
                if waiting is not None:
                    await self.job.checked.wait(waiting.tree_id, waiting.depth)
                elif not moved:
                    return

    def _plan(self, root: bytes) -> Iterator[_Action]:
        """Bring DEST's tree in line with `root`. Runs in a worker thread, a few steps at a time."""
        job = self.job
        guard = Overwrite(job.dest)
        if job.spec.keep_local:
            assert job.transfer.version is not None
            guard = KeepLocal(job.index, job.dest, job.transfer.version.seq, job.transfer.conflicts.add)
        yield from self._plan_dir(index_loader(job.index), (), root, job.old_root, guard, False)

    def _plan_dir(
        self, load, prefix: tuple[str, ...], tree_id: bytes, old_id: bytes | None, guard: Overwrite, checked: bool
    ) -> Iterator[_Action]:
        """`checked`: the walk has already checked this directory's whole subtree."""
        while not checked:
            state = self.job.checked.state(tree_id, len(prefix))
            if state is None:
                yield _Wait(tree_id, len(prefix))
            else:
                checked = state
                break
        job = self.job
        if tree_id == old_id and job.reuse_unchanged and not guard.repairs:
            # Unchanged subtree of an update that keeps local changes: nothing to look at.
            for parts, entry in _walk_files(load, tree_id, prefix):
                if self.matcher(parts, False):
                    _count_kept(job.transfer, entry)
                    yield None
            return
        new = {e.name: e for e in tree_entries(load, tree_id)}
        if old_id == tree_id:
            old = new
        else:
            old = {e.name: e for e in tree_entries(load, old_id)} if old_id is not None else {}
        self._clear_old(load, prefix, new, old, guard)
        ensure_dir(job.dest, prefix)
        # A step of its own: a plan of many folders and few files must still
        # return to the event loop, where the fetch can be cancelled, often.
        yield None
        yield from self._plan_entries(load, prefix, new, old, guard, checked)

    def _clear_old(
        self, load, prefix: tuple[str, ...], new: dict[str, TreeEntry], old: dict[str, TreeEntry], guard: Overwrite
    ) -> None:
        """Remove what the version DEST holds has here and the new one does not."""
        # Without --include DEST ends up holding exactly the selection; with it only matching paths change.
        exact = not self.job.spec.include
        for name, gone in old.items():
            parts = prefix + (name,)
            replaced = name in new and new[name].type == gone.type
            selected = self.matcher(parts, gone.type == EntryType.DIR)
            if not replaced and (selected or exact):
                guard.remove(load, parts, gone)
            elif exact and not selected:
                prune(self.job.dest, load, parts, gone)

    def _plan_entries(
        self, load, prefix: tuple[str, ...], new: dict[str, TreeEntry], old: dict[str, TreeEntry],
        guard: Overwrite, checked: bool,
    ) -> Iterator[_Action]:
        job = self.job
        # The stat records of this directory, read once rather than once per file;
        # and its names, listed once: a file that is not there needs no lstat.
        recorded: dict[str, CachedFile] = {}
        present: set[str] | None = None
        folder = ""
        for name, entry in new.items():
            parts = prefix + (name,)
            if not self.matcher(parts, entry.type == EntryType.DIR):
                continue
            previous = old.get(name)
            if guard.left_deleted(parts, previous, entry):
                _count_kept(job.transfer, entry)
                yield None
            elif entry.type == EntryType.DIR:
                prev_id = previous.id if previous is not None and previous.type == EntryType.DIR else None
                guard.make_way(parts, previous, entry)
                yield from self._plan_dir(load, parts, entry.id, prev_id, guard, checked)
            elif entry.type == EntryType.SYMLINK:
                guard.make_way(parts, previous, entry)
                place_symlink(job.dest, parts, entry.target)
            elif job.reuse_unchanged and previous == entry and not guard.repairs:
                # Unchanged since the version DEST holds, and local changes are kept.
                _count_kept(job.transfer, entry)
                yield None
            else:
                if present is None:
                    recorded = job.index.cached_files(str(job.dest), "/".join(prefix))
                    folder = os.path.join(job.dest, *prefix)
                    present = set(os.listdir(folder))
                if name in present and already_there(
                    job.index, job.dest, parts, entry, recorded, rehash=job.spec.verify, path=os.path.join(folder, name)
                ):
                    _count_kept(job.transfer, entry)
                    yield None
                else:
                    guard.make_way(parts, previous, entry)
                    yield self._start_file(parts, entry)

    def _start_file(self, parts: tuple[str, ...], entry: FileEntry) -> FileTask:
        job = self.job
        partial = os.path.join(self._partial_dir, partial_name(parts, entry.id))
        fresh = not (job.resuming and os.path.lexists(partial))
        task = FileTask(parts, entry, partial, entry.size, fresh)
        if not fresh:
            # A new file needs no ftruncate (which costs a journal update on ext4):
            # its chunks' writes give it its size.
            with job.files.use(task) as fd:
                os.ftruncate(fd, entry.size)
        return task


def _next_step(plan: Iterator[_Action]) -> tuple[list[FileTask], _Wait | None, bool]:
    """The files among the next PLAN_STEP actions of `plan`, where it waits for the walk, and
    whether it moved at all. Runs in a worker thread; stops early where the plan waits."""
    tasks: list[FileTask] = []
    moved = 0
    for action in plan:
        if isinstance(action, _Wait):
            return tasks, action, bool(moved)
        moved += 1
        if action is not None:
            tasks.append(action)
        if moved >= PLAN_STEP:
            break
    return tasks, None, bool(moved)


def already_there(
    index: Index, dest: Path, parts: tuple[str, ...], entry: FileEntry, recorded: dict[str, CachedFile] | None = None,
    *, rehash: bool = False, path: str | None = None,
) -> bool:
    """Whether DEST holds `entry` at `parts` (`path`, when the caller has it): its stat matches
    what the index recorded for that content (the cheap check), or else, or with `rehash`,
    its bytes hash to it. An update checks every file this way, so it spares pathlib."""
    path = path or os.path.join(dest, *parts)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        return False
    if recorded is None:
        recorded = index.cached_files(str(dest), "/".join(parts[:-1]))
    row = recorded.get(parts[-1])
    current = FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if row is not None and row.stat == current and row.file_id is not None and not rehash:
        if row.file_id != entry.id:
            return False
        moded = _set_mode(path, st, entry)
        if moded is not None:
            index.finish_file(row.row, moded, entry.id)
        return True
    # Unknown to the index, or its record unfinished (a crash between the rename and
    # the end of the record): check the bytes.
    file = stored_file(stored_bytes(index, entry.id), entry.id)
    if file_id_of(Path(path), file.params) != entry.id:
        return False
    record_file(index, dest, parts, entry, _set_mode(path, st, entry) or current)
    return True


def dest_holds(index: Index, spec: FetchSpec, dest: Path, selection: bytes) -> tuple[bytes | None, bool]:
    """The root DEST holds from an earlier fetch or share, and whether its unchanged
    entries hold exactly what this fetch selects (and so need no second look)."""
    state = index.dest_state(str(dest))
    if state is not None and state[0] == spec.name:
        old_root, old_selection = state[2], state[3]
    else:
        known = index.dataset(spec.name)
        row = index.version(known[1]) if known and known[0] == str(dest) and known[1] else None
        if row is None:
            return None, True
        old_root, old_selection = row.root, FULL
    # An --include fetch only adds paths, so anything complete before serves it.
    reuse = old_selection is not None and (
        old_selection == selection or (old_selection == FULL and bool(spec.include))
    )
    return old_root, reuse


def _set_mode(path: str, st: os.stat_result, entry: FileEntry) -> FileStat | None:
    """Give a file DEST already holds the version's permission bits; its new stat if they changed."""
    wanted = entry.permissions() & ~UMASK
    if stat.S_IMODE(st.st_mode) == wanted:
        return None
    os.chmod(path, wanted, follow_symlinks=False)
    st = os.lstat(path)
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _count_kept(transfer: Transfer, entry: TreeEntry) -> None:
    transfer.bytes_done += entry.size
    transfer.files_done += 1


def _walk_files(load, tree_id: bytes, prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], TreeEntry]]:
    for entry in tree_entries(load, tree_id):
        parts = prefix + (entry.name,)
        if entry.type == EntryType.DIR:
            yield from _walk_files(load, entry.id, parts)
        elif entry.type == EntryType.FILE:
            yield parts, entry
