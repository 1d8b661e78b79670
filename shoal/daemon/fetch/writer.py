"""The writer and finisher stages: verify and write arrived chunks; move complete files into place.

Both work off the event loop, many items per worker-thread call, so that the
other core hashes and writes while this one receives and decrypts. No chunk is
written before it hashes to its id; no file is renamed into DEST before the
whole manifest has passed its checks.
"""

import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import trio

from shoal.daemon.fetch.dest import UMASK
from shoal.daemon.fetch.flusher import Flusher
from shoal.daemon.fetch.job import FileTask, Job, count_done
from shoal.daemon.fetch.puller import Arrival
from shoal.daemon.fetch.record import Installed
from shoal.daemon.fetch.state import Busy
from shoal.daemon.store.chunks import hash_runs
from shoal.daemon.store.fdlimit import FilePool
from shoal.daemon.store.filebatch import replace, write_new
from shoal.daemon.store.flush import start_writeback
from shoal.daemon.store.index import FileStat
from shoal.daemon.store.writes import write_at
from shoal.protocol.format.objects import DEFAULT_FILE_MODE

#: Arrived runs the writer waits for (at most WRITE_GATHER seconds) before a worker-thread call,
#: and the bytes one call takes at the most. Small files are a run each: a call per
#: few of them would cost more in thread hand-offs than their writes. A large run is a
#: call of its own: its batch is settled (puller.py) as soon as it is written, not
#: after the runs of every other open request.
WRITE_BATCH = 128
WRITE_BYTES = 4 << 20
WRITE_GATHER = 0.004

#: A run's bytes as the puller hands them over.
Data = bytes | bytearray | memoryview


async def write_stage(
    job: Job, arrivals: trio.MemoryReceiveChannel[Arrival], finished: trio.MemorySendChannel[FileTask],
    written: Callable[[list[Arrival], list[bool]], None],
) -> None:
    """Verify and write arrived chunks; tell `written` the verdicts. Ends when `arrivals`
    closes, with the small files it wrote flushed."""
    async with arrivals, finished, trio.open_nursery() as flushes:
        flusher = Flusher(job.dest, flushes)
        while True:
            batch = await _gather(arrivals)
            if not batch:
                break
            verdicts, whole = await trio.to_thread.run_sync(verify_and_write, batch, job.transfer.busy, job.files)
            for arrival, good in zip(batch, verdicts):
                if good:
                    for task, _ in arrival.targets:
                        count_done(job, task, len(arrival.data), finished)
            written(batch, verdicts)
            await flusher.wrote(whole)
        await flusher.finish()


async def _gather(arrivals: trio.MemoryReceiveChannel[Arrival]) -> list[Arrival]:
    """What has arrived, waiting a little for WRITE_BATCH of it; [] once the channel is closed and empty.

    A worker-thread call per chunk or two costs two thread switches each; a few
    milliseconds' wait gathers a batch worth one."""
    try:
        batch = [await arrivals.receive()]
    except trio.EndOfChannel:
        return []
    size = _take_ready(arrivals, batch, len(batch[0].data))
    if len(batch) < WRITE_BATCH and size < WRITE_BYTES:
        with trio.move_on_after(WRITE_GATHER):
            while len(batch) < WRITE_BATCH and size < WRITE_BYTES:
                try:
                    batch.append(await arrivals.receive())
                except trio.EndOfChannel:
                    break
                size = _take_ready(arrivals, batch, size + len(batch[-1].data))
    return batch


def _take_ready(channel: trio.MemoryReceiveChannel[Arrival], into: list[Arrival], size: int) -> int:
    """Move what is already buffered in `channel` into `into`, up to a batch's worth; the batch's bytes."""
    while len(into) < WRITE_BATCH and size < WRITE_BYTES:
        try:
            arrival = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        into.append(arrival)
        size += len(arrival.data)
    return size


def _take_all(channel: trio.MemoryReceiveChannel[FileTask], into: list[FileTask]) -> None:
    """Move everything already buffered in `channel` into `into`."""
    while True:
        try:
            into.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return


