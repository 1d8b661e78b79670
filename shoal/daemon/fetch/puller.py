"""The puller stage: asking peers for the copier's batches, and handing what arrives to the writer.

Every peer serving the version gets WINDOW_PER_PEER worker tasks, each with at
most one request open; the scheduler (schedule.py) decides which batch each
one asks for. Peers may come, leave, or be dropped for misbehaving at any time.
"""

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

import trio

from shoal.daemon.fetch.errors import FetchError, NoPeer, PeerMisbehaved
from shoal.daemon.fetch.job import Job, Target
from shoal.daemon.fetch.schedule import Batch, Idle, Scheduler
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.state import PeerStats
from shoal.daemon.fetch.wakeup import Signal
from shoal.protocol.errors import ProtocolError
from shoal.protocol.wire.messages import Run

#: Requests a single peer may have open for one transfer: up to 16 MiB in flight, which keeps
#: the sender busy on loopback (measured: 8 moved no faster) and bounds what a crash loses.
WINDOW_PER_PEER = 4
#: Less than this from a peer in a fetch's timeout is silence: more than its keepalive PONGs
#: (a few dozen bytes every 30 s) add up to in an hour, less than one record of data.
SILENT_BYTES = 16 * 1024
#: Seconds between two looks at the open requests for silent peers, at the most.
SILENCE_CHECK = 1.0

_log = logging.getLogger("shoal.fetch")


@dataclass(frozen=True, slots=True)
class Arrival:
    """A run received for a batch (named by its first chunk id), not yet verified."""

    batch: Batch[Target]
    peer: str
    cid: bytes
    run: Run
    #: A view of the DATA_RUNS frame it came in (a kept buffer, spares.py); nothing else uses it.
    data: bytes | memoryview
    targets: list[Target]


class _Failure(Enum):
    """How a request failed: the peer broke the rules, or its session ended."""

    MISBEHAVED = "misbehaved"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class _Reply:
    """How a request ended: the first ids of the runs the peer lacks (None: it went
    silent with runs still pending), or a failure and why."""

    missing: list[bytes] | None = None
    failure: _Failure | None = None
    why: str = ""


@dataclass(slots=True)
class _Open:
    """A request waiting on a peer: cancelled once the peer has been silent for the fetch's timeout."""

    scope: trio.CancelScope
    source: Source
    #: The peer's bytes_in, and the trio time, when it was last heard from (SILENT_BYTES or more).
    heard: int
    since: float


@dataclass(slots=True)
class _Settling:
    """A batch being settled: set once it is released, with whether its peer may go on."""

    done: trio.Event = field(default_factory=trio.Event)
    go_on: bool = False


