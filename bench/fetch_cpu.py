"""Where a full fetch's CPU goes, and whether a change moved it: share once, fetch into fresh daemons.

Generates the dataset of bench/fetch.py (or only its large or only its small
files), starts daemon A, which shares it once, and for every run a fresh daemon
B that fetches it into an empty DEST with the page cache dropped (and, on a VM that
hands free memory back to its host, that settled: bench/fetch.py). Prints, per
run, the wall time of `shoal fetch`, its first byte, the whole machine's CPU
(/proc/stat) and each daemon's CPU split into its event-loop thread and the
rest (worker threads), user and system (/proc/PID/stat and
/proc/PID/task/PID/stat).

With --against REV the runs alternate between the working tree and a git
worktree of REV, whose daemons import shoal from there (PYTHONPATH): on this
noisy machine a change is judged by interleaved runs, and by CPU as well as time.

With --tasks the daemons also count the CPU of each trio task (its steps on the
event loop) and of each function run in a worker thread (bench/taskcpu, put on
their PYTHONPATH), and the report adds the medians of each daemon's largest.

With --dir DIR the runs work in DIR and keep it: the dataset generated there
before (the same --size, --small-files and --part) is used again, and no copy
is deleted, so that runs do not follow a large delete, which slows the next
files created for minutes (see fetch_once). Clean DIR yourself, then wait.

With --spy DIR, py-spy (`pip install py-spy`; not a dependency) samples both
daemons during every fetch (`py-spy record --format raw --threads --gil`,
samples holding the GIL only) and leaves one collapsed-stack file per daemon
and run in DIR; the report adds each daemon's functions with the most samples
of their own (innermost frame) and in total (anywhere on the stack).

    .venv/bin/python bench/fetch_cpu.py [--part full|large|small] [--runs 3] [--size 2G]
        [--small-files N] [--against REV] [--dir DIR] [--tasks] [--spy DIR]
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import fetch
from data import build_in_place, cpu_since, machine_cpu, parse_size, print_failures
from fetch import DATASET, Daemon, ShoalFailed, drop_caches, make_dataset, settle_note, wait_remote
from switch import link

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
#: The sitecustomize that counts CPU per task and per worker-thread function (--tasks).
TASK_CPU = Path(__file__).resolve().parent / "taskcpu"
TASKS_ENV = "SHOAL_BENCH_TASKS_DIR"
#: py-spy samples a second (--spy); with --gil each sample is one of a thread holding the GIL.
SPY_RATE = 200


class TreeDaemon(Daemon):
    """A Daemon whose commands run from `tree`: `python -m shoal` imports the shoal found in its cwd."""

    def __init__(self, label: str, home: Path, tree: Path) -> None:
        super().__init__(label, home)
        self.tree = tree

    def run(self, *args: str, **kwargs) -> tuple[dict, float, subprocess.CompletedProcess]:  # noqa: ANN003
        kwargs.setdefault("cwd", self.tree)
        return super().run(*args, **kwargs)


@dataclass
class Variant:
    label: str
    tree: Path
    sender: TreeDaemon | None = None

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.label)


@dataclass(frozen=True)
class Cpu:
    """User and system CPU seconds."""

    user: float
    system: float

    def __sub__(self, other: "Cpu") -> "Cpu":
        return Cpu(self.user - other.user, self.system - other.system)

    @property
    def total(self) -> float:
        return self.user + self.system

    def __str__(self) -> str:
        return f"{self.user:5.2f}/{self.system:4.2f}"


def _median(rows: list[dict], key) -> float:
    return statistics.median(key(r) for r in rows)


def _stat_cpu(path: str) -> Cpu:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return Cpu(int(fields[11]) / TICK, int(fields[12]) / TICK)


def daemon_cpu(pid: int) -> tuple[Cpu, Cpu]:
    """(the whole process, its main thread): the event loop runs on the main thread."""
    return _stat_cpu(f"/proc/{pid}/stat"), _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def rest(process: Cpu, main: Cpu) -> Cpu:
    """The CPU of a process's other threads. The two files are read a moment apart, in
    clock ticks, so the difference can dip a tick below zero; it is shown as zero."""
    diff = process - main
    return Cpu(max(0.0, diff.user), max(0.0, diff.system))


@contextmanager
def variant_env(variant: Variant):
    """The daemons the variant's commands start (whose cwd is their home) import shoal from its tree too."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(variant.tree) + (os.pathsep + str(TASK_CPU) if TASKS_ENV in os.environ else "")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def task_cpu(pid: int) -> dict:
    """What the daemon's bench/taskcpu counted so far:
    {"loop": s, "tasks": {name: s}, "threads": {name: s}, "calls": {name: worker-thread calls}}."""
    path = Path(os.environ[TASKS_ENV]) / f"tasks-{pid}.json"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise ShoalFailed(f"daemon {pid} wrote no {path.name}: is bench/taskcpu on its PYTHONPATH?")
        time.sleep(0.02)
    return json.loads(path.read_text())


