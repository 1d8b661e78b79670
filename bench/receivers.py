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

With --workers, a third way runs in each round: one fresh daemon B fetching all of it
with `fetch.workers` set to the number of processes, so that shoal deals the files to
worker processes itself (shoal/daemon/fetch/split.py); the table gives B's own CPU and,
below it, each worker's (sampled from /proc while it runs, and in all from B's reaped
children).

    .venv/bin/python bench/receivers.py [--processes 2] [--rounds 3] [--size 1G]
        [--small-files 10000] [--part small] [--workers] [--dir DIR] [--no-settle]
"""

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import fetch
from data import cpu_model, cpu_since, fetch_workers, machine_cpu, parse_size, print_failures
from fetch import DATASET, Daemon, ShoalFailed, drop_caches, settle_note, wait_remote
from fetch_cpu import TICK, Cpu, daemon_cpu, dataset
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


def children_cpu(pid: int) -> Cpu:
    """The CPU of the children `pid` has waited for (cutime, cstime): its fetch workers, once they end."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return Cpu(int(fields[13]) / TICK, int(fields[14]) / TICK)


class WorkerSampler:
    """Each fetch worker's CPU, the last seen while it ran, sampled from /proc every few milliseconds."""

    def __init__(self, daemon: int) -> None:
        self._daemon = daemon
        self.seen: dict[int, Cpu] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WorkerSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for pid, fields in fetch_workers(self._daemon).items():
                self.seen[pid] = Cpu(int(fields[11]) / TICK, int(fields[12]) / TICK)


def fetch_at_once(a: Daemon, work: Path, label: str, parts: list[list[str]], workers: int = 1) -> dict:
    """Fresh daemons, one per part (one part of no patterns: everything), fetching at the same time;
    with `workers`, the one daemon splits its fetch over that many worker processes."""
    bs = [Daemon(f"B{i + 1}" if len(parts) > 1 else "B", work / f"{label}-b{i}") for i in range(len(parts))]
    for b in bs:
        with open(b.home / "config.toml", "a") as config:
            config.write(f"[fetch]\nworkers = {workers}\n")
        b.start()
    try:
        link([a, *bs])
        for b in bs:
            wait_remote(b, 1)
        drop_caches(True)
        pids = [a.pid, *(b.pid for b in bs)]
        before = [daemon_cpu(pid)[0] for pid in pids]
        reaped = children_cpu(bs[0].pid)
        machine = machine_cpu()
        t0 = time.perf_counter()
        procs = []
        with WorkerSampler(bs[0].pid) as sampler:
            for i, (b, patterns) in enumerate(zip(bs, parts)):
                include = [arg for p in patterns for arg in ("--include", p)]
                argv = b.cmd("fetch", DATASET, str(work / f"{label}-dest{i}"), *include, "--json")
                procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            results = []
            for b, proc in zip(bs, procs):
                out, err = proc.communicate(timeout=1800)
                if proc.returncode != 0:
                    raise ShoalFailed(f"{b.label}: exit {proc.returncode}: {err.strip()}\n" + b.log_tail())
                results.append(json.loads(out))
        wall = time.perf_counter() - t0
        used = cpu_since(machine)
        daemons = [daemon_cpu(pid)[0] - cpu for pid, cpu in zip(pids, before)]
        children = children_cpu(bs[0].pid) - reaped
        if workers > 1 and results[0]["workers"] != workers:
            raise ShoalFailed(f"{label}: the fetch ran with {results[0]['workers']} workers, not {workers}")
    finally:
        for b in bs:
            b.stop()
    files = sum(1 for i in range(len(parts)) for p in (work / f"{label}-dest{i}").rglob("*") if p.is_file())
    return {
        "label": label, "wall": wall, "machine": Cpu(*used), "daemons": daemons, "files": files,
        "workers": [sampler.seen[pid] for pid in sorted(sampler.seen)] if workers > 1 else [],
        "children": children if workers > 1 else None,
    }


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
    for r in rows:
        if r["children"] is not None:
            each = ", ".join(f"worker {i + 1} {cpu}" for i, cpu in enumerate(r["workers"]))
            print(f"{r['label']}: daemon B itself {r['daemons'][1]}; its workers {r['children']} in all ({each})")
    print()
    ways = [("one", lambda r: len(r["daemons"]) == 2 and r["children"] is None),
            ("split", lambda r: len(r["daemons"]) > 2),
            ("workers", lambda r: r["children"] is not None)]
    for name, mine_of in ways:
        mine = [r for r in rows if mine_of(r)]
        if not mine:
            continue
        wall = statistics.median(r["wall"] for r in mine)
        machine = statistics.median(r["machine"].total for r in mine)
        receiving = statistics.median(
            sum(c.total for c in r["daemons"][1:]) + (r["children"].total if r["children"] else 0) for r in mine
        )
        print(f"{name}: median of {len(mine)}: wall {wall:.2f} s, machine CPU {machine:.2f} s, "
              f"receiving CPU {receiving:.2f} s (daemons and their workers)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="receiving daemons to split the fetch over")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, taking turns at going first")
    parser.add_argument("--size", default="1G", help="dataset size before --part selects from it (default 1G)")
    parser.add_argument("--small-files", type=int, default=10000, metavar="N", help="small files (default 10000)")
    parser.add_argument("--part", choices=("full", "large", "small"), default="small")
    parser.add_argument("--workers", action="store_true",
                        help="also one daemon splitting its fetch over --processes worker processes (fetch.workers)")
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
            ways = [("one", [[]], 1), ("split", parts, 1)]
            if args.workers:
                ways.append(("workers", [[]], args.processes))
            for name, split, workers in ways if run % 2 == 0 else ways[::-1]:
                print(f"run {run}: {name} ...", file=sys.stderr)
                rows.append(fetch_at_once(a, work, f"{name}{run}", split, workers))
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
