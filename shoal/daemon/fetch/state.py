"""The live state of a fetch, what it reports, and what it returns.

Read by `shoal status`, by progress reports and by the TUI; written only by
the fetch engine, in the event loop (the busy-time counters also from its
worker threads, which only ever add to them).
"""

import time
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

    @property
    def partial(self) -> bool:
        """Whether the fetch selects only part of the version."""
        return bool(self.include) or self.subset is not None

    @property
    def query(self) -> VersionQuery:
        """The version this fetch asks for, as the resolver takes it."""
        return VersionQuery(self.name, self.version, timeout=self.timeout, from_peer=self.from_peer)


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


#: A stage busy for this share of an interval limits the transfer.
BUSY_SHARE = 0.8


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
    bottleneck: str = "waiting for peers"
    _resumed: trio.Event = field(default_factory=trio.Event)
    _busy_mark: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    #: Subtrees already fetched and checked: tree id -> (bytes, files, entries below, depth checked at).
    subtrees: dict[bytes, tuple[int, int, int, int]] = field(default_factory=dict)
    peers: dict[str, PeerStats] = field(default_factory=dict)
    #: Changes in DEST a keep_local update kept rather than overwrote.
    conflicts: ConflictLog = field(default_factory=ConflictLog)
    _rate_mark: tuple[float, int] = (0.0, 0)
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

    def sample_rate(self) -> None:
        now = time.monotonic()
        last_t, last_b = self._rate_mark
        if last_t and now > last_t:
            instant = (self.bytes_received - last_b) / (now - last_t)
            self.rate = instant if not self.rate else 0.5 * self.rate + 0.5 * instant
        self._rate_mark = (now, self.bytes_received)
        self._sample_bottleneck(now)

    def _sample_bottleneck(self, now: float) -> None:
        """Name the stage that limited the transfer since the last sample, from measured busy time.

        The writer thread's time hashing and writing, and the planner's time
        reading local data, are measured; a stage busy most of the interval is
        the bottleneck. Otherwise chunks were not arriving fast enough: the
        network, or no peer at all.
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
            self.bottleneck = "waiting for peers"
        elif share >= BUSY_SHARE:
            self.bottleneck = stage
        else:
            self.bottleneck = "network"

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
            "eta": round(left / self.rate, 1) if self.rate > 0 and left > 0 else None,
            "elapsed": round(time.monotonic() - self.started, 3),
            "peers": {p: {"received": s.received, "dropped": s.dropped} for p, s in self.peers.items()},
            "paused": self.paused,
            "bottleneck": self.bottleneck,
            "first_byte": round(self.first_byte, 3) if self.first_byte is not None else None,
        }


@dataclass(frozen=True, slots=True)
class FetchResult:
    version: VersionInfo
    dest: str
    files_written: int
    files_total: int
    bytes_received: int
    bytes_reused: int
    seconds: float
    first_byte: float | None
    peers: dict[str, int]
    warnings: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "version": self.version.to_json(),
            "dest": self.dest,
            "files_written": self.files_written,
            "files_total": self.files_total,
            "bytes_received": self.bytes_received,
            "bytes_reused": self.bytes_reused,
            "seconds": round(self.seconds, 3),
            "first_byte": round(self.first_byte, 3) if self.first_byte is not None else None,
            "peers": self.peers,
            "warnings": list(self.warnings),
        }
