"""An in-memory stand-in for shoal.client.aio.ControlClient, and realistic data for it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from textual.pilot import Pilot

from shoal.client.aio import Connected, Disconnected, Signal
from shoal.errors import DaemonError, DaemonNotRunning
from shoal.protocol.control import Event
from shoal.protocol.format.identity import PeerId

NOW = 1_790_000_000


def peer_id(n: int) -> str:
    return str(PeerId(hashlib.sha256(f"peer-{n}".encode()).digest()))


def peer(n: int, *, state: str = "offline", name: str | None = None) -> dict[str, Any]:
    pid = peer_id(n)
    trusted = state != "pending"
    return {
        "peer_id": pid,
        "short": pid[:7],
        "name": name if name is not None else (f"node-{n}" if trusted else None),
        "trusted": trusted,
        "state": "pending" if state == "pending" else "offline",
        "online": state == "online",
        "address": f"10.0.{n // 250}.{n % 250 + 1}:7447" if state != "offline" else None,
        "addresses": [f"10.0.{n // 250}.{n % 250 + 1}:7447"],
        "last_seen": NOW - 37 * n,
        "bytes_in": 3_100_000_000 * (n % 7),
        "bytes_out": 870_000_000 * (n % 5),
    }


def version(name: str, seq: int, *, size: int = 4_200_000_000, files: int = 1_024) -> dict[str, Any]:
    digest = hashlib.sha256(f"{name}@{seq}".encode()).hexdigest()
    return {
        "name": name, "seq": seq, "id": digest, "root": digest, "parents": [], "author": digest,
        "time": NOW - 3600 * (10 - seq), "message": f"nightly export {seq}", "size": size, "files": files,
    }


def local_dataset(name: str, seq: int, **kwargs: int) -> dict[str, Any]:
    return {"name": name, "path": f"/data/{name}", "head": version(name, seq, **kwargs), "versions": seq}


def remote_dataset(name: str, seq: int, holder: dict[str, Any], **kwargs: int) -> dict[str, Any]:
    return {"name": name, "head": version(name, seq, **kwargs), "peer_id": holder["peer_id"], "peer_name": holder["name"]}


def watch(name: str, path: str, state: str = "idle", **extra: Any) -> dict[str, Any]:
    return {"name": name, "path": path, "added": NOW - 86_400, "state": state, "detail": None, "pending": 0,
            "last_shared": NOW - 1_800, **extra}


def subscription(name: str, state: str = "current", **extra: Any) -> dict[str, Any]:
    return {"name": name, "dest": f"/data/{name}", "added": NOW - 86_400, "author": None, "state": state,
            "version": None, "updated": None, "transfer": None, "last_fetch": None, "last_error": None,
            "retry_in": None, "conflicts": [], **extra}


#: What `browse` lists for every dataset: a dict is a directory, an int a file's size, a str a symlink's target.
FAKE_TREE: dict[str, Any] = {
    "README.md": 1_200,
    "latest": "train/shard-01.parquet",
    "prepare.sh": -310,  # negative: an executable file
    "train": {
        "shard-00.parquet": 500_000_000,
        "shard-01.parquet": 480_000_000,
        "images": {"cat-0001.jpg": 31_000, "dog-0001.jpg": 28_500},
    },
    "val": {"shard-00.parquet": 52_000_000},
}


def tree_entries(tree: dict[str, Any]) -> list[dict[str, Any]]:
    entries = []
    for name, node in sorted(tree.items()):
        if isinstance(node, dict):
            entries.append({"name": name, "type": "dir", "size": 0, "executable": False, "target": None})
        elif isinstance(node, str):
            entries.append({"name": name, "type": "symlink", "size": len(node), "executable": False, "target": node})
        else:
            entries.append({"name": name, "type": "file", "size": abs(node), "executable": node < 0, "target": None})
    return entries


class FakeClient:
    """Answers control calls from dictionaries; tests push signals and read `calls`."""

    def __init__(
        self,
        peers: Sequence[dict[str, Any]] = (),
        local: Sequence[dict[str, Any]] = (),
        remote: Sequence[dict[str, Any]] = (),
        *,
        up: bool = True,
    ) -> None:
        self.peers = list(peers)
        self.local = list(local)
        self.remote = list(remote)
        self.up = up
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: Running transfers by id, as the daemon's `status` has them; the transfer.* calls act on these.
        self.transfers: dict[int, dict[str, Any]] = {}
        #: What `watches` and `subscription.list` answer.
        self.watches: list[dict[str, Any]] = []
        self.subscriptions: list[dict[str, Any]] = []
        #: The tree every dataset's versions have; set `browse_error` to make `browse` fail with it.
        self.tree = FAKE_TREE
        self.browse_error: DaemonError | None = None
        #: What `events` answers: the daemon's last events, as `publish` numbers and keeps them.
        self.history: list[dict[str, Any]] = []
        self.run = "run-1"
        self._seq = 0
        self._signals: asyncio.Queue[Signal] = asyncio.Queue()
        self.push(Connected() if up else Disconnected("cannot reach /tmp/x/control.sock: No such file", 1.0))

    def push(self, signal: Signal) -> None:
        self._signals.put_nowait(signal)

    def event(self, topic: str, **data: Any) -> None:
        self.push(Event(topic, data))

    def publish(self, topic: str, data: dict[str, Any], *, live: bool = True, when: int = NOW) -> None:
        """An event as the daemon publishes it: numbered, kept for `events`, and (if `live`) sent to the app."""
        self._seq += 1
        self.history.append({"seq": self._seq, "time": when, "topic": topic, "data": data})
        if live:
            self.push(Event(topic, data, self._seq))

    def start_transfer(self, tid: int, name: str, **state: Any) -> dict[str, Any]:
        """A running transfer, announced with the `started` and one `progress` event as the daemon does."""
        transfer = {"name": name, "dest": f"/scratch/{name}", "phase": "data", "bytes_total": 1_000_000_000,
                    "bytes_done": 250_000_000, "rate": 40_000_000, "eta": 19.0, "peers": {}, "paused": False,
                    "bottleneck": "network", **state}
        self.transfers[tid] = transfer
        self.event("transfers", id=tid, event="started", name=name, dest=transfer["dest"])
        self.event("transfers", id=tid, event="progress", **transfer)
        return transfer

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def signals(self) -> AsyncIterator[Signal]:
        while True:
            yield await self._signals.get()

    async def call(
        self, method: str, params: dict[str, Any] | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        params = params or {}
        self.calls.append((method, params))
        if not self.up:
            raise DaemonNotRunning("the daemon is not running")
        if method == "id":
            return {"peer_id": peer_id(0), "short": peer_id(0)[:7], "listen": "0.0.0.0:7447"}
        if method == "peers":
            return {"peers": self.peers}
        if method == "status":
            return {"transfers": [{"id": tid, **transfer} for tid, transfer in self.transfers.items()]}
        if method == "events":
            return {"run": self.run, "events": self.history[-200:]}
        if method == "ls":
            return {"datasets": self.remote if params.get("remote") else self.local}
        if method == "log":
            head = next((d["head"] for d in self.local + self.remote if d["name"] == params["name"]), None)
            if head is None:
                raise DaemonError(f"no dataset {params['name']!r}", code="not-found", exit_code=4)
            return {"name": params["name"], "versions": [version(head["name"], s) for s in range(head["seq"], 0, -1)]}
        if method == "watches":
            return {"watches": self.watches}
        if method == "subscription.list":
            return {"subscriptions": self.subscriptions}
        if method == "browse":
            return self._browse(params)
        if method in ("transfer.pause", "transfer.resume", "transfer.cancel"):
            return self._control_transfer(method, params["id"])
        if method in ("trust", "untrust"):
            return {"peer": next(p for p in self.peers if p["peer_id"] == params["peer_id"])}
        return {}


    def _browse(self, params: dict[str, Any]) -> dict[str, Any]:
        """Like the daemon: the version asked for (seq, id prefix, or the latest), the entries of `path`."""
        if self.browse_error is not None:
            raise self.browse_error
        name = params["name"]
        heads = [d["head"] for d in self.local + self.remote if d["name"] == name]
        if not heads:
            raise DaemonError(f"no dataset {name!r}", code="not-found", exit_code=4)
        latest = max(head["seq"] for head in heads)
        versions = [version(name, seq) for seq in range(latest, 0, -1)]
        wanted = str(params.get("version") or "latest")
        chosen = next((v for v in versions if wanted == "latest" or wanted == str(v["seq"]) or v["id"].startswith(wanted)), None)
        if chosen is None:
            raise DaemonError(f"no version {wanted} of {name}", code="not-found", exit_code=4)
        node: Any = self.tree
        path = str(params.get("path") or "").strip("/")
        for part in path.split("/") if path else []:
            if not isinstance(node, dict) or part not in node:
                raise DaemonError(f"no path {path!r} in {name}", code="not-found", exit_code=4)
            node = node[part]
        if not isinstance(node, dict):
            raise DaemonError(f"{path!r} is not a directory", code="usage", exit_code=2)
        entries = tree_entries(node)
        limit = int(params.get("limit", 10_000))
        return {"version": chosen, "path": path, "total": len(entries), "entries": entries[:limit]}

    def _control_transfer(self, method: str, tid: int) -> dict[str, Any]:
        """Like the daemon: act, publish the event, answer with the transfer as it is now."""
        transfer = self.transfers.get(tid)
        if transfer is None:
            raise DaemonError(f"no transfer {tid} is running; `shoal status` lists them", code="not-found", exit_code=4)
        if method == "transfer.cancel":
            del self.transfers[tid]
            reason = f"the fetch of {transfer['name']} was cancelled; run it again to resume from what was verified"
            self.event("transfers", id=tid, event="failed", name=transfer["name"], reason=reason)
        else:
            transfer["paused"] = method == "transfer.pause"
            self.event("transfers", id=tid, event="paused" if transfer["paused"] else "resumed", **transfer)
        return {"transfer": {"id": tid, **transfer}}


def demo_client(*, up: bool = True) -> FakeClient:
    """A small lab: a few peers in every state, datasets here and there, two transfers."""
    peers = [
        {**peer(1, state="online", name="gpu-box-a"), "rates": {"up": 0, "down": 80_000_000}},
        peer(2, state="online", name="gpu-box-b"),
        peer(3, name="laptop-mira"),
        peer(4, state="pending"),
        {**peer(5, state="online", name="nas"), "rates": {"up": 1_200_000, "down": 150_000_000}},
    ]
    local = [
        local_dataset("imagenet-subset", 7, size=12_800_000_000, files=128_000),
        local_dataset("tokenizer-corpus", 3, size=860_000_000, files=42),
        local_dataset("eval-suite", 12, size=95_000_000, files=310),
    ]
    remote = [
        remote_dataset("imagenet-subset", 8, peers[0], size=12_900_000_000, files=128_400),
        remote_dataset("imagenet-subset", 8, peers[4], size=12_900_000_000, files=128_400),
        remote_dataset("speech-commands", 2, peers[1], size=2_300_000_000, files=105_829),
        remote_dataset("robot-trajectories", 5, peers[4], size=48_000_000_000, files=9_600),
    ]
    client = FakeClient(peers, local, remote, up=up)
    client.watches = [
        watch("checkpoints", "/runs/exp42/checkpoints", "waiting", pending=14,
              detail="/runs/exp42/checkpoints/step-9000.pt is open for writing"),
        watch("eval-suite", "/data/eval-suite", last_shared=NOW - 7_200),
        watch("notes", "/home/mira/notes", "error", last_shared=None,
              detail="/home/mira/notes: No such file or directory"),
    ]
    client.subscriptions = [
        subscription("imagenet-subset", "pending", version=version("imagenet-subset", 7), updated=NOW - 18_000),
        subscription("robot-trajectories", "updating", transfer=1),
        subscription("speech-commands", "failed", version=version("speech-commands", 1), updated=NOW - 90_000,
                     last_error="no connected peer offers speech-commands@2", retry_in=38.0),
        subscription("tokenizer-corpus", version=version("tokenizer-corpus", 3), updated=NOW - 600,
                     conflicts=[{"path": "vocab.txt", "change": "edited", "kept_as": "vocab.txt.shoal-conflict-3"}]),
    ]
    return client


async def until(pilot: Pilot[int], condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the UI never reached the expected state"
        await pilot.pause(0.01)


def cell(app: Any, table: str, key: str, column: int) -> str:
    """The text of one cell; empty while the row is not there yet, so `until` can wait for it."""
    if key not in app.table(table)._shown:
        return ""
    return str(app.table(table).get_row(key)[column])


def logged(app: Any) -> list[str]:
    """The lines of the Events tab, without the time each starts with."""
    return [line.split("  ", 1)[1] for line in app.events_log.lines]
