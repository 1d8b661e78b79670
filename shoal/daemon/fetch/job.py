"""What the stages of one fetch share: its fixed facts, the files it assembles, and how a stage wakes another."""

import os
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from shoal.daemon.fetch.checked_dirs import CheckedDirs
from shoal.daemon.fetch.state import FetchSpec, Transfer
from shoal.daemon.model import PARTIAL_DIR
from shoal.daemon.store.fdlimit import FilePool
from shoal.daemon.store.index import Index
from shoal.protocol.format.objects import FileEntry, Ref

#: Whether a path (its parts, and whether it is a directory) is selected by the fetch.
Matcher = Callable[[tuple[str, ...], bool], bool]


@dataclass(frozen=True, slots=True, eq=False)
class Job:
    """One fetch's data phase: fixed before its stages start."""

    index: Index
    spec: FetchSpec
    transfer: Transfer
    dest: Path
    version_id: bytes
    #: The partial files open now: a bounded pool, so that a fetch of a million
    #: files works under a soft limit of 256 descriptors.
    files: FilePool
    #: How far the manifest walk has got; finished at once when it ran before the data.
    checked: CheckedDirs
    #: What this fetch selects (selection.selection_key).
    selection: bytes
    #: The root DEST holds from an earlier fetch, and whether its unchanged subtrees
    #: hold exactly this fetch's selection (and so may be skipped unvisited).
    old_root: bytes | None
    reuse_unchanged: bool
    #: Whether an interrupted fetch left partial files to resume from.
    resuming: bool
    #: What messages call a peer (its trust name), given its id.
    name_of: Callable[[str], str]

    @property
    def partial_dir(self) -> str:
        """DEST's partial folder, as text: every file is named in it, and a Path join costs microseconds a file."""
        return os.path.join(self.dest, PARTIAL_DIR)


@dataclass(slots=True, eq=False)
class FileTask:
    """One file being assembled in the partial folder."""

    parts: tuple[str, ...]
    entry: FileEntry
    partial: str
    remaining: int
    #: No partial file was left for it by an interrupted fetch: there is nothing to
    #: re-check, and its file is created by the first write.
    fresh: bool
    #: Every chunk it needs has been written or queued for the network.
    listed: bool = False
    finishing: bool = False
    #: Written whole by one write and closed (writer.py): installed by path, with no descriptor.
    whole: bool = False
    #: A small file's chunk locations (id, offset, size), kept from planning for
    #: its index record, so that installing it does not decode its FILE object again.
    locations: list[tuple[bytes, int, int]] | None = None

    def add_done(self, n: int) -> bool:
        """Count `n` more bytes in place; whether the file has just become ready to install."""
        self.remaining -= n
        if self.remaining == 0 and self.listed and not self.finishing:
            self.finishing = True
            return True
        return False


#: Where a chunk goes: a file, and the offset in it.
Target = tuple[FileTask, int]


def count_done(job: Job, task: FileTask, n: int, finished: trio.MemorySendChannel[FileTask]) -> None:
    """Count `n` bytes of `task` as in place; hand the file to the finisher once it is complete."""
    job.transfer.bytes_done += n
    if task.add_done(n):
        # Unbounded: the copier stops planning while MAX_UNINSTALLED files wait (copier.py).
        finished.send_nowait(task)


def open_partial(task: Hashable) -> int:
    """Open (create) `task`'s partial file: the FilePool's opener."""
    assert isinstance(task, FileTask)
    return os.open(task.partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def offsets(refs: Iterator[Ref]) -> Iterator[tuple[int, Ref]]:
    """Each chunk of a file with its offset."""
    offset = 0
    for ref in refs:
        yield offset, ref
        offset += ref.size

