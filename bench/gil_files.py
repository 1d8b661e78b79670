"""What the GIL costs a thread that writes small files beside busy Python code, in one run.

A fetch's worker threads make a system call per step of each small file (create,
write, start writeback, close, rename, stat), and every return from one waits
for the GIL. This writes N files of 30 KB the way the fetch's writer and
finisher do (shoal.daemon.store.flush.start_writeback included), and prints
files/s for the writer thread (each case stops after LIMIT seconds):

* alone;
* beside a thread running Python without pause, at CPython's default switch interval (5 ms);
* the same at the daemon's interval (shoal.daemon.main.SWITCH_INTERVAL);
* in a process of its own, the busy thread left in this one;
* beside busy Python at the daemon's interval, with the calls made in batches of
  128 files by shoal.daemon.store._filebatch (C, the GIL released once a batch),
  as the fetch's writer and finisher now make them.

    .venv/bin/python bench/gil_files.py [--files 10000] [--dir /tmp] [--rounds 2]
"""

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from data import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.daemon.main import SWITCH_INTERVAL  # noqa: E402
from shoal.daemon.store._filebatch import replace, write_new  # noqa: E402
from shoal.daemon.store.flush import start_writeback  # noqa: E402

DATA = os.urandom(30_000)
DEFAULT_INTERVAL = 0.005
#: Files per C call in the batched case: the writer's WRITE_BATCH.
BATCH = 128
#: Seconds a case may take: beside busy Python at 5 ms a file can take tens of milliseconds.
LIMIT = 10.0


def write_files(root: str, count: int) -> tuple[int, float]:
    """Create, write, start writeback, close, rename and stat up to `count` files, for at most
    LIMIT seconds; the files written and the seconds taken."""
    os.makedirs(os.path.join(root, "partial"), exist_ok=True)
    os.makedirs(os.path.join(root, "dest"), exist_ok=True)
    started = time.perf_counter()
    i = 0
    while i < count and time.perf_counter() - started < LIMIT:
        partial = os.path.join(root, "partial", f"{i}.part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.pwrite(fd, DATA, 0)
        start_writeback(fd)
        os.close(fd)
        target = os.path.join(root, "dest", str(i))
        os.replace(partial, target)
        os.lstat(target)
        i += 1
    return i, time.perf_counter() - started


def write_batches(root: str, count: int) -> tuple[int, float]:
    """write_files' steps, BATCH files per call of the C module."""
    os.makedirs(os.path.join(root, "partial"), exist_ok=True)
    os.makedirs(os.path.join(root, "dest"), exist_ok=True)
    started = time.perf_counter()
    i = 0
    while i < count and time.perf_counter() - started < LIMIT:
        names = range(i, min(i + BATCH, count))
        partials = [os.path.join(root, "partial", f"{n}.part") for n in names]
        if any(write_new([(partial, 0o644, DATA) for partial in partials])):
            raise OSError("write_new failed")
        if any(row[0] for row in replace([(p, os.path.join(root, "dest", str(n))) for p, n in zip(partials, names)])):
            raise OSError("replace failed")
        i += len(names)
    return i, time.perf_counter() - started


def busy(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i * i


def measure(work: Path, count: int, where: str, interval: float) -> float:
    """Files/s of write_files run `where` ("alone", "thread", "process", or "batched": beside
    busy Python, in C) at switch `interval`."""
    root = tempfile.mkdtemp(dir=work)
    os.sync()
    stop = threading.Event()
    spinner = threading.Thread(target=busy, args=(stop,))
    sys.setswitchinterval(interval)
    try:
        if where != "alone":
            spinner.start()
        if where == "process":
            with multiprocessing.get_context("fork").Pool(1) as pool:
                done, seconds = pool.apply(write_files, (root, count))
        elif where == "batched":
            done, seconds = write_batches(root, count)
        else:
            done, seconds = write_files(root, count)
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join()
        sys.setswitchinterval(DEFAULT_INTERVAL)
        shutil.rmtree(root, ignore_errors=True)
    return done / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoal-gil-", dir=args.dir))
    cases = [
        ("alone", "alone", DEFAULT_INTERVAL),
        (f"beside busy Python, {DEFAULT_INTERVAL * 1000:g} ms", "thread", DEFAULT_INTERVAL),
        (f"beside busy Python, {SWITCH_INTERVAL * 1000:g} ms", "thread", SWITCH_INTERVAL),
        ("own process, busy Python in this one", "process", DEFAULT_INTERVAL),
        (f"beside busy Python, {SWITCH_INTERVAL * 1000:g} ms, C batches", "batched", SWITCH_INTERVAL),
    ]
    print(f"bench/gil_files.py --files {args.files}: {cpu_model()} x {os.cpu_count()}, Python {sys.version.split()[0]}")
    print(f"{'writer thread':40s} " + " ".join(f"{'round ' + str(r + 1):>12s}" for r in range(args.rounds)))
    try:
        results = {label: [] for label, _, _ in cases}
        for _ in range(args.rounds):
            for label, where, interval in cases:
                results[label].append(measure(work, args.files, where, interval))
        for label, rates in results.items():
            print(f"{label:40s} " + " ".join(f"{rate:>8.0f} f/s" for rate in rates))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
