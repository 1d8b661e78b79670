"""Which peer asks for which batch of chunks: the network stage's decisions, free of I/O.

A batch holds runs (consecutive chunks of one file), each named by its first
chunk id: "chunk" below means such a run, asked for and delivered whole.
A batch's life: queued → outstanding (asked of a peer) → in the endgame, once
nothing is queued, asked of a second peer too → drained (every chunk received
has been verified and written) → released by each peer serving it: done when
no chunk is pending, else queued again, at the front, once no peer serves it.
The puller (puller.py) feeds events in and acts on what comes back; nothing
here waits, reads a clock or touches a socket, so every path is unit-tested.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from shoal.daemon.fetch.errors import PeerMisbehaved
from shoal.protocol.wire.messages import Run

T = TypeVar("T")

#: A batch is asked of at most this many peers at once: a duplicate in the endgame.
ENDGAME_COPIES = 2


@dataclass(slots=True, eq=False)
class Batch(Generic[T]):
    """Chunks to request in one call, and where each one goes."""

    #: Where each chunk not yet received goes (several places for a repeated chunk).
    targets: dict[bytes, list[T]] = field(default_factory=dict)
    #: Every chunk of the batch with its size, as the manifest declares it.
    sizes: dict[bytes, int] = field(default_factory=dict)
    #: Chunks not yet received, or received and found not to match their id.
    pending: set[bytes] = field(default_factory=set)
    serving: set[str] = field(default_factory=set)
    refused_by: set[str] = field(default_factory=set)
    #: Peers that sent a chunk whose bytes do not match its id.
    liars: set[str] = field(default_factory=set)
    #: Chunks received and accepted, still being verified and written.
    writing: int = 0
    #: Each run by its first id (what `targets`, `sizes` and `pending` are keyed by).
    runs: dict[bytes, Run] = field(default_factory=dict)
    #: Chunks and bytes in all its runs.
    chunks: int = 0
    total: int = 0

    def add(self, cid: bytes, size: int, target: T) -> None:
        self.targets.setdefault(cid, []).append(target)
        self.pending.add(cid)
        self.sizes[cid] = size

    def add_run(self, run: Run, target: T) -> bool:
        """Add `run`, to be written at `target`; False (and nothing added) if another run
        of the batch starts with the same chunk: a request names each run by its first id.
        The same run again (the same content at two places) is fetched once."""
        key = run.ids[0]
        known = self.runs.get(key)
        if known is not None and known != run:
            return False
        if known is None:
            self.runs[key] = run
            self.chunks += len(run.ids)
            self.total += run.total
        self.add(key, run.total, target)
        return True

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def drained(self) -> bool:
        """Every chunk accepted so far has been verified and written."""
        return self.writing == 0


class Idle(Enum):
    """What a peer with room for a request does when there is no batch for it."""

    WAIT = "wait"  # ask again after the next change
    STOP = "stop"  # dropped, or nothing is left to fetch


class Release(Enum):
    """What became of a batch a peer let go of."""

    DONE = "done"  # every chunk arrived
    REQUEUED = "requeued"  # chunks remain and no other peer serves it
    SHARED = "shared"  # another peer still serves it


@dataclass(frozen=True, slots=True)
class Receipt(Generic[T]):
    """A chunk taken off the wire: where it goes, and whose duplicate requests it ends."""

    targets: list[T]
    #: Other peers serving the batch, whose copies are no longer needed.
    cancel: frozenset[str]


class Scheduler(Generic[T]):
    """The batches of one fetch, from queued to done, and the peers serving them."""

    def __init__(self, window: int) -> None:
        #: Requests one peer may have open: the queue holds two windows per peer.
        self._window = window
        self._queue: list[Batch[T]] = []
        self._outstanding: list[Batch[T]] = []
        self._producing = True
        self._peers: set[str] = set()
        self.dropped: set[str] = set()

    # --- the queue ------------------------------------------------------------

    def has_room(self) -> bool:
        """Whether another batch may be queued: a bounded look-ahead keeps memory flat."""
        return len(self._queue) < 2 * self._window * max(1, len(self._peers))

    def add(self, batch: Batch[T]) -> None:
        """A batch is queued."""
        self._queue.append(batch)

    def close(self) -> None:
        """No more batches will be queued."""
        self._producing = False

    @property
    def finished(self) -> bool:
        """Nothing is queued, outstanding, or still to come."""
        return not self._producing and not self._queue and not self._outstanding

    def batches(self) -> Iterator[Batch[T]]:
        """Every batch not yet done, queued first."""
        yield from self._queue
        yield from self._outstanding

    # --- peers ----------------------------------------------------------------

    def join(self, peer: str) -> None:
        """`peer` has started serving this fetch."""
        self._peers.add(peer)

    def leave(self, peer: str) -> None:
        """`peer` has stopped: its session ended, or it was dropped."""
        self._peers.discard(peer)

    def drop(self, peer: str) -> bool:
        """`peer` misbehaved: never give it a batch again. Whether it was not dropped before."""
        if peer in self.dropped:
            return False
        self.dropped.add(peer)
        return True

    def take(self, peer: str) -> Batch[T] | Idle:
        """`peer` has room for a request: the batch to ask it for, or why there is none."""
        if peer in self.dropped:
            return Idle.STOP
        for i, batch in enumerate(self._queue):
            if peer not in batch.refused_by:
                del self._queue[i]
                self._outstanding.append(batch)
                batch.serving.add(peer)
                return batch
        if self.finished:
            return Idle.STOP
        if not self._producing and not self._queue:
            duplicate = self._endgame(peer)
            if duplicate is not None:
                duplicate.serving.add(peer)
                return duplicate
        return Idle.WAIT

    def _endgame(self, peer: str) -> Batch[T] | None:
        """An outstanding batch `peer` could race its only server for."""
        for batch in self._outstanding:
            if (
                len(batch.serving) < ENDGAME_COPIES
                and batch.serving
                and peer not in batch.serving
                and peer not in batch.refused_by
                and batch.pending
            ):
                return batch
        return None

    # --- replies --------------------------------------------------------------

    def receive(self, batch: Batch[T], peer: str, cid: bytes, size: int) -> Receipt[T] | None:
        """A chunk of `size` bytes arrived from `peer`; None if another peer's copy came first."""
        if cid not in batch.sizes:
            raise PeerMisbehaved(f"sent chunk {cid.hex()[:16]}, which was not asked for")
        if size != batch.sizes[cid]:
            raise PeerMisbehaved(f"sent chunk {cid.hex()[:16]} of {size} bytes; the manifest says {batch.sizes[cid]}")
        if cid not in batch.pending:
            return None
        batch.pending.discard(cid)
        batch.writing += 1
        cancel = frozenset(batch.serving - {peer}) if not batch.pending else frozenset()
        return Receipt(batch.targets.pop(cid), cancel)

    def written(self, batch: Batch[T], peer: str, cid: bytes, targets: list[T], good: bool) -> None:
        """A chunk accepted from `peer` was verified: written if `good`, else pending again."""
        batch.writing -= 1
        if not good:
            batch.pending.add(cid)
            batch.targets[cid] = targets
            batch.liars.add(peer)

    def refused(self, batch: Batch[T], peer: str) -> bool:
        """`peer` lacks some of `batch`'s chunks; whether every peer serving the fetch lacks them."""
        batch.refused_by.add(peer)
        return self._peers - self.dropped <= batch.refused_by

    def release(self, batch: Batch[T], peer: str) -> Release:
        """`peer` is done with `batch` (drained): retire it, queue it again, or leave it to its other server."""
        batch.serving.discard(peer)
        if batch.serving and batch.pending:
            return Release.SHARED
        if batch in self._outstanding:
            self._outstanding.remove(batch)
        if not batch.pending:
            return Release.DONE
        self._queue.insert(0, batch)
        return Release.REQUEUED
