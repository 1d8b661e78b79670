"""How command results look: aligned text for people, one JSON object for scripts.

With `--json` every command prints exactly one JSON object on stdout, the result
map the daemon returned (schemas in README, "JSON output"). The human renderers
below are pure functions from that same map to text, so both views show one truth.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shoal.client.fmt import format_count, format_duration, format_elapsed, format_rate, format_size, format_time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing adds milliseconds to every `shoal` start; annotations do not need it at run time.
    from typing import Any, TextIO

def print_json(value: Any, stream: TextIO | None = None) -> None:
    """Write `value` as indented JSON with sorted keys and a final newline."""
    import json  # only --json output pays for it

    out = stream or sys.stdout
    out.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in `right` are right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for row in (headers, *rows):
        cells = [
            str(cell).rjust(width) if index in right else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def version_label(version: dict[str, Any]) -> str:
    """NAME@SEQ, the way users name a version."""
    return f"{version['name']}@{version['seq']}"


def render_status(status: dict[str, Any]) -> str:
    """`shoal status` and `shoal daemon status`."""
    peers = status["peers"]
    rows = [
        ("daemon", f"running, pid {status['pid']}, up {format_duration(status['uptime'])}, shoal {status['version']}"),
        ("peer id", status["peer_id"]),
        ("home", status["home"]),
        ("listen", f"{status['listen']} (discovery {'on' if status['discovery'] else 'off'})"),
        ("datasets", f"{status['datasets']:,}" + (f" ({status['watches']} watched)" if status.get("watches") else "")),
        ("peers", f"{peers['trusted']} trusted ({peers['online']} online), {peers['pending']} pending"),
    ]
    if "retention" in status:
        rows.append(("retention", _retention_line(status["retention"])))
    return "\n".join(f"{key:<10}{value}" for key, value in rows)


def _retention_line(retention: dict[str, Any]) -> str:
    line = f"{format_count(retention['kept'], 'version')} kept in {format_size(retention['bytes'])} of packs"
    if retention["keeping"]:
        line += f"; keeping {', '.join(retention['keeping'])}"
    for skipped in retention["not_kept"][:3]:
        line += f"\n{'':<10}not kept: {skipped['version']}: {skipped['reason']}"
    return line


def render_gc(report: dict[str, Any]) -> str:
    """`shoal gc`: what was freed and what remains."""
    lines = [f"freed {format_size(report['freed'])}"]
    if report["evicted"]:
        lines.append(f"no longer kept: {', '.join(report['evicted'])}")
    lines.append(
        f"the pack store holds {format_count(report['kept'], 'version')} in {format_size(report['store_bytes'])}"
    )
    return "\n".join(lines)


def render_id(identity: dict[str, Any]) -> str:
    """`shoal id`: the id alone, so `$(shoal id)` works."""
    return identity["peer_id"]


def _head_cells(info: dict[str, Any]) -> tuple[str, ...]:
    head = info["head"]
    return (info["name"], f"@{head['seq']}", format_size(head["size"]), f"{head['files']:,}", format_time(head["time"]))


def render_datasets(listing: dict[str, Any]) -> str:
    """`shoal ls`."""
    if not listing["datasets"]:
        return "no datasets shared yet; share a folder with `shoal share PATH`"
    rows = []
    for info in listing["datasets"]:
        missing = "" if info["present"] else " (missing: fetch or share it again)"
        rows.append((*_head_cells(info), audience_text(info), (info["path"] or "-") + missing))
        for checkout in info.get("checkouts", []):
            if checkout["path"] != info["path"]:
                part = "" if checkout["whole"] else " (part)"
                rows.append(("", f"@{checkout['version']['seq']}{part}", "", "", "", "", checkout["path"]))
    return table(("NAME", "HEAD", "SIZE", "FILES", "UPDATED", "SEEN BY", "PATH"), rows, right=(2, 3))


def render_remote_datasets(listing: dict[str, Any]) -> str:
    """`shoal ls --remote`."""
    if not listing["datasets"]:
        return "no peer offers a dataset right now; `shoal peers` shows who is online"
    rows = [(*_head_cells(info), info["peer_name"] or info["peer_id"]) for info in listing["datasets"]]
    text = table(("NAME", "HEAD", "SIZE", "FILES", "UPDATED", "PEER"), rows, right=(2, 3))
    more = listing["total"] - len(rows)
    return text + (f"\n... and {more:,} more; `shoal ls --remote --limit N` shows more" if more > 0 else "")


def render_browse(listing: dict[str, Any]) -> str:
    """`shoal ls NAME[@VERSION] [PATH]`: one folder of a version."""
    version = listing["version"]
    rows = [
        (
            entry["name"] + ("/" if entry["type"] == "dir" else ""),
            entry["type"],
            format_size(entry["size"]),
            f"-> {entry['target']}" if entry["target"] else "",
        )
        for entry in listing["entries"]
    ]
    where = f"{version['name']}@{version['seq']}:/{listing['path']}"
    shown = f"{len(rows)} of {listing['total']}" if len(rows) < listing["total"] else f"{len(rows)}"
    return f"{where} ({shown} entries)\n" + table(("NAME", "TYPE", "SIZE", ""), rows, right=(2,))


def render_log(log: dict[str, Any]) -> str:
    """`shoal log NAME`: newest first; a version that only changes subsets is marked as
    such, with no data columns, and is not counted among the data versions."""
    rows = [_log_row(version) for version in log["versions"]]
    headers = ("VERSION", "ID", "TIME", "AUTHOR", "SIZE", "FILES", "CHANGED", "NEW", "KEPT", "MESSAGE")
    data = sum(1 for version in log["versions"] if version.get("kind") != "subsets")
    changes = len(log["versions"]) - data
    summary = _count(data, "data version") + (f", {_count(changes, 'subset change')}" if changes else "")
    return table(headers, rows, right=(4, 5, 6, 7)) + "\n" + summary


def _log_row(version: dict[str, Any]) -> tuple[str, ...]:
    head = (
        f"@{version['seq']}",
        version["id"][:16],
        format_time(version["time"]),
        version.get("author_name") or version.get("author_peer", ""),
    )
    kept = "yes" if version.get("kept") else ""
    if version.get("kind") == "subsets":
        return (*head, "", "", "subsets", "", kept, version["message"])
    return (
        *head,
        format_size(version["size"]),
        f"{version['files']:,}",
        _unknown(version.get("files_changed"), lambda n: f"{n:,}"),
        _unknown(version.get("bytes_new"), format_size),
        kept,
        version["message"],
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _unknown(value: Any, shown: Any) -> str:
    return "?" if value is None else shown(value)


def render_diff(diff: dict[str, Any]) -> str:
    """`shoal diff`: one line per changed path, then what a fetch would move."""
    marks = {"added": "+", "removed": "-", "modified": "M", "type": "T"}
    lines = [f"{marks[c['change']]} {c['path']}" for c in diff["changes"]]
    if diff["total"] > len(diff["changes"]):
        lines.append(f"… and {diff['total'] - len(diff['changes']):,} more")
    counts = ", ".join(f"{n:,} {kind}" for kind, n in diff["counts"].items() if n) or "no changes"
    lines.append(
        f"{version_label(diff['from'])} → {version_label(diff['to'])}: {counts};"
        f" {format_size(diff['bytes_to_fetch'])} to fetch ({format_size(diff['bytes_changed'])} in changed files)"
    )
    return "\n".join(lines)


def render_subsets(result: dict[str, Any]) -> str:
    """`shoal subset NAME [SUBSET]`: the subsets of the dataset's head."""
    rows = [
        (name, " ".join(s["include"]) or "*", _share(s), str(s["seed"]))
        for name, s in sorted(result["subsets"].items())
    ]
    version = result["version"]
    head = f"{version_label(version)} {version['id']}"
    if result.get("changed"):
        head += f"\n{version['message']}"
    if not rows:
        return f"{head}\nno subsets; define one with `shoal subset {result['name']} SUBSET --include GLOB`"
    return head + "\n" + table(("SUBSET", "INCLUDE", "SAMPLE", "SEED"), rows)


