"""Crash-consistency soak: kill -9 the sender or the receiver at a random point of a fetch.

For each seed (a `random.Random(seed)` picks who dies and when):

1. a fresh receiver daemon B (new home, new id; A and B trust each other on
   loopback) starts `shoal fetch --json` of A's dataset into a fresh DEST;
2. the script polls B's control socket and, once B has verified and written the
   chosen share of the bytes (5..95 %), sends SIGKILL to the victim:
   - receiver: the running fetch fails; B is started again and the same fetch
     is run again;
   - sender: A is started again on the same address (B is told to dial it now);
     the running fetch (--timeout 20) takes A back up and completes, or fails and
     is run again; a final fetch confirms there is nothing left to fetch;
3. DEST is compared file by file (sha256) with the source and `shoal verify` is run.

Per seed the table shows who was killed and at what share of the bytes (as B
had verified them at the kill), what the fetch in progress did, the bytes received
after the kill, the bytes re-fetched (everything received over all attempts minus
the dataset size; the killed attempt counted as the last bytes_received B
reported, so it can be slightly below zero) next to what B had received but not
yet verified and written when it was last polled ("in flight": lost with a killed
receiver, so expected to be fetched again), and the verification. At the end:
totals; the exit code is 1 if any file is corrupt or missing, or anything failed.

    .venv/bin/python bench/kill_seeds.py [--seeds 20] [--first 0] [--size 60M] [--keep]

Runs real daemons in homes under /tmp with `listen = "127.0.0.1:0"` and no discovery.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data import parse_size

from shoal.client.blocking import ControlClient
from shoal.home import running_pid, socket_path

NAME = "soak"
PARTIAL = ".shoal-partial"
MB = 1_000_000




class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "shoal", "--home", str(self.home), *args]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)

    def json(self, *args: str, timeout: float = 120) -> dict:
        p = self(*args, "--json", timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"shoal {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}\n{self.log_tail()}")
        return json.loads(p.stdout)

    def start(self, *extra: str) -> int:
        p = self("daemon", "start", *extra)
        if p.returncode != 0:
            raise RuntimeError(f"daemon start failed: {p.stderr.strip()}")
        return self.json("daemon", "status")["pid"]

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.home / "daemon.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no daemon.log)"


def make_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="shoal-kill-", dir="/tmp"))
    (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n')
    return home


def remove_home(home: Path) -> None:
    pid = running_pid(home)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(home, ignore_errors=True)


def wait_dead(home: Path, pid: int) -> None:
    deadline = time.monotonic() + 10
    while running_pid(home) is not None or _alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} did not die")
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def make_dataset(root: Path, total: int, rng: random.Random) -> None:
    """Three big files and 40 small ones, incompressible, `total` bytes in all."""
    (root / "small").mkdir(parents=True)
    small = [rng.randrange(5_000, 60_000) for _ in range(40)]
    big = (total - sum(small)) // 3
    for i in range(3):
        size = big + (total - sum(small) - 3 * big if i == 2 else 0)
        (root / f"big{i}.bin").write_bytes(rng.randbytes(size))
    for i, size in enumerate(small):
        (root / "small" / f"s{i:02}.dat").write_bytes(rng.randbytes(size))


def digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] == PARTIAL or not p.is_file() or p.is_symlink():
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        out[str(rel)] = h.hexdigest()
    return out


def run_seed(seed: int, a: Cli, state: dict, original: dict[str, str], size: int, work: Path) -> dict:
    rng = random.Random(seed)
    victim = rng.choice(["sender", "receiver"])
    target = rng.uniform(0.05, 0.95)
    row = {"seed": seed, "victim": victim, "target": target}
    b = Cli(make_home())
    dest = work / f"dest{seed}"
    t0 = time.monotonic()
    try:
        pid_b = b.start()
        id_b = b.json("id")["peer_id"]
        a.json("trust", id_b)
        b.json("trust", state["id_a"], "--addr", state["listen_a"])
        deadline = time.monotonic() + 15
        while [d["name"] for d in b.json("ls", "--remote")["datasets"]] != [NAME]:
            if time.monotonic() > deadline:
                raise RuntimeError("B never saw A's catalog")
            time.sleep(0.05)

        env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
        fetch = subprocess.Popen(b.cmd("fetch", NAME, str(dest), "--json", "--timeout", "20"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seen = None
        with ControlClient.connect(socket_path(b.home)) as client:
            deadline = time.monotonic() + 60
            while True:
                if fetch.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no progress: {seen}")
                current = client.call("status", timeout=10)["transfers"]
                if current and current[0]["bytes_total"]:
                    seen = current[0]
                    if seen["bytes_done"] >= target * seen["bytes_total"]:
                        break
        if fetch.poll() is not None:
            # Finished before the chosen point (the last poll came too late): kill now anyway.
            row["note"] = "fetch ended first"
        done_at_kill = seen["bytes_done"] if seen else 0
        received_at_kill = seen["bytes_received"] if seen else 0
        row["at"] = done_at_kill / size
        row["in_flight"] = max(0, received_at_kill - done_at_kill)  # received, not yet verified and written

        received_after = 0
        if victim == "receiver":
            os.kill(pid_b, signal.SIGKILL)
            wait_dead(b.home, pid_b)
            out, err = fetch.communicate(timeout=30)
            row["first"] = "ok" if fetch.returncode == 0 else f"exit {fetch.returncode}"
            first_received = json.loads(out)["bytes_received"] if fetch.returncode == 0 else received_at_kill
            b.start()
            second = b.json("fetch", NAME, str(dest), "--timeout", "30")
            received_after = second["bytes_received"]
            total_received = first_received + received_after
        else:
            pid_a = state["pid_a"]
            os.kill(pid_a, signal.SIGKILL)
            wait_dead(a.home, pid_a)
            state["pid_a"] = a.start("--listen", state["listen_a"])
            b("trust", state["id_a"], "--addr", state["listen_a"])  # dial now, not after the backoff
            out, err = fetch.communicate(timeout=60)
            if fetch.returncode == 0:
                row["first"] = "resumed"
                first = json.loads(out)
                total_received = first["bytes_received"]
                received_after = first["bytes_received"] - received_at_kill
            else:
                row["first"] = f"exit {fetch.returncode}"
                row.setdefault("note", err.strip()[:60])
                total_received = received_at_kill
            again = b.json("fetch", NAME, str(dest), "--timeout", "30")
            received_after += again["bytes_received"]
            total_received += again["bytes_received"]
        row["received_after"] = received_after
        row["refetched"] = total_received - size

        present = digests(dest)
        row["missing"] = sorted(set(original) - set(present))
        row["corrupt"] = sorted(p for p in original if p in present and present[p] != original[p])
        row["extra"] = sorted(set(present) - set(original))
        partial = dest / PARTIAL
        row["partial_left"] = partial.exists() and any(partial.iterdir())
        row["verify"] = b.json("verify", NAME)["ok"]
    except Exception as e:  # noqa: BLE001 - a failed seed is reported, and fails the run
        row["error"] = f"{type(e).__name__}: {e}"
        row.setdefault("missing", ["?"])
        row.setdefault("corrupt", [])
    finally:
        row["seconds"] = time.monotonic() - t0
        try:
            if "id_b" in locals():
                a("untrust", id_b)
            b("daemon", "stop", timeout=20)
        finally:
            remove_home(b.home)
            shutil.rmtree(dest, ignore_errors=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    parser.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--size", default="60M", help="dataset size (default 60M)")
    parser.add_argument("--keep", action="store_true", help="keep A's home and the dataset")
    args = parser.parse_args()
    size = parse_size(args.size)

    work = Path(tempfile.mkdtemp(prefix="shoal-kill-work-", dir="/tmp"))
    a = Cli(make_home())
    rows = []
    started = time.monotonic()
    try:
        data = work / "data"
        make_dataset(data, size, random.Random(-1))
        original = digests(data)
        state = {"pid_a": a.start()}
        state["id_a"] = a.json("id")["peer_id"]
        state["listen_a"] = a.json("status")["listen"]
        version = a.json("share", str(data), "--name", NAME)["version"]
        assert version["size"] == size, version
        print(f"dataset {NAME}: {size / MB:.1f} MB in {len(original)} files; A on {state['listen_a']}", flush=True)
        header = (f"{'seed':>4}  {'killed':<8} {'at':>5}  {'fetch in progress':<17} {'recv after':>10}"
                  f" {'in flight':>9} {'re-fetched':>10}  {'missing':>7} {'corrupt':>7}  {'verify':<6} {'time':>5}  note")
        print(header)
        print("-" * len(header))
        for seed in range(args.first, args.first + args.seeds):
            r = run_seed(seed, a, state, original, size, work)
            rows.append(r)
            verify = "error" if "error" in r else ("ok" if r["verify"] and not r["partial_left"] and not r["extra"]
                                                   else "FAIL")
            note = r.get("error") or r.get("note", "")
            if r.get("partial_left"):
                note += " partial files left"
            if r.get("extra"):
                note += f" extra files {r['extra']}"
            at = f"{r['at']:.0%}" if "at" in r else "-"
            print(
                f"{seed:>4}  {r['victim']:<8} {at:>5}  {r.get('first', '-'):<17}"
                f" {r.get('received_after', 0) / MB:>8.1f}MB {r.get('in_flight', 0) / MB:>7.2f}MB"
                f" {r.get('refetched', 0) / MB:>8.2f}MB"
                f"  {len(r['missing']):>7} {len(r['corrupt']):>7}  {verify:<6} {r['seconds']:>4.1f}s  {note}",
                flush=True,
            )
    finally:
        if not args.keep:
            a("daemon", "stop", timeout=20)
            remove_home(a.home)
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept A's home {a.home} and {work}")

    missing = sum(len(r["missing"]) for r in rows)
    corrupt = sum(len(r["corrupt"]) for r in rows)
    errors = sum(1 for r in rows if "error" in r)
    bad_verify = sum(1 for r in rows if "error" not in r and not (r["verify"] and not r["partial_left"] and not r["extra"]))
    refetched = [r["refetched"] for r in rows if "refetched" in r]
    kills = {v: sum(1 for r in rows if r["victim"] == v) for v in ("sender", "receiver")}
    print()
    print(f"seeds {len(rows)} (sender killed {kills['sender']}, receiver killed {kills['receiver']})"
          f" in {time.monotonic() - started:.0f}s")
    if refetched:
        print(f"re-fetched: total {sum(refetched) / MB:.2f} MB, max {max(refetched) / MB:.2f} MB per seed"
              f" ({max(refetched) / size:.1%} of the dataset)")
    print(f"missing files {missing}, corrupt files {corrupt}, failed verify {bad_verify}, errors {errors}")
    return 0 if missing == corrupt == bad_verify == errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
