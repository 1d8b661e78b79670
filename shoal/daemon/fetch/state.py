"""The live state of a fetch, what it reports, and what it returns.

Read by `shoal status`, by progress reports and by the TUI; written only by
the fetch engine, in the event loop (the busy-time counters also from its
worker threads, which only ever add to them).
"""

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trio

from shoal.daemon.fetch.local_changes import ConflictLog
from shoal.daemon.model import VersionInfo, VersionQuery


@dataclass(frozen=True, slots=True)
class FetchSpec:
    name: str
    version: str | None
    dest: Path
    include: tuple[str, ...] = ()
    from_peer: str | None = None
    timeout: float = 30.0
    subset: str | None = None
    #: Keep what the user changed in DEST since the last fetch (a subscription's update).
    keep_local: bool = False
    #: Hash every file DEST already holds instead of trusting a matching stat.
    verify: bool = False
    #: Give up looking for the version once every trusted peer has been tried (no --timeout given).
    fail_fast: bool = False

    @property
    def partial(self) -> bool:
        """Whether the fetch selects only part of the version."""
        return bool(self.include) or self.subset is not None

    @property
    def query(self) -> VersionQuery:
        """The version this fetch asks for, as the resolver takes it."""
        return VersionQuery(
            self.name, self.version, timeout=self.timeout, from_peer=self.from_peer, fail_fast=self.fail_fast
        )


@dataclass(slots=True)
class PeerStats:
    received: int = 0
    chunks: int = 0
    dropped: str | None = None


@dataclass(slots=True)
class Busy:
    """Seconds spent so far in each local stage of a fetch, as measured."""

    hashing: float = 0.0
    disk_write: float = 0.0
    disk_read: float = 0.0


#: A stage busy for this share of an interval limits the transfer; so does a rate cap
#: when the data arrives at this share of it.
BUSY_SHARE = 0.8

#: The bottleneck while no connected peer serves what the fetch still needs.
NO_PEER = "waiting for peers"

#: Seconds of arrivals a rate cap is judged over: a capped sender pays for, then sends, a
#: group of chunks at a time, so what arrives at 2 MB/s comes in bursts seconds apart.
CAP_WINDOW = 6.0
#: Data arriving at this share of a cap, over CAP_WINDOW, is held back by it.
CAP_SHARE = 0.7


