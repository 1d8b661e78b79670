"""A fetch's files assembled by worker processes, so that many files proceed on many cores.

The daemon keeps what is per fetch: resolving, the manifest walk, the plan
(folders, links, files removed or moved aside, which files to assemble), the
version record and the final syncfs. It deals the planned files to N worker
processes (`python -m shoal.daemon.worker`), each with its own lanes to the
serving peers (SPEC.md, "Lanes"), its own index connection, and the same
assembling stages as the daemon (stages.py). What binds one daemon on many
small files is the per-file Python it runs under one GIL (README, "Cores");
each worker has a GIL of its own.
"""

import os
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from shoal.daemon.fetch.errors import DiskFull, FetchError, NoPeer
from shoal.daemon.fetch.job import FileTask, Job
from shoal.daemon.fetch.link import Link, LinkClosed, Progress, Say, Setup, task_fields
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.wakeup import Signal
from shoal.protocol.wire.messages import MAX_LANE

WORKER_MODULE = "shoal.daemon.worker"
#: A worker pays a process start and its own lanes: a fetch of fewer files than this per worker is not split.
MIN_FILES_PER_WORKER = 2000
#: Nor is a fetch whose plan (an update's, say) has fewer files to assemble than this.
SPLIT_AFTER = MIN_FILES_PER_WORKER // 2
#: Machines with fewer cores than this split no fetch by default: two daemons sharing two
#: vCPUs gained no time from a split and spent a tenth more CPU (README, "Cores").
AUTO_MIN_CORES = 8
#: By default a worker per this many cores (the senders, the kernel and the daemon need the rest).
AUTO_CORES_PER_WORKER = 4
#: What the dealer counts a file as beyond its bytes: a file's own work (about 0.1 ms of a core,
#: README "Cores") costs a receiver about what 64 KiB of a large file does.
FILE_WEIGHT = 64 * 1024
#: How often the pause state of the fetch is passed on to the workers.
PAUSE_POLL = 0.1
#: Files dealt to a worker and not finished yet, at most: the worker reads every message at
#: once (a PAUSE must not queue behind files), so this bounds what waits in its memory.
DEALT_AHEAD = 4096


#: The daemon's own stages (stages.assemble_stages, its sources given): what assembles a plan too small to split.
Assemble = Callable[[trio.MemoryReceiveChannel[list[FileTask]]], Awaitable[list[str]]]