def verify_and_write(arrivals: list[Arrival], busy: Busy, files: FilePool) -> tuple[list[bool], list[FileTask]]:
    """Hash each run's chunks; write the runs whose chunks all match to every place they
    belong, a run in one write. The verdicts, and the files created whole (flusher.py).
    Runs in a thread."""
    started = time.perf_counter()
    verdicts = runs_match(arrivals)
    busy.hashing += time.perf_counter() - started
    whole: list[tuple[FileTask, Data]] = []
    for arrival, good in zip(arrivals, verdicts):
        started = time.perf_counter()
        if good:
            for task, offset in arrival.targets:
                if task.fresh and offset == 0 and len(arrival.data) == task.entry.size:
                    whole.append((task, arrival.data))
                    continue
                with files.use(task) as fd:
                    write_at(fd, arrival.data, offset)
        busy.disk_write += time.perf_counter() - started
    if whole:
        started = time.perf_counter()
        _write_whole(whole)
        busy.disk_write += time.perf_counter() - started
    return verdicts, [task for task, _ in whole]


def _write_whole(files: list[tuple[FileTask, Data]]) -> None:
    """Create fresh files that one run fills each, with their modes, in one write each; close them.

    A small file costs an open, a write and a close here (its writeback comes in the
    background with many others: flusher.py), and a rename and an lstat when
    installed: no descriptor kept to reopen, no chmod, no fstat. All of a batch's
    calls are made in C with the GIL released once."""
    errors = write_new([(task.partial, task.entry.permissions(), data) for task, data in files])
    failed = None
    for (task, _), err in zip(files, errors):
        if err:
            failed = failed or OSError(err, os.strerror(err), task.partial)
        else:
            task.whole = True
    if failed is not None:
        raise failed


def runs_match(arrivals: list[Arrival]) -> list[bool]:
    """For each arrival, whether its data is exactly its run's chunks, each hashed from a
    view of it: all of them in one call."""
    views = [memoryview(arrival.data) for arrival in arrivals]
    found = hash_runs([arrival.run for arrival in arrivals], views, [len(view) for view in views])
    return [list(a.run.ids) == ids and a.run.total == len(a.data) for a, ids in zip(arrivals, found)]


async def finish_stage(
    job: Job, finished: trio.MemoryReceiveChannel[FileTask], installed: trio.MemorySendChannel[list[Installed]]
) -> None:
    """Move complete files into place, many per worker-thread call, once the whole manifest is checked."""
    async with finished, installed:
        await job.checked.complete.wait()
        while True:
            try:
                tasks = [await finished.receive()]
            except trio.EndOfChannel:
                return
            _take_all(finished, tasks)
            stats = await trio.to_thread.run_sync(install_files, job.dest, tasks, job.files)
            job.transfer.files_done += len(tasks)
            job.transfer.files_written += len(tasks)
            await installed.send(list(zip(tasks, stats)))


def install_files(dest: Path, tasks: list[FileTask], files: FilePool) -> list[FileStat]:
    """Rename complete, verified files into place; their stats after the rename."""
    folder = os.fspath(dest)
    targets = [os.path.join(folder, *task.parts) for task in tasks]
    stats: dict[int, FileStat] = {}
    moves = []
    for i, task in enumerate(tasks):
        if task.whole:
            # Created with its mode and closed; a copy of a chunk it holds twice may have opened it since.
            files.close(task)
            moves.append(i)
    moved = replace([(tasks[i].partial, targets[i]) for i in moves])
    for i, (err, size, mtime_ns, ctime_ns, inode) in zip(moves, moved):
        if err == errno.EISDIR:
            _move(tasks[i].partial, targets[i])
            stats[i] = _file_stat(os.lstat(targets[i]))
        elif err:
            raise OSError(err, os.strerror(err), targets[i])
        else:
            stats[i] = FileStat(size, mtime_ns, ctime_ns, inode)
    for i, task in enumerate(tasks):
        if not task.whole:
            with files.use(task) as fd:
                stats[i] = _install(targets[i], task, fd)
            files.close(task)
    return [stats[i] for i in range(len(tasks))]


def _install(target: str, task: FileTask, fd: int) -> FileStat:
    mode = task.entry.permissions()
    if mode != DEFAULT_FILE_MODE:
        # Otherwise the mode is already right: partial files are created 0o644 less the umask.
        os.fchmod(fd, mode & ~UMASK)
    _move(task.partial, target)
    # Written back while the fetch goes on, so the flush at its end has little left.
    start_writeback(fd)
    return _file_stat(os.fstat(fd))


def _move(partial: str, target: str) -> None:
    try:
        os.replace(partial, target)
    except IsADirectoryError:
        # A real directory where the file goes (a rename replaces a symlink itself).
        shutil.rmtree(target)
        os.replace(partial, target)


def _file_stat(st: os.stat_result) -> FileStat:
    """Taken after the rename, which changes the inode's ctime: the stat a later fetch will see."""
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
