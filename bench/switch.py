"""Measure switching a pinned folder between two versions with `shoal sync`, against a fresh fetch.

Generates the dataset of bench/fetch.py (3 x 400 MB, 2 x 100 MB and ~10,000
small files: 2 GB at the default size, scaled by --size), then runs three real
daemons on loopback that trust each other:

* S shares the folder as version 1; K fetches it and keeps serving version 1;
* R, in a scratch repository, runs `shoal pin benchds@1 --path data` and
  `shoal sync`: the fresh fetch (timed);
* S rewrites 1% of the files (every 100th in path order, same sizes, new bytes)
  and shares version 2; R pins it and syncs: switch 1 -> 2 (timed);
* R pins version 1 again and syncs: switch 2 -> 1 (timed, served by K).

Each time is the wall time of `shoal sync --json`; the page cache is dropped
before each (as root, unless --no-drop-caches). Bytes written are the growth of
`write_bytes` in /proc/<R's daemon pid>/io over the command (what R's daemon
sent to storage: file data and its index), shown against the dataset's size.
After each step R's folder is compared byte for byte with S's (or K's) copy.
Bars: a switch takes <= 0.1 x the fresh fetch and writes <= 3% of the bytes.

    .venv/bin/python bench/switch.py [--size 2G] [--dir DIR] [--keep] [--no-drop-caches]
"""

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from data import cpu_model, parse_size, print_failures, write_random
from fetch import (
    DATASET,
    PARTIAL_DIR,
    Daemon,
    ShoalFailed,
    compare_trees,
    drop_caches,
    fmt_bytes,
    make_dataset,
    tree_bytes,
    wait_remote,
)

REPO = Path(__file__).resolve().parent.parent
CHANGED_EVERY = 100
BAR_TIME = 0.1
BAR_WRITTEN = 0.03


def written_by(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def change_files(root: Path) -> list[Path]:
    """Rewrite every CHANGED_EVERY-th file in path order with new bytes of the same size."""
    paths = sorted(p for p in root.rglob("*") if p.is_file() and PARTIAL_DIR not in p.parts)
    changed = paths[CHANGED_EVERY // 2 :: CHANGED_EVERY]
    for p in changed:
        write_random(p, p.stat().st_size, b"changed " + str(p).encode())
    return changed


def timed_sync(r: Daemon, repo: Path, drop: bool) -> tuple[dict, float, int]:
    drop_caches(drop)
    os.sync()
    before = written_by(r.pid)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    result, _, _ = r.run("sync", "--timeout", "600", timeout=1800, cwd=repo)
    wall = time.perf_counter() - t0
    os.sync()  # count what the page cache still held for R's writes
    return result, wall, written_by(r.pid) - before  # type: ignore[arg-type]


def main() -> int:
    # pin and sync run in a scratch repository: make their `python -m shoal` import this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="dataset size, e.g. 2G, 200M (10**n units); default 2G")
    parser.add_argument("--dir", help="parent of the working dir for data and copies (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (homes, data, copies)")
    parser.add_argument("--no-drop-caches", action="store_true", help="do not drop the page cache before timed commands")
    args = parser.parse_args()
    drop = not args.no_drop_caches
    if drop and os.geteuid() != 0:
        print("not root: cannot drop caches; running with --no-drop-caches", file=sys.stderr)
        drop = False
    homes = Path(tempfile.mkdtemp(prefix="shoal-sw-", dir="/tmp"))  # short: control socket paths <= 107 bytes
    workdir = Path(tempfile.mkdtemp(prefix="shoal-switch-bench-", dir=args.dir or "/tmp"))
    daemons = [Daemon(label, homes / label.lower()) for label in ("S", "K", "R")]
    s, k, r = daemons
    failures: list[str] = []
    rows: list[tuple[str, float, int, dict]] = []
    try:
        data = workdir / "data"
        make_dataset(data, parse_size(args.size))
        files, size = tree_bytes(data)
        for d in daemons:
            d.start()
        link(daemons)
        s.run("share", str(data), "--name", DATASET, timeout=1800)
        wait_remote(k, 1)
        wait_remote(r, 1)
        kept = workdir / "kept"
        k.run("fetch", DATASET, str(kept), "--timeout", "600", timeout=1800)
        repo = workdir / "repo"
        (repo / ".git").mkdir(parents=True)
        copy = repo / "data"

        r.run("pin", f"{DATASET}@1", "--path", "data", cwd=repo)
        result, wall, wrote = timed_sync(r, repo, drop)
        rows.append(("fresh fetch (sync to @1)", wall, wrote, result["synced"][0]["fetch"]))
        failures += [f"fresh fetch: {p}" for p in compare_trees(data, copy)]

        changed = change_files(data)
        s.run("share", str(data), "--name", DATASET, timeout=1800)
        wait_remote(r, 2)
        r.run("pin", f"{DATASET}@2", cwd=repo)
        result, wall, wrote = timed_sync(r, repo, drop)
        rows.append((f"switch @1 -> @2 ({len(changed)} files differ)", wall, wrote, result["synced"][0]["fetch"]))
        failures += [f"switch to @2: {p}" for p in compare_trees(data, copy)]

        r.run("pin", f"{DATASET}@1", cwd=repo)
        result, wall, wrote = timed_sync(r, repo, drop)
        rows.append(("switch @2 -> @1 (from K)", wall, wrote, result["synced"][0]["fetch"]))
        failures += [f"switch back to @1: {p}" for p in compare_trees(kept, copy)]
        report(args, files, size, len(changed), rows, failures, drop)
    except ShoalFailed as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        for d in daemons:
            d.stop()
        if not args.keep:
            shutil.rmtree(homes, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def link(daemons: list[Daemon]) -> None:
    """Every daemon trusts every other at its loopback address."""
    ids = [d.run("id")[0]["peer_id"] for d in daemons]
    listens = [d.run("status")[0]["listen"] for d in daemons]
    for i, d in enumerate(daemons):
        for j, other in enumerate(daemons):
            if i != j:
                d.run("trust", ids[j], "--addr", listens[j], "--name", other.label)


def report(args, files, size, changed, rows, failures, drop) -> None:  # noqa: ANN001
    fresh = rows[0][1]
    print()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: nproc={os.cpu_count()}, CPU: {cpu_model()}, Python {platform.python_version()}")
    print(f"dataset: {files} files, {size / 1e9:.3f} GB; version 2 rewrites {changed} files (1%)")
    print("page cache: " + ("dropped before every timed command" if drop else "NOT dropped"))
    print()
    header = ("", "time", "in daemon", "vs fresh", "bar", "written", "of dataset", "bar", "files written", "received")
    table = []
    for i, (name, wall, wrote, fetched) in enumerate(rows):
        ratio, share = wall / fresh, wrote / size
        table.append((
            name, f"{wall:.2f} s", f"{fetched['seconds']:.2f} s", f"{ratio:.3f}",
            "-" if i == 0 else ("<=0.1 ok" if ratio <= BAR_TIME else "<=0.1 MISSED"),
            fmt_bytes(wrote), f"{share * 100:.2f}%",
            "-" if i == 0 else ("<=3% ok" if share <= BAR_WRITTEN else "<=3% MISSED"),
            f"{fetched['files_written']:,}", fmt_bytes(fetched["bytes_received"]),
        ))
    widths = [max(len(str(row[i])) for row in (header, *table)) for i in range(len(header))]
    line = " | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in table:
        print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print_failures(failures)


if __name__ == "__main__":
    sys.exit(main())
