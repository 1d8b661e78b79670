"""The copier stage: fill each planned file from what this machine already holds.

A chunk is taken from the file's own partial file, left by an interrupted
fetch (if it still hashes to its id), or from any dataset or version the index
knows; the rest is batched for the puller, but for the places of a chunk this
fetch already asks for (repeats.py). A file complete without the network goes
straight to the finisher.
"""

import os
import time
from collections.abc import Iterator

import trio

from shoal.daemon.fetch.job import FileTask, Job, Target, count_done, offsets
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.repeats import Repeats, Segment
from shoal.daemon.fetch.schedule import Batch
from shoal.daemon.store import chunks as chunkio
from shoal.daemon.store.loader import index_loader
from shoal.daemon.store.writes import write_at
from shoal.protocol.format.manifest import file_chunks
from shoal.protocol.format.objects import Ref
from shoal.protocol.wire.messages import MAX_RUNS, Run

#: A batch (one GET_RUNS) holds at most this many chunks and bytes: small enough
#: that the endgame's duplicate requests waste little, large enough to amortise a request.
BATCH_CHUNKS = 256
BATCH_BYTES = 4 * 1024 * 1024
#: A run (one preadv on the sender, one pwrite here) holds at most this many bytes.
RUN_BYTES = 4 * 1024 * 1024
#: Chunks of a large file planned per worker-thread call.
SEGMENT_CHUNKS = 256
#: Files up to this size are prepared many to a worker-thread call.
SMALL_FILE = 4 * 1024 * 1024
#: Complete files that may wait for the manifest walk to end before the copier pauses:
#: none is renamed into place until the whole version has passed its checks.
MAX_UNINSTALLED = 4096

