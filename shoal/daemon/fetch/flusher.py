"""Small files' writeback, many at a time in the background, and their pages dropped after it.

The writer creates a small file with plain writes (_filebatch.c). Starting each
one's writeback as it was written (RWF_DONTCACHE, or sync_file_range) cost the
receiver's writer thread the block allocation and I/O submission of every file;
one syncfs for many files lets the kernel write them back together, in another
thread, while the fetch goes on. Once they are on the disk their pages are
clean, and dropping them keeps a fetch from pushing the machine's other files
out of memory, as the uncached writes of large files do (writes.py). Pages that
fit in memory nothing uses push nothing out: up to half of it, they stay. (A
drop is an open, an fadvise and a close per file: 16 us a file, 0.16 s of CPU
for 10,000 files.)
"""

import os
from pathlib import Path

import trio

from shoal.daemon.fetch.job import FileTask
from shoal.daemon.store.filebatch import drop_cached
from shoal.daemon.store.flush import free_memory, sync_filesystem

#: Small files' bytes, and files, written before a background flush starts.
FLUSH_BYTES = 64 * 1024 * 1024
FLUSH_FILES = 8192


class Flusher:
    """Flushes the small files a fetch writes, a batch at a time, in `nursery`."""

    def __init__(self, dest: Path, nursery: trio.Nursery, room: int | None = None) -> None:
        self._dest = dest
        self._nursery = nursery
        #: Bytes of small files whose pages may stay cached: half the memory free when the fetch began.
        self._room = free_memory() // 2 if room is None else room
        #: Written and not yet flushed.
        self._waiting: list[FileTask] = []
        self._bytes = 0
        self._idle = trio.Event()
        self._idle.set()

    async def wrote(self, tasks: list[FileTask]) -> None:
        """Count small files just written whole; start a flush once a batch has gathered.
        One flush runs at a time; a writer that gets two batches ahead waits for it."""
        self._waiting += tasks
        self._bytes += sum(task.entry.size for task in tasks)
        if self._bytes < FLUSH_BYTES and len(self._waiting) < FLUSH_FILES:
            return
        if not self._idle.is_set():
            if self._bytes < 2 * FLUSH_BYTES and len(self._waiting) < 2 * FLUSH_FILES:
                return
            await self._idle.wait()
        self._idle = trio.Event()
        self._nursery.start_soon(self._flush, self._take())

    async def finish(self) -> None:
        """Flush what is left, after any flush still running."""
        await self._idle.wait()
        if self._waiting:
            await trio.to_thread.run_sync(flush_and_drop, self._dest, self._take())

    def _take(self) -> list[tuple[str, str]]:
        """Where the files written since the last flush are (partial, then installed), if it must
        drop their pages: not while they fit in the room left."""
        tasks, self._waiting = self._waiting, []
        size, self._bytes = self._bytes, 0
        if size <= self._room:
            self._room -= size
            return []
        self._room = 0
        folder = os.fspath(self._dest)
        return [(task.partial, os.path.join(folder, *task.parts)) for task in tasks]

    async def _flush(self, batch: list[tuple[str, str]]) -> None:
        try:
            await trio.to_thread.run_sync(flush_and_drop, self._dest, batch)
        finally:
            self._idle.set()


def flush_and_drop(dest: Path, files: list[tuple[str, str]]) -> None:
    """Write back everything dirty on DEST's file system, then drop `files`' pages (if any). Runs in a thread."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_filesystem(fd)
    finally:
        os.close(fd)
    if files:
        drop_cached(files)