def _share(subset: dict[str, Any]) -> str:
    """An exact sample as its share; a per-file one (older records) as about that share."""
    share = f"{subset['sample'] * 100:.4f}".rstrip("0").rstrip(".") + "%"
    return f"~{share} per file" if subset.get("draw") == "per-file" else share


def render_pin(result: dict[str, Any]) -> str:
    """`shoal pin`: the entry written to shoal.lock."""
    pin = result["pin"]
    subset = f":{pin['subset']}" if pin.get("subset") else ""
    line = f"pinned {pin['name']}@{pin['version'][:16]}{subset} at {pin['path']} in {result['lock']}"
    if result.get("gitignore"):
        line += f"\nadded /{pin['path']}/ to {result['gitignore']}: the lock pins the data, git need not hold it"
    return line


def render_sync(result: dict[str, Any]) -> str:
    """`shoal sync`: one line per pinned path."""
    lines = []
    for entry in result["synced"]:
        fetched = entry["fetch"]
        lines.append(
            f"{entry['path']}: {fetched['version']['name']}@{fetched['version']['seq']}"
            f" — {format_count(fetched['files_written'], 'file')} written,"
            f" {format_size(fetched['bytes_received'])} received"
        )
    return "\n".join(lines) or "nothing pinned"


def render_share(result: dict[str, Any]) -> str:
    """`shoal share`: the version line, then one summary line."""
    version = result["version"]
    first = f"{version_label(version)} {version['id']}"
    contents = f"{format_count(version['files'], 'file')}, {format_size(version['size'])}"
    # Only a dataset limited to chosen peers says who sees it: the default needs no word.
    seen_by = f"\nseen by {audience_text(result)}" if result.get("audience") is not None else ""
    if not result["created"]:
        return f"{first}\nunchanged since {format_time(version['time'])}: {contents}{seen_by}"
    rehashed = format_count(result["files_rehashed"], "file")
    return f"{first}\nnew version: {contents}; {format_size(result['new_bytes'])} newly hashed from {rehashed}{seen_by}"


