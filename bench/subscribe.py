"""Measure a subscription between two real daemons: how fast a new version arrives, and what it moves.

Starts two shoal daemons on loopback (homes under a temporary folder, config
`listen = "127.0.0.1:0"`, `discovery = false`) that trust each other. A
shares a checkpoint-like folder (one model file of --size, 100 files of
64 KiB, a config), B runs `shoal subscribe`; then A publishes three more
versions, each after one change:

* v2: 1 MiB overwritten in the middle of the model file;
* v3: a new 8 MiB file;
* v4: 10 small files and the config rewritten.

For each version the table shows the bytes changed, the bytes B's update
received (the subscription's `last_fetch`), their ratio (bar: received <=
changed + 0.5 MiB), and the latency from `shoal share` returning on A to B's
`subscriptions` event saying DEST holds the version, plus the update's own
fetch time. Every version's DEST is compared byte for byte with A's folder.

    .venv/bin/python bench/subscribe.py [--size 200M] [--dir DIR] [--keep]
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from data import cpu_model, parse_size, write_random
from fetch import REPO, Daemon, compare_trees, fmt_bytes

sys.path.insert(0, str(REPO))

from shoal.client.blocking import ControlClient  # noqa: E402 - after the repo is importable
from shoal.home import socket_path

DATASET = "ckpt"
MIB = 1024 * 1024
SMALL_FILES = 100
SMALL_SIZE = 64 * 1024
#: Manifest objects and boundary chunks an update may move beyond the changed bytes.
BAR_SLACK = MIB // 2
WAIT = 120.0


def make_dataset(root: Path, size: int) -> None:
    (root / "shards").mkdir(parents=True)
    write_random(root / "model.pt", size, b"model")
    for i in range(SMALL_FILES):
        write_random(root / "shards" / f"{i:03}.bin", SMALL_SIZE, f"shard {i}".encode())
    (root / "config.yaml").write_text("lr: 0.1\n")


def overwrite_model(root: Path) -> int:
    size = (root / "model.pt").stat().st_size
    with open(root / "model.pt", "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(MIB))
    return MIB


def add_file(root: Path) -> int:
    write_random(root / "optimizer.pt", 8 * MIB, b"optimizer")
    return 8 * MIB


def rewrite_small(root: Path) -> int:
    for i in range(10):
        (root / "shards" / f"{i:03}.bin").write_bytes(os.urandom(SMALL_SIZE))
    text = "lr: 0.01\n"
    (root / "config.yaml").write_text(text)
    return 10 * SMALL_SIZE + len(text)


CHANGES = [
    ("1 MiB overwritten in the model", overwrite_model),
    ("a new 8 MiB file", add_file),
    ("10 small files + config rewritten", rewrite_small),
]


def wait_updated(events: ControlClient, seq: int) -> dict:
    """The subscription map of B's first `updated` event for DATASET@seq."""
    deadline = time.monotonic() + WAIT
    for event in events.events(timeout=WAIT):
        sub = event.data["subscription"]
        if event.data["change"] == "failed":
            raise SystemExit(f"B's update failed: {sub['last_error']}")
        if event.data["change"] == "updated" and sub["version"]["seq"] == seq:
            return sub
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"B did not receive {DATASET}@{seq} within {WAIT:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("200M"), help="size of the model file")
    parser.add_argument("--dir", type=Path, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-sub-", dir=args.dir or "/tmp"))
    a, b = Daemon("A", work / "a"), Daemon("B", work / "b")
    rows = []
    try:
        for daemon in (a, b):
            daemon.start()
        id_a, id_b = a.run("id")[0]["peer_id"], b.run("id")[0]["peer_id"]
        a.run("trust", id_b)
        b.run("trust", id_a, "--addr", a.run("status")[0]["listen"])
        data, dest = work / DATASET, work / "follow"
        make_dataset(data, args.size)
        a.run("share", str(data))
        with ControlClient.connect(socket_path(b.home)) as events:
            events.subscribe(["subscriptions"])
            started = time.perf_counter()
            b.run("subscribe", DATASET, str(dest))
            sub = wait_updated(events, 1)
            first = time.perf_counter() - started
            rows.append(("v1 (subscribe)", "everything", _size(data), sub["last_fetch"], first))
            for seq, (label, change) in enumerate(CHANGES, start=2):
                changed = change(data)
                a.run("share", str(data))
                shared = time.perf_counter()
                sub = wait_updated(events, seq)
                rows.append((f"v{seq}", label, changed, sub["last_fetch"], time.perf_counter() - shared))
                problems = compare_trees(data, dest)
                if problems:
                    raise SystemExit(f"B's folder differs from A's after v{seq}: {problems}")
    finally:
        notes = a.stop() + b.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(args, rows, notes)
    return 0


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def report(args: argparse.Namespace, rows: list, notes: str) -> None:
    print(f"# shoal subscribe: {platform.node()}, {cpu_model()}, {os.cpu_count()} CPUs, model file {fmt_bytes(args.size)}")
    print(f"{'version':<15} {'change':<34} {'changed':>10} {'received':>10} {'extra':>9} {'arrived':>8} "
          f"{'fetch':>7}  bar")
    for version, label, changed, fetched, latency in rows:
        received = fetched["bytes_received"]
        bar = "-" if version.startswith("v1") else ("ok" if received <= changed + BAR_SLACK else "MISSED")
        print(f"{version:<15} {label:<34} {fmt_bytes(changed):>10} {fmt_bytes(received):>10} "
              f"{fmt_bytes(max(0, received - changed)):>9} {latency:>7.2f}s {fetched['seconds']:>6.2f}s  {bar}")
    print("arrived: from `shoal share` returning on A to B's event that DEST holds the version;"
          " fetch: the update's own time")
    if notes:
        print(f"notes: {notes}")


if __name__ == "__main__":
    sys.exit(main())