class Copier:
    """Takes the planner's files; sends batches of chunks to fetch, and complete files."""

    def __init__(self, job: Job, objects: Objects, batches: trio.MemorySendChannel[Batch[Target]],
                 finished: trio.MemorySendChannel[FileTask], repeats: Repeats) -> None:
        self.job = job
        self.objects = objects
        self._repeats = repeats
        self._batches = batches
        self._finished = finished
        self._batch: Batch[Target] = Batch()

    async def run(self, tasks: trio.MemoryReceiveChannel[list[FileTask]]) -> None:
        """The stage: ends, with its outputs closed, when the planner's channel closes."""
        async with tasks, self._batches, self._finished:
            try:
                await self._copy_all(tasks)
            except trio.BrokenResourceError:
                # The puller (or finisher) ended before the plan did, which only a failing
                # fetch does: its error is the one to report, not this stage's closed channel.
                return

    async def _copy_all(self, tasks: trio.MemoryReceiveChannel[list[FileTask]]) -> None:
        async for step in tasks:
            small = [task for task in step if task.entry.size <= SMALL_FILE]
            if small:
                prepared = await trio.to_thread.run_sync(self._prepare_small, small)
                for task, needed, done in prepared:
                    await self._queue(task, needed, done)
                    self._listed(task)
            for task in step:
                if task.entry.size > SMALL_FILE:
                    await self._feed_large(task)
            await self._hold_back()
        self._repeats.planned()
        if self._batch:
            await self._batches.send(self._batch)

    async def _hold_back(self) -> None:
        """Files complete before the manifest is checked wait to be installed; so many, no more."""
        waiting = self._finished.statistics().current_buffer_used
        if waiting >= MAX_UNINSTALLED and not self.job.checked.complete.is_set():
            await self.job.checked.complete.wait()

    def _listed(self, task: FileTask) -> None:
        task.listed = True
        count_done(self.job, task, 0, self._finished)

    def _prepare_small(self, tasks: list[FileTask]) -> list[tuple[FileTask, Segment, int]]:
        """Many small files in one worker-thread call, with one index query for all their
        FILE objects and one for which of their chunks are here: per file, the thread hops
        and queries would dominate."""
        load = index_loader(self.job.index)
        plans = []
        for task, file in zip(tasks, self.objects.files([task.entry for task in tasks])):
            chunks = list(offsets(file_chunks(load, file)))
            task.locations = [(ref.id, offset, ref.size) for offset, ref in chunks]
            plans.append(chunks)
        local = self.job.index.chunks_present([ref.id for chunks in plans for _, ref in chunks])
        return [(task, *self._copy(task, chunks, local)) for task, chunks in zip(tasks, plans)]

    async def _feed_large(self, task: FileTask) -> None:
        """A large file, a segment per worker-thread call: its chunk list may not fit in memory."""
        chunks = offsets(await trio.to_thread.run_sync(self._chunks_of, task))
        while True:
            needed, done = await trio.to_thread.run_sync(self._next_segment, task, chunks)
            if not needed and not done:
                break
            await self._queue(task, needed, done)
        self._listed(task)

    def _chunks_of(self, task: FileTask) -> Iterator[Ref]:
        return file_chunks(index_loader(self.job.index), self.objects.file(task.entry.id))

    def _next_segment(self, task: FileTask, chunks: Iterator[tuple[int, Ref]]) -> tuple[Segment, int]:
        segment = _first(chunks, SEGMENT_CHUNKS)
        return self._copy(task, segment) if segment else ([], 0)

    async def _queue(self, task: FileTask, needed: Segment, done: int) -> None:
        """Count what was copied; batch what is still needed for the puller."""
        self.job.transfer.bytes_reused += done
        count_done(self.job, task, done, self._finished)
        for offset, run in runs_of(self._repeats.split(task, needed)):
            if not self._fits(run) or not self._batch.add_run(run, (task, offset)):
                await self._batches.send(self._batch)
                self._batch = Batch()
                self._batch.add_run(run, (task, offset))

    def _fits(self, run: Run) -> bool:
        batch = self._batch
        return not batch.runs or (
            batch.chunks + len(run.ids) <= BATCH_CHUNKS
            and batch.total + run.total <= BATCH_BYTES
            and len(batch.runs) < MAX_RUNS
        )

    def _copy(self, task: FileTask, segment: Segment, local: set[bytes] | None = None) -> tuple[Segment, int]:
        """Write what the partial file or the local index already has; return (still needed, bytes done).

        `local`, when given, holds at least those of the segment's chunks that the index holds.
        """
        started = time.perf_counter()
        try:
            if not task.fresh:
                segment, kept = self._verify_partial(task, segment)
            else:
                kept = 0
            needed, copied = self._copy_local(task, segment, local)
            return needed, kept + copied
        finally:
            self.job.transfer.busy.disk_read += time.perf_counter() - started

    def _verify_partial(self, task: FileTask, segment: Segment) -> tuple[Segment, int]:
        """A partial file left by an interrupted fetch: keep every chunk that verifies,
        a run's bytes read with one pread and hashed from a view of them."""
        needed = []
        done = 0
        with self.job.files.use(task) as fd:
            for start, run in runs_of(segment):
                present = os.pread(fd, run.total, start)
                found = chunkio.hash_runs([run], [memoryview(present)], [len(present)])[0]
                pos = 0
                for cid, size, got in zip(run.ids, run.sizes, found):
                    if got == cid:
                        done += size
                    else:
                        needed.append((start + pos, Ref(size, cid)))
                    pos += size
        return needed, done

    def _copy_local(self, task: FileTask, segment: Segment, local: set[bytes] | None) -> tuple[Segment, int]:
        """Copy the chunks the index knows of from wherever they are stored here, a run
        at a time: one read where this machine holds the run in one piece, one write."""
        index = self.job.index
        if local is None:
            local = index.chunks_present([ref.id for _, ref in segment])
        needed = [(offset, ref) for offset, ref in segment if ref.id not in local]
        held = [(offset, ref) for offset, ref in segment if ref.id in local]
        runs = list(runs_of(held))
        places = index.first_locations([run.ids[0] for _, run in runs])
        done = 0
        for start, run in runs:
            buf = bytearray(run.total)
            with memoryview(buf) as view:
                filled = chunkio.fill_run(index, run, places.get(run.ids[0]), view, whole=False)
                with self.job.files.use(task) as fd:
                    if all(filled):
                        write_at(fd, view, start)
                        done += run.total
                        continue
                    pos = 0
                    for good, cid, size in zip(filled, run.ids, run.sizes):
                        if good:
                            write_at(fd, view[pos : pos + size], start + pos)
                            done += size
                        else:
                            needed.append((start + pos, Ref(size, cid)))
                        pos += size
        needed.sort(key=lambda item: item[0])
        return needed, done


def runs_of(segment: Segment) -> Iterator[tuple[int, Run]]:
    """The chunks of `segment` (in file order, with holes where chunks are not needed)
    as runs of consecutive chunks of at most RUN_BYTES (or one larger chunk), each with its offset."""
    ids: list[bytes] = []
    sizes: list[int] = []
    start = end = total = 0
    for offset, ref in segment:
        if ids and (offset != end or total + ref.size > RUN_BYTES):
            yield start, Run(tuple(ids), tuple(sizes))
            ids, sizes, total = [], [], 0
        if not ids:
            start = offset
        ids.append(ref.id)
        sizes.append(ref.size)
        total += ref.size
        end = offset + ref.size
    if ids:
        yield start, Run(tuple(ids), tuple(sizes))


def _first(iterator: Iterator[tuple[int, Ref]], n: int) -> Segment:
    """Up to `n` items of `iterator`."""
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= n:
            break
    return out