def render_watch(result: dict[str, Any]) -> str:
    """`shoal watch`: what it shared now, then what happens from here."""
    watch = result["watch"]
    verb = "watching" if result["added"] else "already watching"
    return f"{render_share(result['share'])}\n{verb} {watch['path']}: changes are shared once they settle"


def audience_text(result: dict[str, Any]) -> str:
    """Who sees a dataset, in a few words: its peers by trust name (`seen_by`)."""
    audience = result.get("audience")
    if audience is None:
        return "all trusted peers"
    if not audience:
        return "no peer"
    return ", ".join(result["seen_by"])


def render_audience(result: dict[str, Any]) -> str:
    """`shoal share NAME --to ...`."""
    return f"{result['name']} is now seen by {audience_text(result)}"


def render_unshare(result: dict[str, Any]) -> str:
    """`shoal unshare`."""
    folder = f"; {result['path']} is untouched" if result["path"] else ""
    if not result["forgot"]:
        return f"no longer sharing {result['name']}{folder}; its history stays (`shoal unshare --forget` drops it)"
    dropped = format_count(result["versions_dropped"], "version")
    freed = format_size(result["bytes_freed"])
    return f"no longer sharing {result['name']}{folder}; dropped {dropped} and {freed} of kept copies"


def render_unwatch(result: dict[str, Any]) -> str:
    """`shoal unwatch`."""
    watch = result["watch"]
    return f"no longer watching {watch['path']} ({watch['name']}); its versions stay"


def render_watches(listing: dict[str, Any]) -> str:
    """`shoal watches`."""
    if not listing["watches"]:
        return "no folder is watched; watch one with `shoal watch PATH`"
    rows = [
        (
            watch["name"],
            watch["state"] + (f": {watch['detail']}" if watch["detail"] else ""),
            format_time(watch["last_shared"]) if watch["last_shared"] else "-",
            watch["path"],
        )
        for watch in listing["watches"]
    ]
    return table(("NAME", "STATE", "LAST VERSION", "PATH"), rows)


def render_verify(report: dict[str, Any]) -> str:
    """`shoal verify NAME`: a verdict line, then one line per problem."""
    label = version_label(report["version"])
    checked = format_count(report["files_checked"], "file")
    if report["ok"]:
        return f"{label} ok: {checked} match"
    total = report["problems_total"]
    lines = [f"{label} FAILED: {format_count(total, 'problem')} in {checked}"]
    lines += [f"  {problem['path']}: {problem['reason']}" for problem in report["problems"]]
    if total > len(report["problems"]):
        lines.append(f"  ... and {total - len(report['problems'])} more")
    lines.append(report["repair"])
    return "\n".join(lines)