def auto_workers(cores: int) -> int:
    """The workers a fetch may use on a machine with `cores` cores when the config leaves it to shoal."""
    if cores < AUTO_MIN_CORES:
        return 1
    return min(cores // AUTO_CORES_PER_WORKER, MAX_LANE)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a daemon gives its fetches to start workers with."""

    key: bytes
    index: Path
    #: How many workers a fetch may use now (1: none, the daemon assembles the files itself).
    count: Callable[[], int]


class Lanes:
    """The lane numbers of this daemon's workers: each worker takes one for all its peers.

    The least recently used come first: a peer may not yet have seen the end of a
    lane a worker that just ended had open (the worker retries a while if so)."""

    def __init__(self) -> None:
        self._free = deque(range(1, MAX_LANE + 1))

    @contextmanager
    def lease(self, wanted: int) -> Iterator[list[int]]:
        """Up to `wanted` free lanes for one fetch's workers, while it runs; none if fewer than two are free."""
        taken = [self._free.popleft() for _ in range(min(wanted, len(self._free)))] if wanted > 1 else []
        if len(taken) < 2:
            self._free.extendleft(reversed(taken))
            taken = []
        try:
            yield taken
        finally:
            self._free.extend(taken)


def split_count(config: WorkerConfig | None, files: int, sources: list[Source], capped: bool) -> int:
    """How many workers a fetch of `files` files from `sources` uses; 1: none."""
    if config is None or capped or not sources or any(s.lane_address is None for s in sources):
        return 1
    return max(1, min(config.count(), files // MIN_FILES_PER_WORKER))


class Split:
    """Runs a fetch's workers, deals them the planner's files, and adds their progress to the fetch's."""

    def __init__(self, job: Job, config: WorkerConfig, sources: list[Source], lanes: list[int]) -> None:
        self._job = job
        self._progress = Progress(job.transfer)
        self._walked_told = trio.Event()
        peers = [(s.peer_id, job.name_of(s.peer_id), s.lane_address or "") for s in sources]
        base = Setup(
            config.key, config.index, replace(job.spec, dest=job.dest), job.version_id, job.selection,
            job.old_root, job.reuse_unchanged, job.resuming, (),
        )
        self._workers = [
            _Worker(n, replace(base, peers=tuple((*p, lane) for p in peers)), self._progress, job)
            for n, lane in enumerate(lanes)
        ]

    async def run(self, tasks: trio.MemoryReceiveChannel[list[FileTask]], alone: Assemble) -> list[str]:
        """Until every planned file is assembled; the warnings about peers. A plan of fewer than
        SPLIT_AFTER files (an update, say) the daemon assembles itself with `alone`: workers
        would cost more to start than they take off it."""
        held: list[FileTask] = []
        async for step in tasks:
            held += step
            if len(held) >= SPLIT_AFTER:
                break
        else:
            return await alone(_replay(held))
        self._job.transfer.workers = len(self._workers)
        async with trio.open_nursery() as nursery:
            for worker in self._workers:
                nursery.start_soon(worker.run)
            nursery.start_soon(self._tell_walked)
            await self._deal(held, tasks)
        return list(dict.fromkeys(w for worker in self._workers for w in worker.warnings))

    async def _deal(self, held: list[FileTask], tasks: trio.MemoryReceiveChannel[list[FileTask]]) -> None:
        """The files held, then the rest of the plan. The channel stays open when a worker
        fails, so that the planner sees the fetch end by that failure, not a closed channel."""
        await self._deal_step(held)
        async for step in tasks:
            await self._deal_step(step)
        await self._walked_told.wait()
        for worker in self._workers:
            await worker.give([Say.END])
            await worker.outbox.aclose()

    async def _deal_step(self, step: list[FileTask]) -> None:
        """Each file to the worker with the least work dealt so far."""
        groups: dict[int, list[list[Any]]] = {}
        for task in step:
            worker = min(self._workers, key=lambda w: w.weight)
            worker.weight += task.entry.size + FILE_WEIGHT
            groups.setdefault(worker.number, []).append(task_fields(task))
        for number, group in groups.items():
            await self._workers[number].deal(group)

    async def _tell_walked(self) -> None:
        """The workers install nothing before the manifest walk has checked the whole version,
        which may end before or after the plan does."""
        await self._job.checked.complete.wait()
        for worker in self._workers:
            await worker.give([Say.WALKED])
        self._walked_told.set()


def _replay(held: list[FileTask]) -> trio.MemoryReceiveChannel[list[FileTask]]:
    """A channel that gives `held` and ends."""
    send, receive = trio.open_memory_channel[list[FileTask]](1)
    if held:
        send.send_nowait(held)
    send.close()
    return receive


class _Worker:
    def __init__(self, number: int, setup: Setup, progress: Progress, job: Job) -> None:
        self.number = number
        self.weight = 0
        self.warnings: list[str] = []
        self._setup = setup
        self._progress = progress
        self._job = job
        self.outbox, self._inbox = trio.open_memory_channel[list[Any]](2)
        self._dealt = 0
        self._finished = 0
        self._progressed = Signal()

    async def deal(self, group: list[list[Any]]) -> None:
        """Files for this worker, once it has few enough unfinished ones."""
        while self._dealt - self._finished >= DEALT_AHEAD:
            await self._progressed.wait()
        self._dealt += len(group)
        await self.give([Say.TASKS, group])

    async def give(self, message: list[Any]) -> None:
        """Pass `message` on to the worker, unless it has ended: then its own task says why, and ends the fetch."""
        try:
            await self.outbox.send(message)
        except trio.BrokenResourceError:
            await trio.sleep_forever()

    async def run(self) -> None:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            link = Link(process.stdout, process.stdin)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send, link)
                nursery.start_soon(self._pass_pause, link)
                await self._receive(link, process)
                nursery.cancel_scope.cancel()
            await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.stdin.aclose()
                await process.stdout.aclose()

    async def _send(self, link: Link) -> None:
        """The setup, then what the dealer has for this worker; a worker that has ended is
        left to _receive, which tells why."""
        async with self._inbox:
            try:
                await link.send(Say.SETUP, self._setup.fields())
                async for message in self._inbox:
                    await link.send(*message)
            except trio.BrokenResourceError:
                # Keep taking what the dealer deals until _receive has told why the worker ended.
                async for _ in self._inbox:
                    pass

    async def _pass_pause(self, link: Link) -> None:
        paused = False
        while True:
            await trio.sleep(PAUSE_POLL)
            if self._job.transfer.paused != paused:
                paused = self._job.transfer.paused
                try:
                    await link.send(Say.PAUSE if paused else Say.RESUME)
                except trio.BrokenResourceError:
                    return

    async def _ended(self, process: trio.Process) -> FetchError:
        status = await process.wait()
        return FetchError(
            f"fetch worker {self.number + 1} ended before its files were done (exit status {status}; the daemon's"
            " log has its last words); run the same fetch again: it resumes from what was already verified"
        )

    async def _receive(self, link: Link, process: trio.Process) -> None:
        while True:
            try:
                message = await link.receive()
            except LinkClosed:
                raise await self._ended(process) from None
            kind = message[0]
            if kind == Say.PROGRESS:
                self._progress.apply(self.number, message[1])
                self._finished = message[1]["files"]
                self._progressed.notify()
            elif kind == Say.DONE:
                self.warnings = list(message[1])
                return
            elif kind == Say.FAILED:
                raise failure(message[1], message[2])


def failure(code: str, message: str) -> FetchError:
    """The error a worker failed with, as the daemon reports it."""
    known: dict[str, type[FetchError]] = {NoPeer.code: NoPeer, DiskFull.code: DiskFull}
    return known.get(code, FetchError)(message)