def task_cpu_since(before: dict, after: dict) -> dict:
    def diff(key: str) -> dict[str, float]:
        return {name: spent - before[key].get(name, 0.0) for name, spent in after[key].items()}

    return {"loop": after["loop"] - before["loop"], "tasks": diff("tasks"), "threads": diff("threads"),
            "calls": diff("calls")}


@contextmanager
def spied(pid: int, output: Path | None):
    """py-spy samples `pid` (holding the GIL) into `output` until the block ends."""
    if output is None:
        yield
        return
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
                            "--rate", str(SPY_RATE), "--threads", "--gil", "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attaches before the fetch begins
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        if not output.exists():
            raise ShoalFailed(f"py-spy wrote no {output}: {err.decode(errors='replace').strip()[-300:]}")


def spy_report(paths: list[Path], top: int = 15) -> None:
    """The functions with most samples in `paths` (collapsed stacks of one daemon kind): their
    own (innermost frame), and in total those of shoal's daemon and protocol code."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            # The first frame names the thread; "func (file:line)" counts as "func (file)".
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")[1:]]
            samples += n
            if frames:
                own[frames[-1]] += n
            for frame in set(frames):
                if "(shoal/daemon/" in frame and "(shoal/daemon/main.py)" not in frame or "(shoal/protocol/" in frame:
                    total[frame] += n
    # What a daemon could gain from more cores is bounded by the time some thread of it holds the GIL.
    held = samples / SPY_RATE / max(len(paths), 1)
    print(f"  {samples} samples holding the GIL ({SPY_RATE} a second): the GIL held {held:.2f} s a fetch;"
          " own: innermost frame; total: anywhere on the stack")
    for name, n in own.most_common(top):
        print(f"    own   {100 * n / max(samples, 1):5.1f}%  {name}")
    for name, n in total.most_common(top):
        print(f"    total {100 * n / max(samples, 1):5.1f}%  {name}")


def dataset(parent: Path, size: int, small_files: int | None, part: str) -> Path:
    """The dataset in `parent`, generated unless a finished one of these parameters is there."""
    data = parent / f"data-{size}-{small_files or 'default'}-{part}"
    done = data.with_name(data.name + ".done")
    if not done.exists():
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {size / 1e9:.2f} GB ...", file=sys.stderr)
        make_dataset(data, size, small_files)
        select_part(data, part)
        done.touch()
    return data


def select_part(data: Path, part: str) -> None:
    if part == "large":
        shutil.rmtree(data / "samples")
    elif part == "small":
        shutil.rmtree(data / "checkpoints")
        for shard in data.glob("shard-*"):
            shard.unlink()


def fetch_once(variant: Variant, homes: Path, run: int, drop: bool, spy: Path | None = None) -> dict:
    sender = variant.sender
    assert sender is not None and sender.pid is not None
    b = TreeDaemon("B", homes / f"{variant.slug}-b{run}", variant.tree)
    dest = homes / f"{variant.slug}-dest{run}"
    with variant_env(variant):
        b.start()
        try:
            link([sender, b])
            wait_remote(b, 1)
            drop_caches(drop)
            assert b.pid is not None
            counting = TASKS_ENV in os.environ
            tasks0 = {"A": task_cpu(sender.pid), "B": task_cpu(b.pid)} if counting else {}
            with ExitStack() as spies:
                for side, pid in (("A", sender.pid), ("B", b.pid)):
                    spies.enter_context(spied(pid, spy and spy / f"{variant.slug}-{run}-{side}.txt"))
                machine, a0, b0 = machine_cpu(), daemon_cpu(sender.pid), daemon_cpu(b.pid)
                t0 = time.perf_counter()
                fetched, _, _ = b.run("fetch", DATASET, str(dest), timeout=1800)
                wall = time.perf_counter() - t0
            machine, a1, b1 = cpu_since(machine), daemon_cpu(sender.pid), daemon_cpu(b.pid)
            tasks = {"A": task_cpu_since(tasks0["A"], task_cpu(sender.pid)),
                     "B": task_cpu_since(tasks0["B"], task_cpu(b.pid))} if counting else {}
        finally:
            b.stop()
    # Each run's copy and home are kept until the end. On ext4 without a journal (this
    # machine's root file system) a new inode does not get a number freed in the last
    # minutes, and finding one scans the inode table for every file created: 10,000
    # files of 60 KB written and renamed by shoal's C batches took 0.83 s of system time
    # on a quiet file system, 3.2-4.2 s within two minutes of deleting 10,000 such files
    # (perf: 60% of it in recently_deleted/find_inode_bit under ext4_create). Deleting
    # each copy made every later run pay that, by an amount that varied by seconds.
    a_all, a_main = a1[0] - a0[0], a1[1] - a0[1]
    b_all, b_main = b1[0] - b0[0], b1[1] - b0[1]
    return {
        "variant": variant.label, "run": run, "wall": wall, "first_byte": fetched.get("first_byte"),
        "machine": Cpu(*machine),
        "a_main": a_main, "a_rest": rest(a_all, a_main), "b_main": b_main, "b_rest": rest(b_all, b_main),
        "a_total": a_all.total, "b_total": b_all.total, "tasks": tasks,
    }


def report(rows: list[dict], variants: list[Variant], args: argparse.Namespace, size: int) -> None:
    print()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"part: {args.part} of a {size / 1e9:.2f} GB bench/fetch.py dataset; page cache "
          + ("dropped before every fetch" if not args.no_drop_caches else "NOT dropped"))
    if not args.no_drop_caches:
        print("free memory: " + settle_note())
    print("CPU columns: user/system seconds; machine = the whole machine (/proc/stat); main = a daemon's "
          "event-loop thread, rest = its other threads")
    print()
    header = ["variant", "run", "fetch", "first byte", "machine", "A main", "A rest", "B main", "B rest"]
    table = [[r["variant"], str(r["run"]), f"{r['wall']:.2f} s",
              "-" if r["first_byte"] is None else f"{r['first_byte']:.2f} s",
              str(r["machine"]), str(r["a_main"]), str(r["a_rest"]), str(r["b_main"]), str(r["b_rest"])] for r in rows]
    widths = [max(len(x[i]) for x in [header, *table]) for i in range(len(header))]
    line = " | ".join(h.rjust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in table:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
    print()
    for v in variants:
        mine = [r for r in rows if r["variant"] == v.label]
        if mine:
            print(f"{v.label}: median of {len(mine)}: fetch {_median(mine, lambda r: r['wall']):.2f} s, "
                  f"machine CPU {_median(mine, lambda r: r['machine'].total):.2f} s, "
                  f"A {_median(mine, lambda r: r['a_total']):.2f} s, B {_median(mine, lambda r: r['b_total']):.2f} s")
    if any(r["tasks"] for r in rows):
        report_tasks(rows, variants)
    if args.spy:
        for v in variants:
            for side in ("A", "B"):
                print(f"\n{v.label} {side}: py-spy")
                spy_report(sorted(args.spy.glob(f"{v.slug}-*-{side}.txt")))


def report_tasks(rows: list[dict], variants: list[Variant], top: int = 8) -> None:
    """Each daemon's largest trio tasks (CPU of their steps on the event loop) and
    worker-thread functions, medians over a variant's runs."""
    for v in variants:
        mine = [r["tasks"] for r in rows if r["variant"] == v.label]
        for side in ("A", "B"):
            counted = [m[side] for m in mine]
            loop = statistics.median(c["loop"] for c in counted)
            print(f"\n{v.label} {side}: event-loop thread {loop:.2f} s CPU (median of {len(counted)})")
            for key, what in (("tasks", "task"), ("threads", "in a worker thread")):
                names = {name for c in counted for name in c[key]}
                medians = sorted(((statistics.median(c[key].get(n, 0.0) for c in counted), n) for n in names), reverse=True)
                for spent, name in [m for m in medians if m[0] >= 0.005][:top]:
                    calls = statistics.median(c["calls"].get(name, 0) for c in counted) if key == "threads" else None
                    print(f"  {spent:6.2f} s  {what:18s} {name}" + (f" ({calls:.0f} calls)" if calls else ""))
            calls = statistics.median(sum(c["calls"].values()) for c in counted)
            print(f"  worker-thread calls in all: {calls:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("full", "large", "small"), default="full")
    parser.add_argument("--runs", type=int, default=3, help="fetches per variant (default 3)")
    parser.add_argument("--size", default="2G", help="dataset size before --part selects from it (default 2G)")
    parser.add_argument("--small-files", type=int, metavar="N",
                        help="small files in the dataset (bench/fetch.py's option: 10000 with --size 1G is the 1 GiB folder)")
    parser.add_argument("--against", metavar="REV", help="alternate with a git worktree of REV")
    parser.add_argument("--no-drop-caches", action="store_true")
    parser.add_argument("--no-settle", action="store_true",
                        help="fetch right after dropping the page cache, without waiting for the memory it freed to be"
                             " handed back to a VM's host (bench/fetch.py's option)")
    parser.add_argument("--dir", type=Path, metavar="DIR",
                        help="work in DIR and keep it: reuse the dataset generated there, delete nothing")
    parser.add_argument("--tasks", action="store_true",
                        help="also count CPU per trio task and worker-thread function in both daemons")
    parser.add_argument("--spy", type=Path, metavar="DIR",
                        help="sample both daemons with py-spy during every fetch; collapsed stacks go to DIR")
    args = parser.parse_args()
    size = parse_size(args.size)
    drop = not args.no_drop_caches
    fetch.SETTLE = not args.no_settle
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="shoal-fetch-cpu-", dir=args.dir or "/tmp"))
    if args.tasks:
        (work / "tasks").mkdir()
        os.environ[TASKS_ENV] = str(work / "tasks")
    if args.spy:
        if shutil.which("py-spy") is None:
            parser.error("--spy needs py-spy on PATH (pip install py-spy)")
        args.spy.mkdir(parents=True, exist_ok=True)
    variants = [Variant("tree", REPO)]
    worktree = work / "against"
    try:
        if args.against:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.against],
                           check=True, capture_output=True, text=True)
            build_in_place(worktree)
            variants.append(Variant(args.against, worktree))
        data = dataset(args.dir or work, size, args.small_files, args.part)
        for v in variants:
            v.sender = TreeDaemon("A", work / f"{v.slug}-a", v.tree)
            with variant_env(v):
                v.sender.start()
                v.sender.run("share", str(data), "--name", DATASET, "--no-keep", timeout=1800)
        rows = []
        for run in range(args.runs):
            for v in variants:
                print(f"{v.label} run {run} ...", file=sys.stderr)
                rows.append(fetch_once(v, work, run, drop, args.spy))
        report(rows, variants, args, size)
    except ShoalFailed as e:
        failures.append(str(e))
    finally:
        for v in variants:
            if v.sender is not None:
                with variant_env(v):
                    v.sender.stop()
        if args.against:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True)
        if args.dir:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_failures(failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