def render_peers(listing: dict[str, Any]) -> str:
    """`shoal peers`: trusted peers, then pending ones."""
    if not listing["peers"]:
        return "no peers yet; trust one with `shoal trust ID --addr HOST:PORT`"
    rows = [
        (
            peer["name"] or "-",
            peer["peer_id"],
            peer["state"],
            peer["address"] or ", ".join(dict.fromkeys(peer["addresses"] + peer.get("announced", []))) or "-",
        )
        for peer in listing["peers"]
    ]
    return table(("NAME", "PEER ID", "STATE", "ADDRESS"), rows)


def render_trust_change(result: dict[str, Any], verb: str) -> str:
    """`shoal trust` / `shoal untrust`."""
    peer = result["peer"]
    where = f" at {', '.join(peer['addresses'])}" if peer["addresses"] else ""
    return f"{verb} {peer['name']} ({peer['peer_id']}){where}"


def render_config(values: dict[str, Any]) -> str:
    """`shoal config get`: one KEY = VALUE line per key."""
    return "\n".join(f"{key} = {_config_value(key, value)}" for key, value in values.items())


def render_fetch(result: dict[str, Any]) -> str:
    """`shoal fetch`: the version line, then what the selection holds and what was placed, then
    what crossed the network, its rate from the same time the line shows."""
    version = result["version"]
    seconds = result["seconds"]
    received = result["bytes_received"]
    rate = f" ({format_rate(received / seconds)})" if seconds > 0 and received else ""
    placed = f"{result['files_written']:,} written, {result['files_present']:,} already there"
    if result.get("workers"):
        placed += f", by {result['workers']} worker processes"
    return (
        f"{version_label(version)} {version['id']}\n"
        f"fetched into {result['dest']}: {format_count(result['files_total'], 'file')}, "
        f"{format_size(result['bytes_total'])} ({placed}); {format_size(received)} received from "
        f"{format_count(len(result['peers']), 'peer')} in {format_elapsed(seconds)}{rate}, "
        f"{format_size(result['bytes_reused'])} reused from local data"
    )


def render_subscription_change(result: dict[str, Any], verb: str) -> str:
    """`shoal subscribe` / `shoal unsubscribe`: what follows what, and where it stands."""
    sub = result["subscription"]
    return f"{verb} {sub['name']} into {sub['dest']}: {_subscription_state(sub)}"


def render_subscriptions(listing: dict[str, Any]) -> str:
    """`shoal subscriptions`: one row per followed dataset, then the conflicts each kept."""
    subs = listing["subscriptions"]
    if not subs:
        return "nothing followed yet; `shoal subscribe NAME DEST` keeps a folder at a dataset's newest version"
    rows = [
        (sub["name"], f"@{sub['version']['seq']}" if sub["version"] else "-", sub["state"],
         f"{len(sub['conflicts']):,}", sub["dest"])
        for sub in subs
    ]
    lines = [table(("NAME", "HAS", "STATE", "CONFLICTS", "DEST"), rows, right=(3,))]
    for sub in subs:
        if sub["last_error"]:
            lines.append(f"{sub['name']}: {sub['last_error']} (retry in {format_duration(sub['retry_in'] or 0)})")
        lines += [f"{sub['name']}: {_conflict_line(c)}" for c in sub["conflicts"]]
    return "\n".join(lines)


def _subscription_state(sub: dict[str, Any]) -> str:
    held = f"holds {version_label(sub['version'])}" if sub["version"] else "holds nothing yet"
    doing = {
        "updating": "updating now",
        "pending": "a peer offers a newer version; updating shortly" if sub["version"] else "fetching it shortly",
        "current": "up to date with what peers offer",
        "waiting": "no connected peer offers it yet; it follows as soon as one does",
        "failed": f"the last update failed: {sub['last_error']}",
        "withdrawn": "the peer that offered it withdrew it (`shoal unshare`); the folder keeps its files",
    }[sub["state"]]
    return f"{held}; {doing}"


def _conflict_line(conflict: dict[str, Any]) -> str:
    if conflict["change"] == "deleted":
        return f"{conflict['path']}: deleted here; left deleted"
    if conflict["kept_as"] == conflict["path"]:
        return f"{conflict['path']}: {conflict['change']} here; left in place"
    return f"{conflict['path']}: {conflict['change']} here; your copy is {conflict['kept_as']}"


def _config_value(key: str, value: Any) -> str:
    if key.startswith("bandwidth."):
        return f"{value} ({format_rate(value)})" if value else "0 (unlimited)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