class Puller:
    """Runs the workers of one fetch's peers over a Scheduler."""

    def __init__(
        self, job: Job, sources: Callable[[], list[Source]], peers_changed: Callable[[], Awaitable[None]],
        arrivals: trio.MemorySendChannel[Arrival],
    ) -> None:
        self.job = job
        self._sources = sources
        self._peers_changed = peers_changed
        self._arrivals = arrivals
        self.schedule: Scheduler[Target] = Scheduler(WINDOW_PER_PEER)
        self.warnings: list[str] = []
        #: Worker tasks running per peer.
        self._workers: Counter[str] = Counter()
        #: Peers whose session broke, with that session: welcome back on a new one.
        self._lost: dict[str, Source] = {}
        self._requests: dict[tuple[Batch[Target], str], _Open] = {}
        self._last_source_seen = time.monotonic()
        #: The schedule changed: a batch queued, taken or released, a peer joined or left.
        self._changed = Signal()
        #: What the supervisor watches changed: a peer's workers ended, the peers changed, or
        #: the schedule finished. Not every batch taken or released: waking on those
        #: cost two tasks and a nursery each time, hundreds of times a second.
        self._roster = Signal()
        #: The writer reported on chunks.
        self._written = Signal()

    async def run(self, batches: trio.MemoryReceiveChannel[Batch[Target]]) -> None:
        """The stage: ends, closing the writer's channel, once every batch is done."""
        async with self._arrivals, trio.open_nursery() as nursery:
            nursery.start_soon(self._intake, batches)
            watchers = trio.CancelScope()
            nursery.start_soon(self._watch, watchers)
            try:
                await self._supervise(nursery)
            finally:
                watchers.cancel()

    def written(self, arrivals: list[Arrival], verdicts: list[bool]) -> None:
        """The writer verified and wrote `arrivals`; a chunk that did not verify is pending again."""
        for arrival, good in zip(arrivals, verdicts):
            self.schedule.written(arrival.batch, arrival.peer, arrival.cid, arrival.targets, good)
        self._written.notify()

    async def _intake(self, batches: trio.MemoryReceiveChannel[Batch[Target]]) -> None:
        async with batches:
            async for batch in batches:
                while not self.schedule.has_room():
                    await self._changed.wait()
                self.schedule.add(batch)
                self._changed.notify()
        self.schedule.close()
        self._changed.notify()
        self._roster.notify()

    async def _supervise(self, nursery: trio.Nursery) -> None:
        """Start workers for every peer that serves the version, as peers come and go."""
        spec = self.job.spec
        while True:
            for source in self._sources():
                self._start(source, nursery)
            if self.schedule.finished:
                return
            if self._workers:
                self._last_source_seen = time.monotonic()
            with trio.move_on_after(1.0):
                await self._roster.wait()
            if not self._workers and time.monotonic() - self._last_source_seen > spec.timeout:
                raise self._no_peer()

    def _start(self, source: Source, nursery: trio.Nursery) -> None:
        peer = source.peer_id
        # A peer whose connection broke is welcome back on a new session.
        if peer in self._workers or peer in self.schedule.dropped or self._lost.get(peer) is source:
            return
        self._workers[peer] = WINDOW_PER_PEER
        self.schedule.join(peer)
        self.job.transfer.peers.setdefault(peer, PeerStats()).dropped = None
        for _ in range(WINDOW_PER_PEER):
            nursery.start_soon(self._worker, source)
        self._changed.notify()

    def _no_peer(self) -> NoPeer:
        spec, transfer = self.job.spec, self.job.transfer
        if not transfer.peers:
            what = f"{spec.name}@{spec.version}" if spec.version else spec.name
            return NoPeer(
                f"no connected peer serves {what} in full and this machine holds only part of it;"
                f" waited {spec.timeout:g}s"
            )
        why = "; ".join(f"{self.job.name_of(p)}: {stats.dropped}" for p, stats in transfer.peers.items() if stats.dropped)
        return NoPeer(
            f"every peer serving {spec.name} left or failed ({why}); waited {spec.timeout:g}s for another;"
            " `shoal peers` shows who is online; the same fetch, run again, resumes from what was verified"
        )

    async def _worker(self, source: Source) -> None:
        """Ask `source` for batch after batch. A batch is settled (written, judged, released)
        beside the next request rather than before it: waiting for the writer between
        requests left every worker idle while the receiver wrote, and the sender and the
        writer each idle half the time (4 MiB runs: 13-16 ms per batch spent waiting)."""
        peer = source.peer_id
        try:
            async with trio.open_nursery() as settling:
                previous: _Settling | None = None
                while True:
                    batch = await self._next(peer)
                    if batch is None:
                        return
                    reply = await self._receive(source, batch)
                    current = _Settling()
                    settling.start_soon(self._settle, source, batch, reply, current)
                    if reply.failure is not None or reply.missing is None:
                        return
                    # At most two batches per worker wait for the writer: memory stays bounded.
                    if previous is not None:
                        await previous.done.wait()
                        if not previous.go_on:
                            return
                    previous = current
        finally:
            self._workers[peer] -= 1
            if self._workers[peer] <= 0:
                del self._workers[peer]
                self.schedule.leave(peer)
                self._roster.notify()
            self._changed.notify()

    async def _next(self, peer: str) -> Batch[Target] | None:
        """The next batch for `peer` to ask for; None when it is done with this fetch."""
        while True:
            if self.job.transfer.paused and peer not in self.schedule.dropped:
                await self.job.transfer.wait_resumed()
                continue
            decision = self.schedule.take(peer)
            if decision is Idle.STOP:
                return None
            if decision is Idle.WAIT:
                await self._changed.wait()
                continue
            self._changed.notify()
            return decision

    async def _receive(self, source: Source, batch: Batch[Target]) -> _Reply:
        """Request `batch` of `source`; how the request ended."""
        try:
            return _Reply(missing=await self._request(source, batch))
        except (PeerMisbehaved, ProtocolError) as e:
            return _Reply(failure=_Failure.MISBEHAVED, why=str(e))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as e:
            return _Reply(failure=_Failure.LOST, why=f"connection lost: {e}")

    async def _settle(self, source: Source, batch: Batch[Target], reply: _Reply, state: _Settling) -> None:
        """Once what arrived for `batch` is written, judge the peer by it and let the batch go."""
        await self._drained(batch)
        state.go_on = self._judge(source, batch, reply)
        self.schedule.release(batch, source.peer_id)
        self._changed.notify()
        if self.schedule.finished:
            self._roster.notify()
        state.done.set()

    def _judge(self, source: Source, batch: Batch[Target], reply: _Reply) -> bool:
        """Whether the peer may go on serving after `reply` to `batch` (which is drained)."""
        peer = source.peer_id
        if reply.failure is _Failure.MISBEHAVED:
            self._drop(peer, reply.why)
            return False
        if reply.failure is _Failure.LOST:
            self._lose(source, reply.why)
            return False
        missing = reply.missing
        if missing is None:
            self._drop(peer, f"sent nothing for {self.job.spec.timeout:g}s")
            return False
        if peer in batch.liars:
            self._drop(peer, "sent chunks whose bytes do not match their ids")
            return False
        if missing and batch.pending and self.schedule.refused(batch, peer):
            raise FetchError(
                f"no connected peer has {len(batch.pending)} chunks of {self.job.spec.name}; "
                "the version may be incomplete on every peer"
            )
        return True

    async def _request(self, source: Source, batch: Batch[Target]) -> list[bytes] | None:
        """The ids `source` lacks; None if it went silent on the request with chunks still pending."""
        peer = source.peer_id
        with trio.CancelScope() as scope:
            self._requests[batch, peer] = _Open(scope, source, source.bytes_in, trio.current_time())
            try:
                runs = [run for key, run in batch.runs.items() if key in batch.pending]
                missing = await source.get_runs(runs, lambda cid, data: self._deliver(batch, peer, cid, data))
            finally:
                del self._requests[batch, peer]
        if scope.cancelled_caught:
            # Cancelled by another peer that delivered the rest of this batch first, or timed out.
            return None if batch.pending else []
        return missing

    def _deliver(self, batch: Batch[Target], peer: str, cid: bytes, data: bytes | memoryview) -> None:
        """Take a run off the wire; it is verified and written by the writer stage."""
        receipt = self.schedule.receive(batch, peer, cid, len(data))
        run = batch.runs[cid]
        self._count(peer, len(data), len(run.ids))
        if receipt is None:
            return  # the endgame asked two peers; the first copy won
        for other in receipt.cancel:
            # An endgame duplicate is no longer needed: stop the other peers' copies.
            request = self._requests.get((batch, other))
            if request is not None:
                request.scope.cancel()
        # Unbounded: what is in flight is bounded by the workers' windows.
        self._arrivals.send_nowait(Arrival(batch, peer, cid, run, data, receipt.targets))

    def _count(self, peer: str, n: int, chunks: int) -> None:
        transfer = self.job.transfer
        stats = transfer.peers[peer]
        stats.received += n
        stats.chunks += chunks
        if transfer.first_byte is None:
            transfer.first_byte = time.monotonic() - transfer.started
        transfer.bytes_received += n

    async def _watch(self, scope: trio.CancelScope) -> None:
        """Until `scope` is cancelled: tell the supervisor when the peers change, and cancel
        requests to peers gone silent. One task each for the whole fetch, not one per
        request (a nursery and a task each: 60 us, hundreds of times a second)."""
        timeout = self.job.spec.timeout
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relay_peer_changes)
                while True:
                    await trio.sleep(min(timeout, SILENCE_CHECK))
                    cancel_silent(list(self._requests.values()), trio.current_time(), timeout)

    async def _relay_peer_changes(self) -> None:
        while True:
            await self._peers_changed()
            self._roster.notify()

    async def _drained(self, batch: Batch[Target]) -> None:
        """Wait until every chunk received for `batch` has been verified and written."""
        while not batch.drained:
            await self._written.wait()

    def _lose(self, source: Source, reason: str) -> None:
        """The session broke: stop using it, but take the peer back if it reconnects."""
        if self._lost.get(source.peer_id) is not source:
            self._lost[source.peer_id] = source
            self.job.transfer.peers[source.peer_id].dropped = reason
            _log.info("fetch %s: lost peer %s: %s", self.job.spec.name, source.peer_id, reason)

    def _drop(self, peer: str, reason: str) -> None:
        """The peer misbehaved: never ask it again during this fetch."""
        if self.schedule.drop(peer):
            self.job.transfer.peers[peer].dropped = reason
            self.warnings.append(f"dropped peer {self.job.name_of(peer)}: {reason}")
            _log.warning("fetch %s: dropped peer %s: %s", self.job.spec.name, peer, reason)


def cancel_silent(requests: Iterable[_Open], now: float, timeout: float) -> None:
    """Cancel each request whose peer has sent less than SILENT_BYTES in the last `timeout` seconds.

    Silence is the peer's, not the request's: a peer answers its requests one after
    another, so a request queued behind MiBs of runs (a rate-capped peer, or this
    daemon's own cap) hears nothing of its own while the peer is busy. Bytes, not
    whole runs, count: a 4 MiB run under a 1 MB/s cap takes 4 s to arrive.
    """
    for request in requests:
        heard = request.source.bytes_in
        if heard - request.heard >= SILENT_BYTES:
            request.heard, request.since = heard, now
        elif now - request.since >= timeout:
            request.scope.cancel()
