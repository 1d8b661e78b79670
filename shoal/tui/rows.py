"""Pure translation of control-API maps into table rows and event-log lines.

Kept apart from the widgets so the shapes the daemon sends are checked in one
place, and every `.get` with a default marks a field a daemon may not send yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.text import Text

from shoal.client.fmt import format_count, format_duration, format_size, format_time

PEER_COLUMNS = ("name", "id", "address", "state", "last seen", "in", "out")
DATASET_COLUMNS = ("name", "where", "latest", "size", "versions", "holders")
TRANSFER_COLUMNS = ("dataset", "phase", "progress", "done / total", "rate", "eta", "bottleneck", "peers")
VERSION_COLUMNS = ("version", "id", "time", "size", "files", "message")
BROWSE_COLUMNS = ("name", "type", "size", "target")
WATCH_COLUMNS = ("dataset", "folder", "state", "pending", "last shared", "detail")
SUBSCRIPTION_COLUMNS = ("dataset", "folder", "state", "holds", "updated", "detail")

_STATE_STYLE = {"online": "green", "offline": "dim", "pending": "yellow", "trusted": "cyan"}
#: The daemon's measured bottleneck of a running transfer; a limit of a machine (its disks, its CPU, a
#: configured rate cap) stands out from the network's.
_BOTTLENECK_STYLE = {"paused": "yellow", "waiting for peers": "dim", "hashing": "magenta", "disk write": "magenta",
                     "disk read": "magenta", "rate limit (sender)": "magenta", "rate limit (receiver)": "magenta"}
#: Watch and subscription states: settled in green, trouble in red, waiting in yellow, busy in cyan.
_SYNC_STYLE = {"idle": "green", "current": "green", "error": "red", "failed": "red", "withdrawn": "red",
               "settling": "yellow", "waiting": "yellow", "pending": "yellow", "starting": "cyan", "sharing": "cyan",
               "updating": "cyan", "removed": "dim"}
#: Narrow enough that a long bottleneck ("rate limit (receiver)") leaves room for the peers at 120 columns.
BAR_WIDTH = 12
#: The peer layer reports sessions as online/offline; people say joined/left.
_PEER_CHANGE = {"online": "joined", "offline": "left"}

Row = tuple[str | Text, ...]


def peer_state(peer: dict[str, Any]) -> str:
    """online/offline/pending/trusted: a live session beats what the trust store says."""
    if peer.get("online"):
        return "online"
    return str(peer.get("state") or ("trusted" if peer.get("trusted") else "pending"))


def peer_label(peer: dict[str, Any]) -> str:
    return str(peer.get("name") or peer.get("short") or peer["peer_id"][:12])


def peer_row(peer: dict[str, Any]) -> Row:
    state = peer_state(peer)
    known = [*(peer.get("addresses") or ()), *(peer.get("announced") or ())]
    address = peer.get("address") or ", ".join(dict.fromkeys(known)) or "-"
    last_seen = peer.get("last_seen")
    return (
        str(peer.get("name") or "-"),
        str(peer.get("short") or peer["peer_id"][:12]),
        address,
        Text(state, style=_STATE_STYLE.get(state, "")),
        format_time(last_seen) if last_seen else "-",
        _traffic(peer.get("bytes_in") or 0, (peer.get("rates") or {}).get("down")),
        _traffic(peer.get("bytes_out") or 0, (peer.get("rates") or {}).get("up")),
    )


def _traffic(total: int, rate: int | None) -> str:
    """Bytes moved with this peer so far, and the current rate while something moves."""
    return f"{format_size(total)} · {format_size(rate)}/s" if rate else format_size(total)


def dataset_rows(local: Iterable[dict[str, Any]], remote: Iterable[dict[str, Any]]) -> dict[str, Row]:
    """One row per dataset name, merging our copy with every peer that offers one."""
    heads: dict[str, dict[str, Any]] = {}
    versions: dict[str, int] = {}
    holders: dict[str, list[str]] = {}
    is_local: set[str] = set()
    audiences: dict[str, list[str] | None] = {}
    for info in local:
        name = info["name"]
        heads[name] = info["head"]
        versions[name] = info.get("versions", 1)
        audiences[name] = info.get("audience")
        is_local.add(name)
    for info in remote:
        name = info["name"]
        if name not in heads or info["head"]["seq"] > heads[name]["seq"]:
            heads[name] = info["head"]
        versions[name] = max(versions.get(name, 0), info.get("versions", info["head"]["seq"]))
        holders.setdefault(name, []).append(str(info.get("peer_name") or info.get("peer_id", "?")[:12]))
    rows: dict[str, Row] = {}
    for name in sorted(heads):
        where = "local+remote" if name in is_local and name in holders else "local" if name in is_local else "remote"
        audience = audiences.get(name)
        if audience is not None:
            # Only a dataset limited to chosen peers says so: "local (to 2 peers)".
            where += f" (to {format_count(len(audience), 'peer')})"
        peers = holders.get(name, [])
        rows[name] = (
            name,
            where,
            f"@{heads[name]['seq']}",
            format_size(heads[name]["size"]),
            f"{versions[name]:,}",
            ", ".join(peers[:3]) + (f" +{len(peers) - 3}" if len(peers) > 3 else "") if peers else "-",
        )
    return rows


def existing_folder(
    name: str, local: Iterable[dict[str, Any]], fetched: Mapping[str, str], subscriptions: Iterable[dict[str, Any]]
) -> str | None:
    """The folder that holds dataset `name` on this machine, if any.

    The one it is shared from (or was first fetched into), else a folder a fetch left it in
    (a whole copy before a part, the newest first), else the last fetch's (`fetched`: a part
    `ls` does not list), else the one a subscription keeps current.
    """
    for info in local:
        if info["name"] != name:
            continue
        if info.get("path"):
            return str(info["path"])
        checkouts = sorted(info.get("checkouts") or (), key=lambda c: (not c.get("whole"), -c["version"]["seq"]))
        if checkouts:
            return str(checkouts[0]["path"])
    if name in fetched:
        return fetched[name]
    return next((str(sub["dest"]) for sub in subscriptions if sub["name"] == name and sub.get("dest")), None)


def version_row(version: dict[str, Any]) -> Row:
    """A version of the Versions screen; one that only changes subsets (`kind` "subsets")
    holds the same data as its parent, so it shows no size or file count of its own."""
    head = (f"@{version['seq']}", version["id"][:16], format_time(version["time"]))
    message = version.get("message") or ""
    if version.get("kind") == "subsets":
        return (*head, "", Text("subsets", style="italic"), Text(message, style="italic"))
    return (*head, format_size(version["size"]), f"{version['files']:,}", message)


def browse_row(entry: dict[str, Any]) -> Row:
    """One entry of a `browse` listing; directories end in / as in `ls -F`."""
    kind = entry.get("type", "file")
    name = entry["name"] + ("/" if kind == "dir" else "")
    if kind == "file" and entry.get("executable"):
        kind = "file, executable"
    size = format_size(int(entry.get("size") or 0)) if kind.startswith("file") else ""
    target = f"→ {entry['target']}" if entry.get("target") else ""
    return (Text(name, style="bold blue") if entry.get("type") == "dir" else name, kind, size, target)


def watch_row(watch: dict[str, Any]) -> Row:
    """One watched folder: what it is doing, and when it last became a version."""
    state = str(watch.get("state") or "-")
    last_shared = watch.get("last_shared")
    return (
        str(watch["name"]),
        str(watch.get("path") or "-"),
        Text(state, style=_SYNC_STYLE.get(state, "")),
        f"{int(watch.get('pending') or 0):,}",
        format_time(last_shared) if last_shared else "-",
        str(watch.get("detail") or "-"),
    )


def subscription_row(sub: dict[str, Any]) -> Row:
    """One subscription: the version its folder holds, and why it is not current when it is not."""
    state = str(sub.get("state") or "-")
    version = sub.get("version")
    updated = sub.get("updated")
    return (
        str(sub["name"]),
        str(sub.get("dest") or "-"),
        Text(state, style=_SYNC_STYLE.get(state, "")),
        f"@{version['seq']}" if version else "-",
        format_time(updated) if updated else "-",
        _subscription_detail(sub),
    )


def _subscription_detail(sub: dict[str, Any]) -> str:
    """The last error and the next retry; else the local changes updates kept; else the running transfer."""
    if sub.get("last_error"):
        retry = sub.get("retry_in")
        return f"{sub['last_error']}; retry in {format_duration(retry)}" if retry else str(sub["last_error"])
    kept = len(sub.get("conflicts") or ())
    if kept:
        return f"kept {kept} local change{'s' if kept != 1 else ''} (`shoal subscriptions`)"
    if sub.get("transfer") is not None:
        return f"transfer {sub['transfer']}"
    return "-"


def progress_bar(done: int, total: int) -> Text:
    fraction = min(done / total, 1.0) if total else 0.0
    filled = round(fraction * BAR_WIDTH)
    bar = Text("█" * filled, style="green")
    bar.append("░" * (BAR_WIDTH - filled), style="dim")
    bar.append(f" {fraction:4.0%}")
    return bar


class TransferTracker:
    """The live view of one transfer; per-peer rates come from successive progress events."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.id = data.get("id")
        self.name = str(data.get("name", "?"))
        self.phase = "starting"
        self.paused = bool(data.get("paused", False))
        self.bottleneck: str | None = data.get("bottleneck")
        self.bytes_done = 0
        self.bytes_total = 0
        self.rate = 0
        self.eta: float | None = None
        self.peer_rates: dict[str, float] = {}
        self._received: dict[str, int] = {}
        self._mark: float | None = None

    @property
    def running(self) -> bool:
        """Whether the daemon still runs it: only then can it be paused, resumed or cancelled."""
        return self.phase != "done" and not self.phase.startswith("failed")

    def update_state(self, data: dict[str, Any]) -> None:
        """Take the paused flag and the measured bottleneck from any transfer map (event or call result)."""
        if "paused" in data:
            self.paused = bool(data["paused"])
        if data.get("bottleneck"):
            self.bottleneck = str(data["bottleneck"])

    def update(self, data: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.phase = str(data.get("phase", self.phase))
        self.bytes_done = int(data.get("bytes_done", self.bytes_done))
        self.bytes_total = int(data.get("bytes_total", self.bytes_total))
        self.rate = int(data.get("rate") or 0)
        self.eta = data.get("eta")
        self.update_state(data)
        peers = data.get("peers") or {}
        elapsed = now - self._mark if self._mark is not None else 0.0
        for peer_id, stats in peers.items():
            received = int(stats.get("received", 0))
            if elapsed > 0:
                self.peer_rates[peer_id] = (received - self._received.get(peer_id, 0)) / elapsed
            self._received[peer_id] = received
        self._mark = now

    def finish(self, data: dict[str, Any], *, failed: str | None = None) -> None:
        """The transfer ended (`failed` says why, when it did): nothing moves any more."""
        if failed is not None:
            self.phase = f"failed: {failed}"
        else:
            self.phase = "done"
            fetched = int(data.get("bytes_received", 0)) + int(data.get("bytes_reused", 0))
            self.bytes_done = self.bytes_total = max(self.bytes_total, fetched)
            # The result counts each peer's bytes in full; the last progress report may be older.
            for peer_id, received in (data.get("peers") or {}).items():
                if isinstance(received, int):
                    self._received[peer_id] = received
        self.rate, self.eta = 0, None
        self.peer_rates.clear()

    def row(self, label: Callable[[str], str]) -> Row:
        """The table row; `label` names a peer id the way the peers table does.

        Per peer, the rate while the transfer runs; once it ended, what each peer sent.
        """
        if self.running:
            fastest_first = sorted(self.peer_rates.items(), key=lambda item: -item[1])
            rates = ", ".join(f"{label(peer)} {format_size(rate)}/s" for peer, rate in fastest_first)
        else:
            most_first = sorted(self._received.items(), key=lambda item: -item[1])
            rates = ", ".join(f"{label(peer)} {format_size(received)}" for peer, received in most_first if received)
        # Paused, the daemon's rate (an average) still falls for a while: what moves now is nothing new.
        moving = self.rate > 0 and not self.paused
        if not self.running:
            bottleneck: str | Text = "-"
        else:
            # Until the daemon measures again after a resume, its last value still says paused.
            shown = "paused" if self.paused else "resuming" if self.bottleneck == "paused" else self.bottleneck or "-"
            bottleneck = Text(shown, style=_BOTTLENECK_STYLE.get(shown, ""))
        return (
            self.name,
            self.phase,
            progress_bar(self.bytes_done, self.bytes_total),
            f"{format_size(self.bytes_done)} / {format_size(self.bytes_total)}",
            f"{format_size(self.rate)}/s" if moving else "-",
            format_duration(self.eta) if self.eta is not None and moving else "-",
            bottleneck,
            rates or "-",
        )


def event_line(topic: str, data: dict[str, Any], name_of: Callable[[str], str] | None = None) -> str | None:
    """A human line for the events log, or None for events not worth one (progress ticks).

    `name_of` names a peer known by id only (sessions opening and closing), as the peers table does.
    """
    if topic == "peers":
        return _peer_line(data, name_of)
    if topic == "datasets":
        version = data.get("version") or {}
        return f"published {data.get('name', '?')}@{version.get('seq', '?')}"
    if topic == "transfers":
        event = data.get("event")
        name = data.get("name") or (data.get("version") or {}).get("name", "?")
        if event == "done":
            return f"fetched {name} into {data.get('dest', '?')}"
        if event == "failed":
            return f"fetch of {name} failed: {data.get('reason', 'unknown reason')}"
        if event == "started":
            return f"fetching {name} into {data.get('dest', '?')}"
        if event in ("paused", "resumed"):
            return f"{event} the fetch of {name}"
        return None
    if topic == "daemon":
        return f"daemon: {data.get('state') or data.get('event') or 'stopping'}"
    if topic == "subscriptions":
        return _subscription_line(data)
    if topic == "watches":
        return _watch_line(data)
    return None


def _peer_line(data: dict[str, Any], name_of: Callable[[str], str] | None) -> str | None:
    """Trust changes, peers joining and leaving, refused peers; not catalog updates (the datasets show them)."""
    change = str(data.get("change", "changed"))
    if data.get("peer"):
        return f"peer {peer_label(data['peer'])} {_PEER_CHANGE.get(change, change)}"
    peer_id = data.get("peer_id")
    if not peer_id or change == "catalog":
        return None
    who = name_of(str(peer_id)) if name_of is not None else str(peer_id)[:7]
    if change == "pending":
        return f"refused untrusted peer {who} (trust it on the Peers tab if it is yours)"
    line = f"peer {who} {_PEER_CHANGE.get(change, change)}"
    return f"{line} ({data['reason']})" if change == "offline" and data.get("reason") else line


def _watch_line(data: dict[str, Any]) -> str | None:
    """Additions, removals and errors; the other states pass too often, and shares log as `published`."""
    watch = data.get("watch") or {}
    name, change = watch.get("name", "?"), data.get("change")
    if change == "added":
        return f"watching {watch.get('path', '?')} as {name}"
    if change == "removed":
        return f"stopped watching {name}"
    if watch.get("state") == "error":
        return f"watch of {name} failed: {watch.get('detail') or 'unknown reason'}"
    return None


def _subscription_line(data: dict[str, Any]) -> str | None:
    sub = data.get("subscription") or {}
    name, change = sub.get("name", "?"), data.get("change")
    if change == "added":
        return f"following {name} into {sub.get('dest', '?')}"
    if change == "removed":
        return f"stopped following {name}"
    if change == "failed":
        return f"update of {name} failed: {sub.get('last_error') or 'unknown reason'}"
    if change != "updated":
        return None
    line = f"{name} updated to @{(sub.get('version') or {}).get('seq', '?')} in {sub.get('dest', '?')}"
    kept = int(data.get("conflicts_total") or 0)
    return f"{line}; kept {kept} local change{'s' if kept != 1 else ''} (`shoal subscriptions`)" if kept else line
