"""What a daemon and its fetch worker processes tell each other, over the worker's stdin and stdout.

Each message is one msgpack array whose first item names it. The daemon sends
SETUP once, then TASKS (files its planner dealt to this worker), WALKED once the
whole manifest has passed its checks (no file is renamed into DEST before),
PAUSE and RESUME as the user asks, and END when the plan is complete; the worker
sends PROGRESS (its counters, whole) now and then, and DONE or FAILED last.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import trio

from shoal.daemon.fetch.job import FileTask
from shoal.daemon.fetch.state import FetchSpec, PeerStats, Transfer
from shoal.protocol.format.objects import FileEntry


class Say:
    """The first item of each message: what it says."""

    SETUP = "setup"
    TASKS = "tasks"
    WALKED = "walked"
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"
    PROGRESS = "progress"
    DONE = "done"
    FAILED = "failed"


#: The most bytes one message may take: a step of the planner's files, or a worker's progress with its peers.
MAX_MESSAGE = 64 * 1024 * 1024
READ_SIZE = 256 * 1024


class LinkClosed(Exception):
    """The other end of the link closed it."""


class Link:
    """Messages over a pair of byte streams."""

    def __init__(self, receive: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        self._receive = receive
        self._send = send
        self._unpacker = msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=MAX_MESSAGE)
        self._lock = trio.Lock()

    async def send(self, *message: Any) -> None:
        data = msgpack.packb(list(message), use_bin_type=True)
        async with self._lock:
            await self._send.send_all(data)

    async def receive(self) -> list[Any]:
        """The next message; LinkClosed once the other end has closed its side."""
        while True:
            for message in self._unpacker:
                if type(message) is not list or not message or type(message[0]) is not str:
                    raise ValueError(f"malformed link message {message!r:.80}")
                return message
            data = await self._receive.receive_some(READ_SIZE)
            if not data:
                raise LinkClosed()
            self._unpacker.feed(data)


@dataclass(frozen=True, slots=True)
class Setup:
    """What a worker needs to assemble the files it is dealt."""

    #: The daemon's identity: the worker opens its own lanes to the peers with it.
    key: bytes
    index: Path
    spec: FetchSpec
    version_id: bytes
    selection: bytes
    old_root: bytes | None
    reuse_unchanged: bool
    resuming: bool
    #: (peer id, name, address, lane) of each peer serving the version.
    peers: tuple[tuple[str, str, str, int], ...]

    def fields(self) -> list[Any]:
        s = self.spec
        spec = [s.name, s.version, str(s.dest), list(s.include), s.from_peer, s.timeout, s.subset, s.keep_local, s.verify]
        return [
            self.key, str(self.index), spec, self.version_id, self.selection, self.old_root,
            self.reuse_unchanged, self.resuming, [list(p) for p in self.peers],
        ]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> "Setup":
        key, index, spec, version_id, selection, old_root, reuse, resuming, peers = fields
        name, version, dest, include, from_peer, timeout, subset, keep_local, verify = spec
        return cls(
            key, Path(index),
            FetchSpec(name, version, Path(dest), tuple(include), from_peer, timeout, subset, keep_local, verify),
            version_id, selection, old_root, reuse, resuming, tuple(tuple(p) for p in peers),
        )


def task_fields(task: FileTask) -> list[Any]:
    e = task.entry
    return [list(task.parts), e.size, e.id, e.executable, e.mode, task.partial, task.fresh]


def task_from(fields: list[Any]) -> FileTask:
    parts, size, oid, executable, mode, partial, fresh = fields
    entry = FileEntry(parts[-1], size, oid, executable, mode)
    return FileTask(tuple(parts), entry, partial, size, fresh)


def snapshot(transfer: Transfer) -> dict[str, Any]:
    """A worker's counters, whole; `first` is when its first chunk came (time.monotonic(), system-wide)."""
    t = transfer
    first = t.started + t.first_byte if t.first_byte is not None else None
    return {
        "done": t.bytes_done, "received": t.bytes_received, "reused": t.bytes_reused,
        "files": t.files_done, "written": t.files_written, "first": first,
        "busy": [t.busy.hashing, t.busy.disk_write, t.busy.disk_read],
        "peers": {p: [s.received, s.chunks, s.dropped] for p, s in t.peers.items()},
    }


class Progress:
    """Adds what each worker's latest snapshot adds to the daemon's Transfer of the fetch."""

    def __init__(self, transfer: Transfer) -> None:
        self._transfer = transfer
        self._last: dict[int, dict[str, Any]] = {}

    def apply(self, worker: int, new: dict[str, Any]) -> None:
        old = self._last.get(worker, _EMPTY)
        self._last[worker] = new
        t = self._transfer
        t.bytes_done += new["done"] - old["done"]
        t.bytes_received += new["received"] - old["received"]
        t.bytes_reused += new["reused"] - old["reused"]
        t.files_done += new["files"] - old["files"]
        t.files_written += new["written"] - old["written"]
        t.busy.hashing += new["busy"][0] - old["busy"][0]
        t.busy.disk_write += new["busy"][1] - old["busy"][1]
        t.busy.disk_read += new["busy"][2] - old["busy"][2]
        if new["first"] is not None:
            first = max(0.0, new["first"] - t.started)
            t.first_byte = first if t.first_byte is None else min(t.first_byte, first)
        for peer, (received, chunks, dropped) in new["peers"].items():
            before = old["peers"].get(peer, (0, 0, None))
            stats = t.peers.setdefault(peer, PeerStats())
            stats.received += received - before[0]
            stats.chunks += chunks - before[1]
            if dropped is not None:
                stats.dropped = dropped


_EMPTY: dict[str, Any] = {
    "done": 0, "received": 0, "reused": 0, "files": 0, "written": 0, "first": None,
    "busy": [0.0, 0.0, 0.0], "peers": {},
}
