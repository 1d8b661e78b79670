"""One receiving daemon against N, each fetching 1/N of the same files at once: what splitting
a fetch's per-file work over processes gains and costs on this machine (issue 19, item 2).

A daemon's per-file Python (decoding, planning, writing, installing, recording a file)
holds one GIL however many cores there are; N processes would each hold their own.
This measures that split without changing shoal: daemon A shares the bench dataset
(bench/fetch.py's, or a --part of it, as bench/fetch_cpu.py makes it); then, in turns,
one fresh daemon B fetches all of it, and N fresh daemons B1..BN fetch disjoint
parts of it at the same time (`--include` patterns of whole folders, dealt out so
that each gets about as many files). Each run starts from a dropped page cache (and,
on a VM that hands free memory back to its host, settled: bench/fetch.py). The table
gives each run's wall time until every fetch is done, the whole machine's CPU and
each daemon's CPU (user/system, /proc/PID/stat).

    .venv/bin/python bench/receivers.py [--processes 2] [--rounds 3] [--size 1G]
        [--small-files 10000] [--part small] [--dir DIR] [--no-settle]
"""

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fetch
from data import cpu_model, cpu_since, machine_cpu, parse_size, print_failures
from fetch import DATASET, Daemon, ShoalFailed, drop_caches, settle_note, wait_remote
from fetch_cpu import Cpu, daemon_cpu, dataset
from switch import link


def groups(data: Path, n: int) -> list[list[str]]:
    """`--include` patterns in `n` groups of about as many files each: every folder that
    holds files directly is one pattern, every file at the top one more."""
    units: list[tuple[int, str]] = []
    for folder in [data, *sorted(p for p in data.rglob("*") if p.is_dir())]:
        files = [p for p in folder.iterdir() if p.is_file()]
        if folder == data:
            units += [(1, f"/{p.name}") for p in sorted(files)]
        elif files:
            units.append((len(files), f"/{folder.relative_to(data).as_posix()}/*"))
    dealt: list[tuple[int, list[str]]] = [(0, []) for _ in range(n)]
    for count, pattern in sorted(units, reverse=True):
        i = min(range(n), key=lambda k: dealt[k][0])
        dealt[i] = (dealt[i][0] + count, [*dealt[i][1], pattern])
    if any(not patterns for _, patterns in dealt):
        raise ShoalFailed(f"{data} has too few folders to split {n} ways")
    return [patterns for _, patterns in dealt]


def fetch_at_once(a: Daemon, work: Path, label: str, parts: list[list[str]]) -> dict:
    """Fresh daemons, one per part (one part of no patterns: everything), fetching at the same time."""
    bs = [Daemon(f"B{i + 1}" if len(parts) > 1 else "B", work / f"{label}-b{i}") for i in range(len(parts))]
    for b in bs:
        b.start()
    try:
        link([a, *bs])
        for b in bs:
            wait_remote(b, 1)
        drop_caches(True)
        pids = [a.pid, *(b.pid for b in bs)]
        before = [daemon_cpu(pid)[0] for pid in pids]
        machine = machine_cpu()
        t0 = time.perf_counter()
        procs = []
        for i, (b, patterns) in enumerate(zip(bs, parts)):
            include = [arg for p in patterns for arg in ("--include", p)]
            argv = b.cmd("fetch", DATASET, str(work / f"{label}-dest{i}"), *include, "--json")
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for b, proc in zip(bs, procs):
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise ShoalFailed(f"{b.label}: exit {proc.returncode}: {err.strip()}\n" + b.log_tail())
        wall = time.perf_counter() - t0
        used = cpu_since(machine)
        daemons = [daemon_cpu(pid)[0] - cpu for pid, cpu in zip(pids, before)]
    finally:
        for b in bs:
            b.stop()
    files = sum(1 for i in range(len(parts)) for p in (work / f"{label}-dest{i}").rglob("*") if p.is_file())
    return {"label": label, "wall": wall, "machine": Cpu(*used), "daemons": daemons, "files": files}


def report(rows: list[dict], args: argparse.Namespace, parts: list[list[str]]) -> None:
    print()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {cpu_model()}; page cache dropped before every run; free memory: {settle_note()}")
    print(f"split: {len(parts)} receivers, {', '.join(str(len(p)) + ' patterns' for p in parts)}")
    print("CPU: user/system seconds; machine = the whole machine (/proc/stat); A = the sender")
    print()
    n = args.processes
    header = ["run", "receivers", "wall", "files", "machine", "A", *[f"B{i + 1}" for i in range(n)]]
    table = [[r["label"], str(len(r["daemons"]) - 1), f"{r['wall']:.2f} s", str(r["files"]), str(r["machine"]),
              *[str(c) for c in r["daemons"]], *[""] * (n + 1 - len(r["daemons"]))] for r in rows]
    widths = [max(len(x[i]) for x in [header, *table]) for i in range(len(header))]
    line = " | ".join(h.rjust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in table:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
    print()
    for receivers in (1, n):
        mine = [r for r in rows if len(r["daemons"]) - 1 == receivers]
        wall = statistics.median(r["wall"] for r in mine)
        machine = statistics.median(r["machine"].total for r in mine)
        receiving = statistics.median(sum(c.total for c in r["daemons"][1:]) for r in mine)
        print(f"{receivers} receiver(s): median of {len(mine)}: wall {wall:.2f} s, machine CPU {machine:.2f} s, "
              f"receivers' CPU {receiving:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="receiving daemons to split the fetch over")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, taking turns at going first")
    parser.add_argument("--size", default="1G", help="dataset size before --part selects from it (default 1G)")
    parser.add_argument("--small-files", type=int, default=10000, metavar="N", help="small files (default 10000)")
    parser.add_argument("--part", choices=("full", "large", "small"), default="small")
    parser.add_argument("--dir", type=Path, metavar="DIR",
                        help="work in DIR and keep it: reuse the dataset generated there, delete nothing")
    parser.add_argument("--no-settle", action="store_true", help="bench/fetch.py's option")
    args = parser.parse_args()
    if args.processes < 2:
        parser.error("--processes must be 2 or more")
    fetch.SETTLE = not args.no_settle
    work = Path(tempfile.mkdtemp(prefix="shoal-receivers-", dir=args.dir or "/tmp"))
    failures: list[str] = []
    rows: list[dict] = []
    a = Daemon("A", work / "a")
    try:
        data = dataset(args.dir or work, parse_size(args.size), args.small_files, args.part)
        parts = groups(data, args.processes)
        a.start()
        a.run("share", str(data), "--name", DATASET, "--no-keep", timeout=1800)
        for run in range(args.rounds):
            ways = [("one", [[]]), ("split", parts)]
            for name, split in ways if run % 2 == 0 else ways[::-1]:
                print(f"run {run}: {name} ...", file=sys.stderr)
                rows.append(fetch_at_once(a, work, f"{name}{run}", split))
        report(rows, args, parts)
    except ShoalFailed as e:
        failures.append(str(e))
    finally:
        a.stop()
        if args.dir:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_failures(failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
