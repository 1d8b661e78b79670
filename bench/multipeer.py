"""Multi-source fetch speedup with real bandwidth limits: two seeders at 100 Mbit/s each.

Builds a lab of three network namespaces on one bridge (tests/netns.py, hosts
198.18.0.1..3) and runs a real shoal daemon in each (`shoal --home H daemon
--listen 198.18.0.i:7453`; the CLI reaches each daemon's control socket from
the root namespace with `--home`, SHOAL_NO_AUTOSTART=1). Hosts 1 and 2 are the
seeders and are shaped with `lab.shape(i, rate)` (default 100mbit): a token
bucket on the host's eth0 (its egress: what host 3 receives from it) and on
its bridge port (its ingress). Host 3, the fetcher, is not shaped.

1. every daemon trusts the others (by id and --addr; mDNS stays on);
2. host 1 shares a dataset of incompressible data (default 200 MB in 4 files,
   --size / --files to change);
3. host 2 fetches it from host 1, so both seed the same version;
4. host 3 fetches it (a) with `--from <host 1 id>` and (b) from both seeders.
   Each run uses a fresh host-3 daemon (new home, new id, trusted by both
   seeders before the run) and a fresh DEST, so nothing is reused from an
   earlier run; before each timed fetch host 3 must list two seeders of the
   version in `ls --remote`.

For each run the table shows the wall time of the `shoal fetch --json` call,
the `seconds` field of its result, MB/s (10^6 bytes/s) for both, and the
bytes per peer from the result's `peers`; the tbf qdisc counters on each
seeder's eth0 (bytes sent, overlimits) are read before and after the fetch to
show that the shaping was in the path. Speedup = (a) / (b). Fetched trees are
compared byte for byte with the source after the timed part.

    .venv/bin/python bench/multipeer.py [--size 200M] [--files 4] [--rate 100mbit] [--keep]

Needs root and iproute2. Every namespace is deleted at the end, also on failure.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data import cpu_model, parse_size, write_random

from tests.netns import Lab, _parse_rate

PYTHON = sys.executable
PORT = 7453
DATASET = "mpds"
BAR = 1.8






def make_dataset(root: Path, total: int, files: int) -> None:
    root.mkdir(parents=True)
    each = total // files
    for i in range(files):
        size = each if i < files - 1 else total - each * (files - 1)
        write_random(root / f"shard-{i:02d}.bin", size, b"multipeer %d" % i)


def compare_trees(a: Path, b: Path) -> list[str]:
    def listing(root: Path) -> dict[str, Path]:
        return {str(p.relative_to(root)): p for p in root.rglob("*")
                if p.is_file() and ".shoal-partial" not in p.parts}

    la, lb = listing(a), listing(b)
    problems = [f"missing {k}" for k in sorted(la.keys() - lb.keys())]
    problems += [f"extra {k}" for k in sorted(lb.keys() - la.keys())]
    problems += [f"differs {k}" for k in sorted(la.keys() & lb.keys()) if not filecmp.cmp(la[k], lb[k], shallow=False)]
    return problems


class BenchError(Exception):
    pass


class Host:
    """A shoal daemon in lab host i with its own home under /tmp."""

    def __init__(self, lab: Lab, i: int, label: str) -> None:
        self.lab = lab
        self.i = i
        self.label = label
        # Under /tmp: Unix socket paths are limited to 107 bytes.
        self.home = Path(tempfile.mkdtemp(prefix=f"shoal-mp-{label}-", dir="/tmp"))
        self.log_path = self.home / "bench-daemon.log"
        self.argv = [PYTHON, "-m", "shoal", "--home", str(self.home), "daemon", "--listen", f"{lab.addr(i)}:{PORT}"]
        with open(self.log_path, "wb") as log:  # the daemon keeps its own descriptor
            self.process = lab.run(i, self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        self.peer_id = ""
        self.stopped = False

    def cmd(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "shoal", "--home", str(self.home), *args]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "SHOAL_NO_AUTOSTART": "1"}
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO))

    def json(self, *args: str, timeout: float = 60) -> dict:
        p = self.cli(*args, "--json", timeout=timeout)
        if p.returncode != 0:
            raise BenchError(f"{self.label}: `{shlex.join(self.cmd(*args, '--json'))}` exited {p.returncode}\n"
                             f"stderr: {p.stderr.strip()}\nstdout: {p.stdout.strip()[:2000]}")
        return json.loads(p.stdout)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.cli("status").returncode == 0:
                self.peer_id = self.json("id")["peer_id"]
                return
            if self.process.poll() is not None:
                raise BenchError(f"{self.label}: daemon exited with {self.process.returncode}")
            time.sleep(0.2)
        raise BenchError(f"{self.label}: daemon never answered within {timeout:g}s")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no log: {e})"

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def trust_pair(a: Host, b: Host) -> None:
    a.json("trust", b.peer_id, "--addr", f"{b.lab.addr(b.i)}:{PORT}", "--name", b.label)
    b.json("trust", a.peer_id, "--addr", f"{a.lab.addr(a.i)}:{PORT}", "--name", a.label)


def wait_online(host: Host, others: list[Host], timeout: float = 60) -> None:
    want = {o.peer_id for o in others}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        online = {p["peer_id"] for p in host.json("peers")["peers"] if p["state"] == "online"}
        if want <= online:
            return
        time.sleep(0.3)
    raise BenchError(f"{host.label} never saw {[o.label for o in others]} online within {timeout:g}s")


def wait_seeders(host: Host, version_id: str, seeders: list[Host], timeout: float = 60) -> None:
    want = {s.peer_id for s in seeders}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = {d["peer_id"] for d in host.json("ls", "--remote")["datasets"]
                if d["name"] == DATASET and d["head"]["id"] == version_id}
        if want <= have:
            return
        time.sleep(0.3)
    raise BenchError(f"{host.label} never listed {[s.label for s in seeders]} as seeders of {DATASET} within {timeout:g}s")


def tbf_stats(lab: Lab, i: int) -> dict[str, int]:
    """Counters of the tbf root qdisc on host i's eth0 (its egress)."""
    out = subprocess.run(["tc", "-n", lab.namespace(i), "-s", "-j", "qdisc", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    for q in json.loads(out):
        if q.get("kind") == "tbf":
            return {"bytes": q.get("bytes", 0), "packets": q.get("packets", 0),
                    "overlimits": q.get("overlimits", 0), "drops": q.get("drops", 0)}
    raise BenchError(f"host {i} eth0 has no tbf qdisc: {out}")


def tbf_config(lab: Lab, i: int) -> str:
    out = subprocess.run(["tc", "-n", lab.namespace(i), "qdisc", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())


def shoal_version() -> str:
    try:
        from importlib.metadata import version
        return version("shoal")
    except Exception:  # noqa: BLE001
        return "?"


def git_head() -> str:
    p = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() or "?"


def timed_fetch(label: str, fetcher: Host, seeders: list[Host], dest: Path, source: Path,
                extra: list[str], lab: Lab) -> dict:
    args = ["fetch", DATASET, str(dest), "--timeout", "60", *extra, "--json"]
    before = {s.label: tbf_stats(lab, s.i) for s in seeders}
    env = {**os.environ, "SHOAL_NO_AUTOSTART": "1"}
    argv = fetcher.cmd(*args)
    print(f"{label}: {shlex.join(argv)}", file=sys.stderr)
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=420, cwd=str(REPO))
    wall = time.perf_counter() - t0
    after = {s.label: tbf_stats(lab, s.i) for s in seeders}
    if p.returncode != 0:
        raise BenchError(f"{label}: `{shlex.join(argv)}` exited {p.returncode} after {wall:.1f}s\n"
                         f"stderr: {p.stderr.strip()}\nstdout: {p.stdout.strip()[:2000]}")
    result = json.loads(p.stdout)
    problems = compare_trees(source, dest)
    tc = {k: {f: after[k][f] - before[k][f] for f in after[k]} for k in after}
    return {"label": label, "argv": argv, "wall": wall, "result": result, "problems": problems,
            "tc": tc, "stderr": p.stderr.strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="200M", help="dataset size (K/M/G are powers of 1000); default 200M")
    ap.add_argument("--files", type=int, default=4, help="number of files; default 4")
    ap.add_argument("--rate", default="100mbit", help="tc rate of each seeder; default 100mbit")
    ap.add_argument("--keep", action="store_true", help="keep homes and data under /tmp")
    args = ap.parse_args()
    total = parse_size(args.size)
    rate_bps = _parse_rate(args.rate)
    cmdline = shlex.join([os.path.relpath(PYTHON, REPO) if PYTHON.startswith(str(REPO)) else PYTHON,
                          os.path.relpath(__file__, REPO), *sys.argv[1:]])
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("needs root and iproute2 (ip, tc)", file=sys.stderr)
        return 2

    def on_term(signum, frame):  # noqa: ANN001, ARG001
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)

    workdir = Path(tempfile.mkdtemp(prefix="shoal-mp-data-", dir="/tmp"))
    hosts: list[Host] = []
    lab: Lab | None = None
    runs: list[dict] = []
    notes: list[str] = []
    failure: str | None = None
    started = time.perf_counter()
    try:
        source = workdir / DATASET
        t0 = time.perf_counter()
        make_dataset(source, total, args.files)
        print(f"generated {args.files} files, {total / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s: {source}",
              file=sys.stderr)

        lab = Lab(3)
        lab.shape(1, args.rate)
        lab.shape(2, args.rate)
        notes.append(f"lab {lab.name}: host1 eth0 qdisc: {tbf_config(lab, 1)}")
        notes.append(f"lab {lab.name}: host2 eth0 qdisc: {tbf_config(lab, 2)}")

        h1, h2 = Host(lab, 1, "host1"), Host(lab, 2, "host2")
        hosts += [h1, h2]
        for h in (h1, h2):
            h.wait_ready()
        trust_pair(h1, h2)
        wait_online(h1, [h2])
        wait_online(h2, [h1])

        shared = h1.json("share", str(source), "--name", DATASET, timeout=300)
        version_id = shared["version"]["id"]
        print(f"host1 shared {DATASET}@{shared['version']['seq']} {version_id[:12]}", file=sys.stderr)

        wait_seeders(h2, version_id, [h1])
        on2 = workdir / "on-host2"
        t0 = time.perf_counter()
        first = h2.json("fetch", DATASET, str(on2), "--timeout", "60", timeout=420)
        seed_wall = time.perf_counter() - t0
        problems = compare_trees(source, on2)
        if problems:
            raise BenchError(f"host2's copy differs from the source: {problems[:5]}")
        notes.append(f"host2 seeding fetch (from host1, both shaped): wall {seed_wall:.2f}s, seconds "
                     f"{first['seconds']:.2f}, bytes_received {first['bytes_received']}, peers {first['peers']}")

        plans = [("(a) host1 only", ["--from", h1.peer_id]), ("(b) host1+host2", [])]
        for n, (label, extra) in enumerate(plans):
            h3 = Host(lab, 3, f"host3{'ab'[n]}")
            hosts.append(h3)
            h3.wait_ready()
            trust_pair(h1, h3)
            trust_pair(h2, h3)
            wait_online(h3, [h1, h2])
            wait_online(h1, [h3])
            wait_online(h2, [h3])
            wait_seeders(h3, version_id, [h1, h2])
            run = timed_fetch(label, h3, [h1, h2], workdir / f"on-host3-{'ab'[n]}", source, extra, lab)
            run["names"] = {h1.peer_id: "host1", h2.peer_id: "host2", h3.peer_id: h3.label}
            runs.append(run)
            if run["problems"]:
                raise BenchError(f"{label}: fetched tree differs: {run['problems'][:5]}")
            h3.stop()
    except BaseException as e:  # noqa: BLE001
        failure = f"{type(e).__name__}: {e}"
        if not isinstance(e, Exception):
            print(f"interrupted: {failure}", file=sys.stderr)
    finally:
        tails = {h.label: (h.home, h.log_tail()) for h in hosts}
        for h in hosts:
            try:
                h.stop()
            except Exception as e:  # noqa: BLE001
                notes.append(f"stopping {h.label}: {e}")
        if lab is not None:
            try:
                lab.close()
            except Exception as e:  # noqa: BLE001
                notes.append(f"lab cleanup: {e}")
                failure = failure or f"lab cleanup: {e}"
        if args.keep:
            notes.append(f"kept: {workdir} " + " ".join(str(h.home) for h in hosts))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            for h in hosts:
                shutil.rmtree(h.home, ignore_errors=True)

    report(cmdline, args, total, rate_bps, runs, notes, failure, tails, time.perf_counter() - started)
    return 1 if failure else 0


def report(cmdline, args, total, rate_bps, runs, notes, failure, tails, elapsed) -> None:  # noqa: ANN001
    print()
    print(f"command: {cmdline}")
    print(f"machine: nproc={os.cpu_count()}, CPU: {cpu_model()}, kernel {platform.release()}, "
          f"Python {platform.python_version()}, shoal {shoal_version()} (git {git_head()})")
    print(f"dataset: {args.files} files, {total / 1e6:.1f} MB incompressible; seeders host1, host2 shaped "
          f"to {args.rate} each way (tbf on eth0 = egress, on the bridge port = ingress); fetcher host3 unshaped")
    print(f"link ceiling: {rate_bps / 8e6:.2f} MB/s per seeder (IP+TCP+shoal framing overhead not subtracted)")
    print("times: wall = the `shoal fetch --json` CLI call on host3; seconds = the result's `seconds` field; "
          "MB/s = version size / time (MB = 10^6 bytes); received = bytes_received; fresh host3 home and DEST per run")
    print()
    header = ["run", "wall", "seconds", "MB/s wall", "MB/s secs", "received", "host1 bytes", "host2 bytes",
              "tc host1 sent", "tc host2 sent"]
    rows = []
    for r in runs:
        res = r["result"]
        per = {r["names"].get(p, p[:12]): b for p, b in res["peers"].items()}
        recv = res["bytes_received"]
        size = res["version"]["size"]
        if recv > size:
            notes.append(f"{r['label']}: WARNING: received {recv:,} bytes for a {size:,}-byte version "
                         f"({recv / size:.2f}x; {recv - size:,} bytes redundant)")
        rows.append([r["label"], f"{r['wall']:.2f} s", f"{res['seconds']:.2f} s",
                     f"{size / 1e6 / r['wall']:.2f}", f"{size / 1e6 / res['seconds']:.2f}",
                     f"{recv:,}", f"{per.pop('host1', 0):,}", f"{per.pop('host2', 0):,}",
                     f"{r['tc']['host1']['bytes']:,}", f"{r['tc']['host2']['bytes']:,}"])
        if per:
            notes.append(f"{r['label']}: bytes from other peers: {per}")
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = " | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print()
    if len(runs) == 2:
        a, b = runs
        sw = a["wall"] / b["wall"]
        ss = a["result"]["seconds"] / b["result"]["seconds"]
        verdict = "meets" if min(sw, ss) >= BAR else "MISSES"
        print(f"speedup (b vs a): {sw:.2f}x by wall time, {ss:.2f}x by `seconds` "
              f"-> {verdict} the bar of >= {BAR}x")
        one_peer = [p for p, n in b["result"]["peers"].items() if n == 0] or len(b["result"]["peers"]) < 2
        if one_peer:
            print("WARNING: (b) did not receive bytes from both seeders")
        print()
    for r in runs:
        tc = "; ".join(f"{k} eth0 tbf: sent {v['bytes']:,} B in {v['packets']:,} pkts, "
                       f"overlimits {v['overlimits']:,}, drops {v['drops']:,}" for k, v in r["tc"].items())
        print(f"{r['label']}: {tc}")
        if r["result"].get("warnings"):
            print(f"  warnings: {r['result']['warnings']}")
        print(f"  cmd: {shlex.join(r['argv'])}")
    for n in notes:
        print(n)
    print(f"total bench time: {elapsed:.1f}s")
    if failure:
        print()
        print(f"FAILURE: {failure}")
        for label, (home, tail) in tails.items():
            print(f"--- daemon log tail of {label} ({home}/bench-daemon.log) ---")
            print(tail)


if __name__ == "__main__":
    sys.exit(main())
