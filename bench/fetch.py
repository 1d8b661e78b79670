"""Measure `shoal fetch` between two real daemons against rsync over an rsync daemon, in one run.

Generates an incompressible dataset (3 checkpoint-like files of 400 MB, two
100 MB files and ~10,000 small files: 2 GB at the default size, everything
scaled by --size; --size 1G --small-files 10000 is the 1 GiB folder of
checkpoints and 10,000 images), starts two shoal daemons on loopback (homes under /tmp,
config `listen = "127.0.0.1:0"`, `discovery = false`) that trust each other,
then prints one table:

* full fetch: A shares the folder, B runs `shoal fetch --json` into an empty
  DEST (wall time of the command, MB/s, bytes_received); then rsync pulls the
  same folder from `rsync --daemon` on 127.0.0.1 (unencrypted) into an empty
  dir, and its copy is flushed with `sync` (shoal's fetch ends with syncfs);
  ratios of time and of the whole machine's CPU (/proc/stat, user + system)
  are against rsync + sync (bars: time <= 1.0, CPU <= 2.0);
* delta, 1 MiB overwritten in place in the middle of a 100 MB file (new
  mtime): A shares again, B fetches into the same DEST (bar <= 1.5 MiB);
  rsync updates its existing copy (delta algorithm, its default temp-file
  mode, which handles shifted data); the same change is also pulled with
  --inplace into a copy of the old file alone, shown below the table;
* delta, 1 KiB inserted at offset 4 KiB of the other 100 MB file (bar <= 0.5 MiB).

Page caches are dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before
every timed command of both tools unless --no-drop-caches; each fetched tree
is compared byte for byte with the source after the timed part. On a VM that
hands free memory back to its host (free page reporting), each drop is followed
by a wait until that is done (data.settle_free_memory; a few seconds), so that
no command runs on the memory its predecessor just freed; --no-settle skips it.

One pair of full fetches on a noisy machine differs by up to a third, so
--rounds N (N >= 2) then runs N-1 further full fetches of the unchanged
folder, each tool into a new empty folder (shoal with a fresh receiver daemon
that trusts A and is trusted by it: a receiver that already holds the data
copies it locally instead of fetching), the tools taking turns at going first,
and prints every round and the medians of the two ratios against the bars.
Without the wait above (--no-settle), a command on this VM runs slower right
after the other tool than right after itself (rsync + sync by up to 0.8 s right
after a shoal fetch; bench/JOURNAL.md, the pass of 2026-12-07 from 10:02): with --paired each tool fetches twice
in a row in every round 2..N and only the second fetch counts, each timed right
after one of its own; the first ones, right after the other tool, are summed up
below the rounds, which shows what is left of the order effect.
Earlier rounds' folders stay until the end (removed then unless --keep):
deleting ~10,000 files slows file creation on the file system for minutes,
which would skew the next round.

    .venv/bin/python bench/fetch.py [--size 2G] [--small-files N] [--rounds N [--paired]] [--dir DIR] [--keep]
        [--skip-rsync] [--no-drop-caches] [--no-settle]
"""

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
from data import (
    REPORTED_KIB,
    cpu_model,
    cpu_since,
    machine_cpu,
    parse_size,
    print_failures,
    settle_free_memory,
    write_random,
)

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATASET = "benchds"
FULL_SIZE = 2 * 10**9
LARGE_FILES = 3
LARGE_SIZE = 400 * 10**6
MEDIUM_FILES = 2
MEDIUM_SIZE = 100 * 10**6
SMALL_FILES = 10_000
FILES_PER_DIR = 1000
KIB = 1024
MIB = 1024 * KIB
BAR_FULL_RATIO = 1.0
BAR_FULL_CPU = 2.0
BAR_OVERWRITE = 1.5 * MIB
BAR_INSERT = 0.5 * MIB
PARTIAL_DIR = ".shoal-partial"




def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_time(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f} s"


def fmt_ratio(q: float | None) -> str:
    return "-" if q is None else f"{q:.2f}"


def fmt_cpu(cpu: tuple[float, float] | None) -> str:
    return "-" if cpu is None else f"{sum(cpu):.2f} s (user {cpu[0]:.2f}, system {cpu[1]:.2f})"


# --- dataset -----------------------------------------------------------------




