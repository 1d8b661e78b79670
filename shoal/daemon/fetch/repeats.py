"""Chunks a fetch needs at several places: asked of the network once, the other places
filled from the first copy once it has been verified and written.

A file with long zero-filled regions repeats one chunk id at every max-size
chunk of zeros; the same block in two files repeats a run of them. The copier
hands every chunk it still needs through `Repeats.split`: the first place of an
id is fetched (the run is cut around the later ones), and each later place waits
until the first copy has been written. The fill stage then reads that copy,
hashes it again, and writes it to the places waiting, as the copier copies
chunks DEST holds. A place left unfilled by an interrupted fetch is simply found
missing when the fetch resumes.
"""

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from shoal.daemon.fetch.errors import FetchError
from shoal.daemon.fetch.job import FileTask, Job, Target, count_done
from shoal.daemon.fetch.puller import Arrival
from shoal.daemon.fetch.wakeup import Signal
from shoal.daemon.store.chunkhash import chunk_ids
from shoal.daemon.store.chunks import read_at
from shoal.daemon.store.writes import write_at
from shoal.protocol.format.objects import Ref

#: Chunk ids remembered as asked for, and places that may wait for a first copy: bounded,
#: so that memory stays flat; past either bound a repeated chunk is simply fetched again.
MAX_FIRSTS = 1 << 15
MAX_WAITING = 1 << 16

#: Chunks of a file, each with its offset in it.
Segment = list[tuple[int, Ref]]


@dataclass(frozen=True, slots=True)
class _First:
    """Where a chunk's first copy is written: its file's partial path, its path in DEST, and the offset.
    Not the FileTask, which would keep a small file's chunk list alive long after it is recorded."""

    partial: str
    parts: tuple[str, ...]
    offset: int


@dataclass(slots=True)
class _Waiting:
    """The places waiting for one chunk id's first copy."""

    first: _First
    size: int
    places: list[Target] = field(default_factory=list)


class Repeats:
    """The chunk ids one fetch has asked for, and the places waiting for their first copy."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._first: OrderedDict[bytes, _First] = OrderedDict()
        self._waiting: dict[bytes, _Waiting] = {}
        self._places = 0
        #: Ids whose first copy may have been written since they were last tried.
        self._ready: set[bytes] = set()
        self._changed = Signal()
        #: The copier has split its last segment; the network has written its last run.
        self._planned = False
        self._received = False

    def split(self, task: FileTask, needed: Segment) -> Segment:
        """Of `needed` (chunks of `task` still missing), those to fetch; a chunk asked for
        earlier in this fetch waits for that copy instead."""
        fetch: Segment = []
        for offset, ref in needed:
            first = self._first.get(ref.id)
            if first is None or self._places >= MAX_WAITING:
                if first is None:
                    self._remember(ref.id, _First(task.partial, task.parts, offset))
                fetch.append((offset, ref))
                continue
            waiting = self._waiting.get(ref.id)
            if waiting is None:
                waiting = self._waiting[ref.id] = _Waiting(first, ref.size)
            waiting.places.append((task, offset))
            self._places += 1
            # Its first copy may be written already.
            self._ready.add(ref.id)
        if len(fetch) < len(needed):
            self._changed.notify()
        return fetch

    def _remember(self, cid: bytes, first: _First) -> None:
        self._first[cid] = first
        if len(self._first) > MAX_FIRSTS:
            self._first.popitem(last=False)

    def written(self, arrivals: list[Arrival], verdicts: list[bool]) -> None:
        """The writer wrote `arrivals` (those whose verdict is good): places waiting for them may be filled."""
        if not self._waiting:
            return
        for arrival, good in zip(arrivals, verdicts):
            if good:
                self._ready.update(cid for cid in arrival.run.ids if cid in self._waiting)
        if self._ready:
            self._changed.notify()

    def planned(self) -> None:
        """The copier will split nothing more."""
        self._planned = True
        self._changed.notify()

    def received(self) -> None:
        """Every run the fetch asked for has been written."""
        self._received = True
        self._changed.notify()

    async def fill_stage(self, finished: trio.MemorySendChannel[FileTask]) -> None:
        """Fill the waiting places from their first copies; ends once nothing can wait any more."""
        async with finished:
            while self._waiting or not self._planned:
                if not self._ready:
                    if self._received and self._planned and self._waiting:
                        cid = next(iter(self._waiting))
                        raise FetchError(
                            f"chunk {cid.hex()[:16]} could not be copied from where this fetch wrote it;"
                            " run the same fetch again: it resumes from what was verified"
                        )
                    await self._changed.wait()
                    continue
                ids = list(self._ready)
                self._ready.clear()
                groups = [(cid, self._waiting[cid], len(self._waiting[cid].places)) for cid in ids]
                filled = await trio.to_thread.run_sync(self._fill, groups)
                for (cid, waiting, n), done in zip(groups, filled):
                    if done:
                        self._count(waiting, n, finished)
                        if not waiting.places:
                            del self._waiting[cid]

    def _count(self, waiting: _Waiting, n: int, finished: trio.MemorySendChannel[FileTask]) -> None:
        """The first `n` places of `waiting` were filled."""
        for task, _ in waiting.places[:n]:
            count_done(self.job, task, waiting.size, finished)
        del waiting.places[:n]
        self._places -= n
        self.job.transfer.bytes_reused += n * waiting.size

    def _fill(self, groups: Sequence[tuple[bytes, _Waiting, int]]) -> list[bool]:
        """Copy each id's first copy, if it is written and still hashes to its id, to the first
        `n` of its places. Runs in a worker thread."""
        copies = [self._first_copy(waiting.first, waiting.size) for _, waiting, _ in groups]
        found = iter(chunk_ids([data for data in copies if data is not None]))
        done = []
        for (cid, waiting, n), data in zip(groups, copies):
            good = data is not None and next(found) == cid
            if good:
                assert data is not None
                for task, offset in waiting.places[:n]:
                    with self.job.files.use(task) as fd:
                        write_at(fd, data, offset)
            done.append(good)
        return done

    def _first_copy(self, first: _First, size: int) -> bytes | None:
        """The bytes at `first`: in its partial file, or in DEST once that file was moved into place."""
        for path in (first.partial, os.path.join(self.job.dest, *first.parts)):
            data = read_at(path, first.offset, size)
            if data is not None:
                return data
        return None