@dataclass(slots=True)
class Transfer:
    """Live state of one fetch, read by status and progress reports."""

    spec: FetchSpec
    started: float = field(default_factory=time.monotonic)
    phase: str = "resolving"
    version: VersionInfo | None = None
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_received: int = 0
    bytes_reused: int = 0
    files_total: int = 0
    files_done: int = 0
    files_written: int = 0
    entries_seen: int = 0
    #: Seconds from the start of the fetch to the first chunk received from a peer.
    first_byte: float | None = None
    paused: bool = False
    busy: "Busy" = field(default_factory=lambda: Busy())
    bottleneck: str = NO_PEER
    #: What the fetch waits for while nothing moves for want of a peer, in words; None while it moves.
    waiting: str | None = None
    _resumed: trio.Event = field(default_factory=trio.Event)
    _busy_mark: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    #: Subtrees already fetched and checked: tree id -> (bytes, files, entries below, depth checked at).
    subtrees: dict[bytes, tuple[int, int, int, int]] = field(default_factory=dict)
    peers: dict[str, PeerStats] = field(default_factory=dict)
    #: Changes in DEST a keep_local update kept rather than overwrote.
    conflicts: ConflictLog = field(default_factory=ConflictLog)
    #: Worker processes assembling the files (split.py); 0: the daemon itself.
    workers: int = 0
    _rate_mark: tuple[float, int] = (0.0, 0)
    #: (time, bytes received) over the last CAP_WINDOW seconds.
    _arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    #: bytes_done when stalled() last looked (-1: never).
    _done_mark: int = -1
    rate: float = 0.0

    def pause(self) -> None:
        """Stop asking peers for more; requests already open finish."""
        if not self.paused:
            self.paused = True
            self._resumed = trio.Event()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    def sample_rate(self, ours: int, theirs: int) -> None:
        """Measure the rate and the bottleneck since the last sample, given the caps (bytes/s,
        0: none) of this daemon and of the peers serving the fetch on what it may receive."""
        now = time.monotonic()
        last_t, last_b = self._rate_mark
        if last_t and now > last_t:
            instant = (self.bytes_received - last_b) / (now - last_t)
            self.rate = instant if not self.rate else 0.5 * self.rate + 0.5 * instant
        self._rate_mark = (now, self.bytes_received)
        self._sample_bottleneck(now, self._window_rate(now), {"rate limit (receiver)": ours, "rate limit (sender)": theirs})

    def _window_rate(self, now: float) -> float:
        """Bytes/s received over the last CAP_WINDOW seconds (as far back as samples go)."""
        window = self._arrivals
        window.append((now, self.bytes_received))
        while len(window) > 2 and window[1][0] <= now - CAP_WINDOW:
            window.popleft()
        then, before = window[0]
        return (self.bytes_received - before) / (now - then) if now > then else 0.0

    def stalled(self) -> bool:
        """Whether nothing moved since the last call: no byte placed, from peers or from local data."""
        moved = self.bytes_done != self._done_mark
        self._done_mark = self.bytes_done
        return not moved

    def starve(self, why: str) -> None:
        """No connected peer serves what the fetch needs: no rate, no ETA, and `why` instead."""
        self.waiting = why
        self.rate = 0.0
        self.bottleneck = NO_PEER

    def _sample_bottleneck(self, now: float, received: float, caps: dict[str, int]) -> None:
        """Name the stage that limited the transfer since the last sample, from measured busy time.

        The writer thread's time hashing and writing, and the planner's time
        reading local data, are measured; a stage busy most of the interval is
        the bottleneck. Otherwise chunks were not arriving fast enough: a rate
        cap, this daemon's or the senders', when they arrived (`received`
        bytes/s over CAP_WINDOW) near the lower of the two, else the network,
        or no peer at all.
        """
        then, hashing, writing, reading = self._busy_mark
        busy = self.busy
        self._busy_mark = (now, busy.hashing, busy.disk_write, busy.disk_read)
        if not then or now <= then:
            return
        span = now - then
        shares = {
            "hashing": (busy.hashing - hashing) / span,
            "disk write": (busy.disk_write - writing) / span,
            "disk read": (busy.disk_read - reading) / span,
        }
        stage, share = max(shares.items(), key=lambda item: item[1])
        if self.paused:
            self.bottleneck = "paused"
        elif self.phase in ("resolving",) or not self.peers or all(s.dropped for s in self.peers.values()):
            self.bottleneck = NO_PEER
        elif share >= BUSY_SHARE:
            self.bottleneck = stage
        else:
            limit, cap = min(((name, cap) for name, cap in caps.items() if cap), key=lambda c: c[1], default=("", 0))
            self.bottleneck = limit if cap and received >= CAP_SHARE * cap else "network"

    def to_json(self) -> dict:
        left = self.bytes_total - self.bytes_done
        return {
            "name": self.spec.name,
            "dest": str(self.spec.dest),
            "phase": self.phase,
            "version": self.version.to_json() if self.version else None,
            "bytes_total": self.bytes_total,
            "bytes_done": self.bytes_done,
            "bytes_received": self.bytes_received,
            "bytes_reused": self.bytes_reused,
            "files_total": self.files_total,
            "files_done": self.files_done,
            "rate": round(self.rate),
            "eta": round(left / self.rate, 1) if self.rate > 0 and left > 0 and self.waiting is None else None,
            "waiting": self.waiting,
            "elapsed": round(time.monotonic() - self.started, 3),
            "peers": {p: {"received": s.received, "dropped": s.dropped} for p, s in self.peers.items()},
            "paused": self.paused,
            "bottleneck": self.bottleneck,
            "first_byte": round(self.first_byte, 3) if self.first_byte is not None else None,
            "workers": self.workers,
        }


@dataclass(frozen=True, slots=True)
class FetchResult:
    version: VersionInfo
    dest: str
    #: The files and bytes of what the fetch selected (the whole version, a subset, --include).
    files_total: int
    bytes_total: int
    #: Of those files, the ones this fetch wrote and the ones DEST already held.
    files_written: int
    files_present: int
    bytes_received: int
    bytes_reused: int
    seconds: float
    first_byte: float | None
    peers: dict[str, int]
    warnings: tuple[str, ...]
    #: Worker processes that assembled the files; 0: the daemon itself.
    workers: int = 0

    def to_json(self) -> dict:
        return {
            "version": self.version.to_json(),
            "dest": self.dest,
            "files_total": self.files_total,
            "bytes_total": self.bytes_total,
            "files_written": self.files_written,
            "files_present": self.files_present,
            "bytes_received": self.bytes_received,
            "bytes_reused": self.bytes_reused,
            "seconds": round(self.seconds, 3),
            "first_byte": round(self.first_byte, 3) if self.first_byte is not None else None,
            "peers": self.peers,
            "warnings": list(self.warnings),
            "workers": self.workers,
        }