def make_dataset(root: Path, total: int, small_files: int | None = None) -> dict[str, object]:
    """Large, medium and small files summing to about `total` bytes; all content distinct.

    The small files are ~10,000 per 2 GB unless `small_files` fixes their count
    (the issue's 1 GiB folder: checkpoints and 10,000 images)."""
    f = total / FULL_SIZE
    large = int(LARGE_SIZE * f)
    medium = int(MEDIUM_SIZE * f)
    small_total = total - LARGE_FILES * large - MEDIUM_FILES * medium
    count = small_files if small_files is not None else max(100, int(SMALL_FILES * f))
    root.mkdir(parents=True)
    ckpt = root / "checkpoints"
    ckpt.mkdir()
    for i in range(LARGE_FILES):
        write_random(ckpt / f"step-{i:06d}.pt", large, b"large %d" % i)
    medium_paths = []
    for i in range(MEDIUM_FILES):
        p = root / f"shard-{i}.bin"
        write_random(p, medium, b"medium %d" % i)
        medium_paths.append(p)
    # Small files: sizes 1 KiB .. 2*mean-1 KiB around the mean, consecutive slices of one stream.
    mean = small_total // count
    xof = blake3.blake3(b"small files")
    offset = 0
    written = 0
    for i in range(count):
        if i == count - 1:
            size = max(0, small_total - written)
        else:
            size = max(1, mean // 4 + (i * 7919) % max(1, (mean * 3) // 2))
        d = root / "samples" / f"{i // FILES_PER_DIR:03d}"
        if i % FILES_PER_DIR == 0:
            d.mkdir(parents=True)
        (d / f"{i:06d}.bin").write_bytes(xof.digest(length=size, seek=offset))
        offset += size
        written += size
    return {"large": large, "medium": medium, "medium_paths": medium_paths, "small": count, "small_bytes": written}


def tree_bytes(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if PARTIAL_DIR in dirnames:
            dirnames.remove(PARTIAL_DIR)
        for name in filenames:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def compare_trees(src: Path, dst: Path, only: list[Path] | None = None) -> list[str]:
    """Differences between two trees (content compared byte for byte); [] when identical."""
    problems = []

    def listing(root: Path) -> set[str]:
        out = set()
        for dirpath, dirnames, filenames in os.walk(root):
            if PARTIAL_DIR in dirnames:
                dirnames.remove(PARTIAL_DIR)
            for name in filenames:
                out.add(os.path.relpath(os.path.join(dirpath, name), root))
        return out

    a, b = listing(src), listing(dst)
    problems += [f"missing in copy: {p}" for p in sorted(a - b)[:10]]
    problems += [f"extra in copy: {p}" for p in sorted(b - a)[:10]]
    paths = sorted(a & b) if only is None else [str(p.relative_to(src)) for p in only]
    for rel in paths:
        h1, h2 = blake3.blake3(max_threads=blake3.blake3.AUTO), blake3.blake3(max_threads=blake3.blake3.AUTO)
        h1.update_mmap(src / rel) if (src / rel).stat().st_size else None
        h2.update_mmap(dst / rel) if (dst / rel).exists() and (dst / rel).stat().st_size else None
        if h1.digest() != h2.digest():
            problems.append(f"content differs: {rel}")
            if len(problems) > 20:
                break
    return problems


#: Whether drop_caches also waits for the memory it freed to be handed back to the host
#: (data.settle_free_memory); the benchmarks' --no-settle clears it.
SETTLE = True


def drop_caches(enabled: bool) -> None:
    """Empty the page cache (and, with SETTLE, wait until what that freed is handed back to a VM's host)."""
    if not enabled:
        return
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    if SETTLE:
        settle_free_memory()


def background_cpu(seconds: float = 2.0) -> float:
    """CPUs the rest of the machine keeps busy while this script waits: what the machine CPU figures also count."""
    start = machine_cpu()
    time.sleep(seconds)
    return sum(cpu_since(start)) / seconds


# --- shoal -------------------------------------------------------------------


class ShoalFailed(Exception):
    pass


class Daemon:
    def __init__(self, label: str, home: Path) -> None:
        self.label = label
        self.home = home
        self.pid: int | None = None
        home.mkdir(parents=True)
        (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n')

    def cmd(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "shoal", "--home", str(self.home), *args]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True, cwd: Path = REPO
    ) -> tuple[dict, float, subprocess.CompletedProcess]:
        argv = self.cmd(*args, "--json")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        except subprocess.TimeoutExpired as e:
            raise ShoalFailed(
                f"timed out after {timeout:.0f} s: {shlex.join(argv)}\nstderr: {e.stderr!r}\n" + self.log_tail()
            ) from None
        wall = time.perf_counter() - t0
        if check and proc.returncode != 0:
            raise ShoalFailed(
                f"exit {proc.returncode}: {shlex.join(argv)}\nstdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}\n"
                + self.log_tail()
            )
        try:
            data = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except json.JSONDecodeError:
            raise ShoalFailed(f"not JSON from {shlex.join(argv)}: {proc.stdout[:500]!r}\n" + self.log_tail()) from None
        return data, wall, proc

    def log_tail(self, lines: int = 30) -> str:
        log = self.home / "daemon.log"
        if not log.exists():
            return f"({self.label}: no daemon.log)"
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.label} {log} (last {len(tail)} lines) ---\n" + "\n".join(tail)

    def start(self) -> None:
        data, _, _ = self.run("daemon", "start")
        self.pid = data.get("pid")

    def stop(self) -> str:
        note = ""
        try:
            subprocess.run(self.cmd("daemon", "stop", "--json"), capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            note = f"{self.label}: daemon stop timed out; "
        if self.pid is not None and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(self.pid):
                    break
                time.sleep(0.1)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
                note += f"{self.label}: killed pid {self.pid} with SIGKILL; "
            else:
                note += f"{self.label}: pid {self.pid} needed SIGTERM after daemon stop; "
        return note


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would still answer; daemons are not our children (own session).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_remote(b: Daemon, seq: int, timeout: float = 60, name: str = DATASET) -> float:
    """Wait until receiver `b` sees name@seq in `ls --remote`; return the seconds waited."""
    t0 = time.perf_counter()
    while True:
        data, _, _ = b.run("ls", "--remote", check=False)
        for d in data.get("datasets", []):
            if d.get("name") == name and d.get("head", {}).get("seq", -1) >= seq:
                return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise ShoalFailed(f"{b.label} never saw {name}@{seq} in `ls --remote` within {timeout:.0f} s: {data}\n"
                              + b.log_tail())
        time.sleep(0.2)


def trust_each_other(a: Daemon, b: Daemon) -> str:
    """B trusts A and A trusts B, each by peer id and listen address, named by its label; return a line naming both."""
    ida, _, _ = a.run("id")
    idb, _, _ = b.run("id")
    sta, _, _ = a.run("status")
    stb, _, _ = b.run("status")
    b.run("trust", ida["peer_id"], "--addr", sta["listen"], "--name", a.label)
    a.run("trust", idb["peer_id"], "--addr", stb["listen"], "--name", b.label)
    return f"{a.label} {ida['short']} on {sta['listen']}, {b.label} {idb['short']} on {stb['listen']}"


# --- rsync -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RsyncDaemon:
    def __init__(self, workdir: Path, source: Path) -> None:
        self.dir = workdir / "rsyncd"
        self.dir.mkdir()
        self.conf = self.dir / "rsyncd.conf"
        self.conf.write_text(
            "\n".join([
                f"pid file = {self.dir / 'rsyncd.pid'}",
                f"log file = {self.dir / 'rsyncd.log'}",
                "use chroot = no",
                "uid = root",
                "gid = root",
                "[bench]",
                f"    path = {source}",
                "    read only = yes",
                "",
            ])
        )
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["rsync", "--daemon", "--no-detach", f"--config={self.conf}", "--address=127.0.0.1", f"--port={self.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for _ in range(50):
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                except OSError:
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"rsync --daemon did not start; see {self.dir / 'rsyncd.log'}")

    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/bench/"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def rsync_pull(url: str, dest: str, inplace: bool = False) -> tuple[float, dict[str, int], list[str]]:
    argv = ["rsync", "-a", *(["--inplace"] if inplace else []), "--no-whole-file", "--stats", url, dest]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {shlex.join(argv)}\n{proc.stderr}")
    stats = {}
    keys = ("Total bytes received", "Total bytes sent", "Literal data", "Matched data", "Number of regular files transferred")
    for key in keys:
        m = re.search(rf"^{key}: ([\d,]+)", proc.stdout, re.M)
        if m:
            stats[key] = int(m.group(1).replace(",", ""))
    return wall, stats, argv


# --- the run -------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="dataset size, e.g. 2G, 200M (10**n units); default 2G")
    parser.add_argument("--small-files", type=int, metavar="N",
                        help="number of small files (default ~10,000 per 2 GB); the issue's 1 GiB folder is"
                             " --size 1G --small-files 10000")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="full fetches per tool (default 1): rounds 2..N each fetch the unchanged folder into new"
                             " folders, shoal with a fresh receiver daemon, the tools taking turns at going first;"
                             " prints every round and the medians of the ratios")
    parser.add_argument("--paired", action="store_true",
                        help="in rounds 2..N each tool fetches twice in a row and the second fetch counts: each timed"
                             " right after one of its own (twice the time and disk of plain rounds)")
    parser.add_argument("--dir", help="parent of the working dir for data and copies (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (homes, data, copies)")
    parser.add_argument("--skip-rsync", action="store_true", help="measure shoal only")
    parser.add_argument("--no-drop-caches", action="store_true", help="do not drop the page cache before timed commands")
    parser.add_argument("--no-settle", action="store_true",
                        help="start timed commands right after dropping the page cache, without waiting for the memory"
                             " it freed to be handed back to a VM's host")
    args = parser.parse_args()
    global SETTLE
    SETTLE = not args.no_settle
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.paired and args.rounds < 2:
        parser.error("--paired needs --rounds 2 or more")
    total = parse_size(args.size)
    drop = not args.no_drop_caches
    if drop and os.geteuid() != 0:
        print("not root: cannot drop caches; running with --no-drop-caches", file=sys.stderr)
        drop = False
    if not args.skip_rsync and shutil.which("rsync") is None:
        print("rsync is not installed (apt-get install rsync), or pass --skip-rsync", file=sys.stderr)
        return 1

    cmdline = shlex.join([os.path.relpath(PYTHON, REPO) if PYTHON.startswith(str(REPO)) else PYTHON, *sys.argv])
    homes = Path(tempfile.mkdtemp(prefix="shoal-fb-", dir="/tmp"))  # short: control socket paths <= 107 bytes
    workdir = Path(tempfile.mkdtemp(prefix="shoal-fetch-bench-", dir=args.dir or "/tmp"))
    a = b = None
    extra: list[Daemon] = []  # the fresh receivers of rounds 2..N
    rsyncd = None
    rows: dict[str, dict] = {}
    notes: list[str] = []
    failures: list[str] = []
    shoal_ok = True
    head_seq = 0  # the seq of A's last share
    try:
        data = workdir / "data"
        t0 = time.perf_counter()
        info = make_dataset(data, total, args.small_files)
        files, size = tree_bytes(data)
        print(f"generated {files} files, {size / 1e9:.3f} GB in {time.perf_counter() - t0:.1f} s: {data}", file=sys.stderr)
        medium_paths: list[Path] = info["medium_paths"]  # type: ignore[assignment]
        busy = background_cpu()
        dest_shoal = workdir / "dest-shoal"
        dest_rsync = workdir / "dest-rsync"

        # --- shoal set-up --------------------------------------------------
        a, b = Daemon("A", homes / "a"), Daemon("B", homes / "b")
        try:
            a.start()
            b.start()
            print(trust_each_other(a, b), file=sys.stderr)
        except ShoalFailed as e:
            shoal_ok = False
            failures.append(f"shoal set-up failed: {e}")

        def shoal_fetch(receiver: Daemon, dest: Path, row: str, seq: int, check_only: list[Path] | None) -> dict:
            """The timed `shoal fetch` of name@seq on `receiver` into `dest`, its copy then compared with the source."""
            drop_caches(drop)
            cpu = machine_cpu()
            fetch, wall, proc = receiver.run("fetch", DATASET, str(dest), timeout=1800)
            cpu = cpu_since(cpu)
            if fetch.get("version", {}).get("seq") != seq:
                failures.append(f"{row}: fetched seq {fetch.get('version', {}).get('seq')}, expected {seq}")
            problems = compare_trees(data, dest, check_only)
            if problems:
                failures.append(f"{row}: shoal's copy differs from the source: " + "; ".join(problems[:10]))
            return {
                "shoal_time": wall, "shoal_bytes": fetch["bytes_received"], "shoal_reused": fetch.get("bytes_reused"),
                "shoal_seconds": fetch.get("seconds"), "first_byte": fetch.get("first_byte"),
                "files_written": fetch.get("files_written"), "files_total": fetch.get("files_total"),
                "warnings": fetch.get("warnings", []), "stderr": proc.stderr.strip(), "shoal_cpu": cpu,
            }

        def shoal_share_fetch(row: str, check_only: list[Path] | None) -> None:
            nonlocal shoal_ok, head_seq
            if not shoal_ok:
                return
            try:
                drop_caches(drop)
                share, share_wall, _ = a.run("share", str(data), "--name", DATASET, timeout=1800)
                head_seq = share["version"]["seq"]
                waited = wait_remote(b, head_seq)
                fetched = shoal_fetch(b, dest_shoal, row, head_seq, check_only)
                rows.setdefault(row, {}).update(
                    fetched, share_time=share_wall, new_bytes=share.get("new_bytes"), wait_remote=waited,
                    warnings=fetched["warnings"] + share.get("warnings", []),
                )
            except ShoalFailed as e:
                shoal_ok = False
                failures.append(f"{row}: shoal failed: {e}")

        def rsync_timed(dest: Path, row: str, check_only: list[Path] | None) -> tuple[dict, list[str]]:
            """The timed rsync pull into `dest` and the sync after it, its copy then compared with the source;
            the row's fields and the rsync command."""
            drop_caches(drop)
            start = machine_cpu()
            wall, stats, argv = rsync_pull(rsyncd.url(), str(dest) + "/")
            cpu = cpu_since(start)
            # shoal's fetch ends with syncfs: rsync's copy is only as far once flushed too.
            t0 = time.perf_counter()
            os.sync()
            flushed = wall + time.perf_counter() - t0
            flushed_cpu = cpu_since(start)
            problems = compare_trees(data, dest, check_only)
            if problems:
                failures.append(f"{row}: rsync's copy differs from the source: " + "; ".join(problems[:10]))
            timed = {"rsync_time": wall, "rsync_stats": stats, "rsync_cpu": cpu, "synced_time": flushed,
                     "synced_cpu": flushed_cpu}
            return timed, argv

        def rsync_run(row: str, check_only: list[Path] | None) -> None:
            if rsyncd is None:
                return
            try:
                timed, argv = rsync_timed(dest_rsync, row, check_only)
                rows.setdefault(row, {}).update(timed)
                notes.append(f"rsync command: {shlex.join(argv)}")
                if check_only:
                    # The same change pulled with --inplace into a copy of the old file alone.
                    rel = str(check_only[0].relative_to(data))
                    old = workdir / "inplace-old.bin"
                    drop_caches(drop)
                    wall, stats, argv = rsync_pull(rsyncd.url() + rel, str(old), inplace=True)
                    if old.read_bytes() != check_only[0].read_bytes():
                        failures.append(f"{row}: rsync --inplace copy differs from the source")
                    old.unlink()
                    rows[row].update(inplace_time=wall, inplace_stats=stats, inplace_cmd=shlex.join(argv))
            except Exception as e:  # noqa: BLE001 - reported in the output
                failures.append(f"{row}: rsync failed: {e}")

        def shoal_round(r: str, result: dict) -> None:
            nonlocal shoal_ok
            if not shoal_ok:
                return
            row = f"full fetch round {r}"
            # A receiver that holds the data copies it locally instead of fetching: each round needs a fresh one.
            receiver = Daemon(f"B{r}", homes / f"b{r}")
            extra.append(receiver)
            try:
                receiver.start()
                print(trust_each_other(a, receiver), file=sys.stderr)
                wait_remote(receiver, head_seq)
                result.update(shoal_fetch(receiver, workdir / f"dest-shoal-{r}", row, head_seq, None))
            except ShoalFailed as e:
                shoal_ok = False
                failures.append(f"{row}: shoal failed: {e}")

        def rsync_round(r: str, result: dict) -> None:
            if rsyncd is None:
                return
            row = f"full fetch round {r}"
            try:
                dest = workdir / f"dest-rsync-{r}"
                dest.mkdir()
                result.update(rsync_timed(dest, row, None)[0])
            except Exception as e:  # noqa: BLE001 - reported in the output
                failures.append(f"{row}: rsync failed: {e}")

        if not args.skip_rsync:
            rsyncd = RsyncDaemon(workdir, data)
            rsyncd.start()
            dest_rsync.mkdir()

        # --- 1. full fetch -------------------------------------------------
        print("full fetch: shoal ...", file=sys.stderr)
        shoal_share_fetch("full fetch", None)
        print("full fetch: rsync ...", file=sys.stderr)
        rsync_run("full fetch", None)

        # --- 2. delta: 1 MiB overwritten in place in the middle -------------
        target = medium_paths[0]
        if rsyncd is not None:
            shutil.copy2(target, workdir / "inplace-old.bin")
        mid = target.stat().st_size // 2
        with open(target, "r+b") as f:
            f.seek(mid)
            f.write(blake3.blake3(b"overwrite").digest(length=MIB))
        now = time.time_ns()
        os.utime(target, ns=(now, now))
        print("delta 1 MiB overwrite: shoal ...", file=sys.stderr)
        shoal_share_fetch("delta 1 MiB overwrite", [target])
        print("delta 1 MiB overwrite: rsync ...", file=sys.stderr)
        rsync_run("delta 1 MiB overwrite", [target])

        # --- 3. delta: 1 KiB inserted at offset 4 KiB ---------------------
        target = medium_paths[1]
        if rsyncd is not None:
            shutil.copy2(target, workdir / "inplace-old.bin")
        body = target.read_bytes()
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(body[: 4 * KIB] + blake3.blake3(b"insert").digest(length=KIB) + body[4 * KIB :])
        del body
        os.replace(tmp, target)
        print("delta 1 KiB insert: shoal ...", file=sys.stderr)
        shoal_share_fetch("delta 1 KiB insert", [target])
        print("delta 1 KiB insert: rsync ...", file=sys.stderr)
        rsync_run("delta 1 KiB insert", [target])

        # --- 4. rounds 2..N: the full fetch again ----------------------------
        # The folder is as the last delta's share left it, so head_seq is its version. Each round's copies go to
        # new folders, and earlier ones stay: deleting ~10,000 files slows file creation for minutes after.
        rounds: list[tuple[str, dict, dict]] = [("shoal" if rsyncd else "-", rows.get("full fetch", {}), {})]
        for r in range(2, args.rounds + 1):
            # The tools take turns at going first (round 1: shoal), so neither always runs right after the other.
            steps = [("shoal", shoal_round), ("rsync", rsync_round)]
            if r % 2 == 0:
                steps.reverse()
            result: dict = {}
            before: dict = {}  # with --paired: each tool's first fetch of the round, right after the other tool
            for tool, step in steps:
                if args.paired:
                    print(f"full fetch round {r}: {tool}, right after the other tool ...", file=sys.stderr)
                    step(f"{r}-first", before)
                print(f"full fetch round {r}: {tool} ...", file=sys.stderr)
                step(str(r), result)
            rounds.append((steps[0][0] if rsyncd else "-", result, before))

        # --- report ----------------------------------------------------------
        notes.append(f"background: other processes kept {busy:.2f} of {os.cpu_count()} CPUs busy in the 2 s before the"
                     " runs; the machine CPU figures include whatever runs beside the benchmark")
        report(args, cmdline, total, info, files, size, rows, rounds, notes, failures, drop)
        return 1 if failures else 0
    finally:
        for d in (a, b, *extra):
            if d is not None:
                note = d.stop()
                if note:
                    print(f"cleanup: {note}", file=sys.stderr)
        if rsyncd is not None:
            rsyncd.stop()
        if args.keep:
            print(f"kept: {homes} {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(homes, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)


def report(args, cmdline, total, info, files, size, rows, rounds, notes, failures, drop) -> None:  # noqa: ANN001
    print()
    print(f"command: {cmdline}")
    rsync = "-"
    if shutil.which("rsync"):
        rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout.split()[2]
    print(f"machine: nproc={os.cpu_count()}, CPU: {cpu_model()}, Python {platform.python_version()}, rsync {rsync}")
    print(f"dataset: {files} files, {size / 1e9:.3f} GB ({LARGE_FILES} x {info['large'] / 1e6:.0f} MB, "
          f"{MEDIUM_FILES} x {info['medium'] / 1e6:.0f} MB, {info['small']} small files = {info['small_bytes'] / 1e6:.0f} MB), "
          "incompressible, all content distinct")
    print("page cache: " + ("dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed command of both tools"
                            if drop else "NOT dropped"))
    if drop:
        print("free memory: " + settle_note())
    print("times: wall time of the client command (`shoal fetch --json` on B; `rsync` pulling from rsync://127.0.0.1);"
          " shoal's time excludes A's `share`, shown separately; shoal's fetch ends with syncfs, so the ratios are"
          " against `rsync ... && sync`")
    print("rsync bytes: 'Total bytes received' by the client (Literal data in brackets)")
    print("CPU: user + system seconds the whole machine spent during the timed command (/proc/stat: every process"
          " and kernel thread)")
    print()
    print(f"shoal fetch vs rsync on {cpu_model()} x {os.cpu_count()}, loopback:")
    header = ["", "shoal time", "shoal bytes", "rsync", "rsync+sync", "rsync bytes (literal)", "time ratio",
              "shoal CPU", "rsync CPU", "rsync+sync CPU", "CPU ratio", "bar", "A share"]
    table = [_table_row(name, rows.get(name, {}), size) for name in ("full fetch", "delta 1 MiB overwrite", "delta 1 KiB insert")]
    _print_table(header, table)
    print("ratios: shoal / (rsync + sync); CPU columns are user+system seconds, split below")
    if len(rounds) > 1:
        _print_rounds(rounds)
    print()
    for name, r in rows.items():
        print(f"{name}: CPU shoal {fmt_cpu(r.get('shoal_cpu'))}; rsync {fmt_cpu(r.get('rsync_cpu'))};"
              f" rsync+sync {fmt_cpu(r.get('synced_cpu'))}")
    for name, r in rows.items():
        if "shoal_bytes" in r:
            print(f"{name}: shoal fetch json seconds={r['shoal_seconds']}, first byte after {r.get('first_byte')} s, "
                  f"bytes_received={r['shoal_bytes']}, "
                  f"bytes_reused={r['shoal_reused']}, files_written={r['files_written']}/{r['files_total']}; "
                  f"A share new_bytes={r['new_bytes']}; B saw the version {r['wait_remote']:.2f} s after share returned")
            if r["warnings"]:
                print(f"  warnings: {r['warnings']}")
        if "rsync_stats" in r:
            print(f"{name}: rsync stats {r['rsync_stats']}")
        if "inplace_stats" in r:
            st = r["inplace_stats"]
            print(f"{name}: rsync --inplace on the changed file alone: {fmt_bytes(st.get('Total bytes received'))} received"
                  f" (literal {fmt_bytes(st.get('Literal data'))}), {fmt_time(r['inplace_time'])}: {r['inplace_cmd']}")
    for n in dict.fromkeys(notes):
        print(n)
    print_failures(failures)


def _print_table(header: list[str], table: list[list[str]]) -> None:
    widths = [max(len(str(x[i])) for x in [header, *table]) for i in range(len(header))]
    line = " | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in table:
        print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def settle_note() -> str:
    """What the free memory was like at the start of each timed command, for a report."""
    if not REPORTED_KIB.exists():
        return "this kernel does not hand free memory back to a host (no free page reporting): nothing to wait for"
    if SETTLE:
        return ("after each drop, waited until the kernel had handed the memory it freed back to the VM's host"
                " (free page reporting settled), so every timed command starts from the same state")
    return ("NOT settled (--no-settle): each timed command ran right after the drop, on memory its predecessor"
            " freed and the host had not taken back yet; the order of the commands then matters")


def _print_rounds(rounds: list[tuple[str, dict, dict]]) -> None:
    """One line a full-fetch round (which tool went first and the row's fields), then the medians of both ratios."""
    print()
    paired = any(before for _, _, before in rounds)
    print(f"full fetch, {len(rounds)} rounds (round 1 is the row above; each later round fetches into new folders,"
          " shoal with a fresh receiver daemon" + ("; the medians are of rounds 2.., each tool's second fetch in a row"
                                                   if paired else "")
          + "):")
    header = ["round", "first", "shoal time", "rsync", "rsync+sync", "time ratio", "shoal CPU", "rsync+sync CPU",
              "CPU ratio"]
    table = []
    time_ratios: list[float] = []
    cpu_ratios: list[float] = []
    for i, (first, r, _) in enumerate(rounds, 1):
        st, synced = r.get("shoal_time"), r.get("synced_time")
        shoal_cpu, synced_cpu = _cpu(r, "shoal_cpu"), _cpu(r, "synced_cpu")
        # Paired, round 1 does not count: its rsync runs right after shoal.
        counted = not paired or i > 1
        for ratios, q in ((time_ratios, _quotient(st, synced)), (cpu_ratios, _quotient(shoal_cpu, synced_cpu))):
            if q is not None and counted:
                ratios.append(q)
        label = str(i) if counted else f"{i} (not counted)"
        table.append([label, first, fmt_time(st), fmt_time(r.get("rsync_time")), fmt_time(synced), _ratio(st, synced),
                      fmt_time(shoal_cpu), fmt_time(synced_cpu), _ratio(shoal_cpu, synced_cpu)])
    median_time = statistics.median(time_ratios) if time_ratios else None
    median_cpu = statistics.median(cpu_ratios) if cpu_ratios else None
    table.append(["median", "", "", "", "", fmt_ratio(median_time), "", "", fmt_ratio(median_cpu)])
    _print_table(header, table)
    print(f"bar on the medians: {_full_verdict(median_time, median_cpu)}")
    if paired:
        _print_order_effect(rounds[1:])


def _print_order_effect(rounds: list[tuple[str, dict, dict]]) -> None:
    """Medians of each tool's time right after itself (counted) and right after the other tool (not counted)."""
    def median(runs: list[dict], key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key)]
        return statistics.median(values) if values else None

    counted = [r for _, r, _ in rounds]
    firsts = [before for _, _, before in rounds]
    for tool, key in (("shoal", "shoal_time"), ("rsync + sync", "synced_time")):
        print(f"{tool}: median {fmt_time(median(counted, key))} right after itself (counted),"
              f" {fmt_time(median(firsts, key))} right after the other tool")
    crossed = _quotient(median(firsts, "shoal_time"), median(firsts, "synced_time"))
    print(f"time ratio of the medians of the fetches right after the other tool (not counted): {fmt_ratio(crossed)}")


def _quotient(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _ratio(a: float | None, b: float | None) -> str:
    return fmt_ratio(_quotient(a, b))


def _cpu(r: dict, key: str) -> float | None:
    """User + system seconds of a row's (user, system) CPU field, if measured."""
    return sum(r[key]) if key in r else None


def _table_row(name: str, r: dict, size: int) -> list[str]:
    st, sb, rt, synced = r.get("shoal_time"), r.get("shoal_bytes"), r.get("rsync_time"), r.get("synced_time")
    shoal_cpu, rsync_cpu, synced_cpu = _cpu(r, "shoal_cpu"), _cpu(r, "rsync_cpu"), _cpu(r, "synced_cpu")
    rs = r.get("rsync_stats", {})
    rb = rs.get("Total bytes received")
    shoal_bytes = fmt_bytes(sb)
    rsync_bytes = "-" if rb is None else f"{fmt_bytes(rb)} ({fmt_bytes(rs.get('Literal data'))})"
    if name == "full fetch":
        if st:
            shoal_bytes += f" ({size / st / 1e6:.0f} MB/s)"
        if rt:
            rsync_bytes += f" {size / rt / 1e6:.0f} MB/s"
        verdict = _full_verdict(_quotient(st, synced), _quotient(shoal_cpu, synced_cpu))
    else:
        bar = BAR_OVERWRITE if "overwrite" in name else BAR_INSERT
        verdict = "-" if sb is None else (f"<={fmt_bytes(bar)} " + ("ok" if sb <= bar else "MISSED"))
    return [name, fmt_time(st), shoal_bytes, fmt_time(rt), fmt_time(synced), rsync_bytes, _ratio(st, synced),
            fmt_time(shoal_cpu), fmt_time(rsync_cpu), fmt_time(synced_cpu), _ratio(shoal_cpu, synced_cpu), verdict,
            fmt_time(r.get("share_time"))]


def _full_verdict(time_ratio: float | None, cpu_ratio: float | None) -> str:
    if time_ratio is None or cpu_ratio is None:
        return "-"
    ok = time_ratio <= BAR_FULL_RATIO and cpu_ratio <= BAR_FULL_CPU
    return f"time<={BAR_FULL_RATIO}, CPU<={BAR_FULL_CPU} " + ("ok" if ok else "MISSED")


if __name__ == "__main__":
    sys.exit(main())
