"""shoal at the seed's scale: an ImageNet-like folder of many small files, against rsync, in one run.

Makes N files of 2-30 KiB (incompressible, sizes spread evenly) in folders of
1,000 (default N = 200,000, about 3.2 GB), starts two daemons on loopback that
trust each other, all under an open-file limit of --nofile (default 1,024, a
desktop's soft limit; soft and hard, so nothing can raise it), and prints one
table:

* share, cold cache: A shares the folder (page cache dropped first);
* re-share unchanged, once the keeper has copied the version (bar <= 0.05 x the first share);
* status and ls: control-socket round trips to A, median and max of 20 each,
  idle, and to B during the fetch;
* full fetch: rsync pulls the folder from `rsync --daemon` on 127.0.0.1 into an
  empty folder, followed by `sync` (shoal's fetch ends with syncfs), and that
  copy is removed; then B fetches into an empty folder, cold cache; time, first
  byte, and the ratio (bar <= 1.5 x);
* peak RSS of each daemon (VmHWM, and the largest RSS sampled during the fetch;
  bar <= 200 MB);
* one-file delta: one file rewritten on A, shared again, fetched by B.

With --workers N, B splits its fetches over N worker processes (`fetch.workers`), and
the RSS rows add the largest RSS any of B's workers reached.

Every fetched tree is compared with the source byte for byte after the timed part.

    .venv/bin/python bench/scale.py [--files 200000] [--dir DIR] [--nofile 1024] [--workers N] [--keep]
        [--no-drop-caches]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import blake3
from data import cpu_model, fetch_workers, print_failures
from fetch import Daemon, RsyncDaemon, ShoalFailed, compare_trees, drop_caches, fmt_time, rsync_pull, wait_remote

from shoal.client.blocking import ControlClient
from shoal.home import socket_path

DATASET = "scale"
PER_DIR = 1000
MIN_SIZE = 2 * 1024
MAX_SIZE = 30 * 1024
MB = 10**6
BAR_FETCH_RATIO = 1.5
BAR_RSS = 200 * MB
BAR_RESHARE = 0.05
BAR_FIRST_BYTE = 2.0
ROUND_TRIPS = 20


def make_folder(root: Path, files: int) -> int:
    """`files` files of MIN_SIZE..MAX_SIZE bytes in folders of PER_DIR; return the bytes written."""
    xof = blake3.blake3(b"scale bench")
    offset = 0
    span = MAX_SIZE - MIN_SIZE + 1
    for i in range(files):
        if i % PER_DIR == 0:
            folder = root / f"n{i // PER_DIR:05d}"
            folder.mkdir(parents=True)
        size = MIN_SIZE + (i * 7919) % span
        (folder / f"{i:07d}.jpg").write_bytes(xof.digest(length=size, seek=offset))
        offset += size
    return offset


def round_trips(home: Path, method: str, params: dict | None = None) -> list[float]:
    out = []
    with ControlClient.connect(socket_path(home)) as client:
        for _ in range(ROUND_TRIPS):
            t0 = time.perf_counter()
            client.call(method, params or {}, timeout=30)
            out.append(time.perf_counter() - t0)
    return out


def fmt_ms(samples: list[float]) -> str:
    if not samples:
        return "-"
    return f"median {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms ({len(samples)})"


def proc_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """RSS of some daemons and status round trips to one of them, sampled while a command runs."""

    def __init__(self, pids: dict[str, int], home: Path) -> None:
        self.pids = pids
        self.home = home
        self.peak = dict.fromkeys(pids, 0)
        #: The largest RSS of any fetch worker of the daemon labelled "B".
        self.worker_peak = 0
        self.status: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with ControlClient.connect(socket_path(self.home)) as client:
            while not self._stop.wait(0.2):
                for label, pid in self.pids.items():
                    self.peak[label] = max(self.peak[label], proc_kib(pid, "VmRSS"))
                for pid in fetch_workers(self.pids["B"]):
                    try:
                        self.worker_peak = max(self.worker_peak, proc_kib(pid, "VmRSS"))
                    except OSError:
                        pass
                t0 = time.perf_counter()
                client.call("status", {}, timeout=30)
                self.status.append(time.perf_counter() - t0)


def wait_kept(daemon: Daemon, timeout: float = 3600) -> float:
    """Wait until the keeper has no version left to copy; return the seconds waited."""
    t0 = time.perf_counter()
    while daemon.run("status")[0]["retention"]["keeping"]:
        if time.perf_counter() - t0 > timeout:
            raise ShoalFailed(f"{daemon.label}'s keeper still copying after {timeout:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--nofile", type=int, default=1024, help="open-file limit for everything the bench starts")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-drop-caches", action="store_true")
    parser.add_argument("--skip-rsync", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="B's fetch.workers (default 1: none)")
    args = parser.parse_args()
    drop = not args.no_drop_caches
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
    work = args.dir or Path(tempfile.mkdtemp(prefix="shoal-scale-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []
    failures: list[str] = []
    a, b = Daemon("A", work / "home-a"), Daemon("B", work / "home-b")
    with open(b.home / "config.toml", "a") as config:
        config.write(f"[fetch]\nworkers = {args.workers}\n")
    rsyncd = None
    try:
        source = work / "source"
        t0 = time.perf_counter()
        size = make_folder(source, args.files)
        made = time.perf_counter() - t0
        print(f"made {args.files:,} files, {size / MB:,.0f} MB in {made:.0f} s", file=sys.stderr)
        a.start()
        b.start()
        id_a = a.run("id")[0]["peer_id"]
        id_b = b.run("id")[0]["peer_id"]
        listen_a = a.run("status")[0]["listen"]
        a.run("trust", id_b)
        b.run("trust", id_a, "--addr", listen_a)

        drop_caches(drop)
        shared, share_time, _ = a.run("share", str(source), "--name", DATASET, timeout=7200)
        assert shared["version"]["files"] == args.files, shared["version"]
        rss_a_share = proc_kib(a.pid, "VmHWM")
        rows.append(("share, cold cache", fmt_time(share_time), "", f"A VmHWM {rss_a_share / MB:.0f} MB"))
        # The keeper copies the new version into the pack store after `share` returns; a re-share
        # timed while it reads every file measures the two together, so it is timed after.
        keep_time = wait_kept(a)
        rows.append(("retention keeps the version", fmt_time(keep_time), "after share returned", ""))
        _, reshare_time, _ = a.run("share", str(source), "--name", DATASET, timeout=7200)
        ratio = reshare_time / share_time
        rows.append(("re-share unchanged", fmt_time(reshare_time), f"{ratio:.3f}x first share", f"bar <= {BAR_RESHARE}"))
        if ratio > BAR_RESHARE:
            failures.append(f"re-share unchanged took {ratio:.3f}x the first share (bar {BAR_RESHARE})")
        rows.append(("status (A, idle)", fmt_ms(round_trips(a.home, "status")), "", ""))
        rows.append(("ls (A, idle)", fmt_ms(round_trips(a.home, "ls")), "", ""))

        rsync_time = None
        if not args.skip_rsync:
            rsyncd = RsyncDaemon(work, source)
            rsyncd.start()
            copy = work / "rsync-copy"
            drop_caches(drop)
            t0 = time.perf_counter()
            rsync_pull(rsyncd.url(), str(copy))
            os.sync()
            rsync_time = time.perf_counter() - t0
            rows.append(("rsync daemon + sync, cold cache", fmt_time(rsync_time), "", ""))
            shutil.rmtree(copy)  # before shoal's copy: a 1.3 M-file folder takes 21 GB

        wait_remote(b, 1, name=DATASET)
        dest = work / "dest"
        drop_caches(drop)
        with Sampler({"A": a.pid, "B": b.pid}, b.home) as sampled:
            fetched, fetch_time, _ = b.run("fetch", DATASET, str(dest), "--timeout", "120", timeout=7200)
        first_byte = fetched.get("first_byte")
        rows.append(("full fetch, cold cache", fmt_time(fetch_time), f"{size / MB / fetch_time:.0f} MB/s",
                     f"first byte {fmt_time(first_byte)} (bar <= {BAR_FIRST_BYTE:g} s); {fetched['workers']} workers"))
        if rsync_time is not None:
            ratio = fetch_time / rsync_time
            rows.append(("full fetch / (rsync + sync)", f"{ratio:.2f}x", "", f"bar <= {BAR_FETCH_RATIO}x"))
            if ratio > BAR_FETCH_RATIO:
                failures.append(f"full fetch {ratio:.2f}x rsync + sync (bar {BAR_FETCH_RATIO}x)")
        if first_byte is None or first_byte > BAR_FIRST_BYTE:
            failures.append(f"first byte after {first_byte} s (bar {BAR_FIRST_BYTE} s)")
        rows.append(("status (B, during fetch)", fmt_ms(sampled.status), "", ""))
        for label, daemon in (("A", a), ("B", b)):
            hwm = proc_kib(daemon.pid, "VmHWM")
            peak = sampled.peak[label]
            rows.append((f"{label} RSS", f"{peak / MB:.0f} MB peak during fetch", f"VmHWM {hwm / MB:.0f} MB",
                         f"bar <= {BAR_RSS / MB:.0f} MB"))
            if max(peak, hwm) > BAR_RSS:
                failures.append(f"{label}'s RSS reached {max(peak, hwm) / MB:.0f} MB (bar {BAR_RSS / MB:.0f} MB)")
        if args.workers > 1:
            rows.append(("B's workers' RSS", f"{sampled.worker_peak / MB:.0f} MB peak of any", "",
                         f"bar <= {BAR_RSS / MB:.0f} MB"))
            if sampled.worker_peak > BAR_RSS:
                failures.append(f"a fetch worker's RSS reached {sampled.worker_peak / MB:.0f} MB")
        problems = compare_trees(source, dest)
        if problems:
            failures.append("fetched tree differs: " + "; ".join(problems[:5]))

        victim = source / "n00000" / "0000007.jpg"
        victim.write_bytes(os.urandom(victim.stat().st_size))
        _, delta_share, _ = a.run("share", str(source), "--name", DATASET, timeout=7200)
        wait_remote(b, 2, name=DATASET)
        delta, delta_time, _ = b.run("fetch", DATASET, str(dest), "--timeout", "120", timeout=7200)
        rows.append(("one-file delta: share", fmt_time(delta_share), "", ""))
        rows.append(("one-file delta: fetch", fmt_time(delta_time), f"{delta['bytes_received']:,} B received",
                     f"{delta['files_written']} file written"))
        if delta["files_written"] != 1:
            failures.append(f"the one-file delta wrote {delta['files_written']} files")
        problems = compare_trees(source, dest, only=[victim])
        if problems:
            failures.append("delta-fetched file differs")
    except (ShoalFailed, AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        failures.append(str(e))
    finally:
        if rsyncd is not None:
            rsyncd.stop()
        for daemon in (a, b):
            note = daemon.stop()
            if note:
                print(note, file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"bench/scale.py --files {args.files} --nofile {args.nofile}: {time.strftime('%Y-%m-%d %H:%M')},"
          f" {cpu_model()}, {os.cpu_count()} CPUs; page cache {'dropped' if drop else 'kept'} before timed steps")
    width = max(len(r[0]) for r in rows) if rows else 10
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:<34}  {row[2]:<22}  {row[3]}")
    print_failures(failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
