"""Load: one daemon serving many fetchers at once, and a dataset of very many small files.

1. A shares ~50 MB; eight daemons B1..B8 run `shoal fetch` at the same time (one
   dataset has one folder per daemon, so eight concurrent fetches need eight
   receivers). All complete byte-identical. Meanwhile the test process asks A for
   `status` over its control socket (shoal.client.blocking.ControlClient) in a loop, which
   must keep answering (its latency is printed; bench/ holds latency goals, since a
   busy machine makes any bound here flaky); and A's RSS (/proc/PID/status VmRSS,
   sampled in the same loop) must stay flat: peak during the fetches vs idle after the share.
2. A shares a dataset of many tiny files; B fetches it; the receiving daemon's RSS
   stays under 200 MB. CI runs SMALL_FILES files; SHOAL_LOAD_FULL=1 runs 100,000.

Both tests print their figures (run with -s to see them).
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ShoalCli, make_home, remove_home
from trees import PARTIAL, digests

from shoal.client.blocking import ControlClient
from shoal.home import running_pid, socket_path

pytestmark = pytest.mark.slow


MB = 1_000_000
FETCHERS = 8
LOAD_FILES = 5
LOAD_FILE_SIZE = 10 * MB
#: A's RSS may grow by at most this much over idle while it serves the fetchers.
RSS_GROWTH = 64 * 2**20
FULL = os.environ.get("SHOAL_LOAD_FULL") == "1"
SMALL_FILES = 100_000 if FULL else 20_000
RECEIVER_RSS = 200 * 2**20


def rss(pid: int) -> int:
    """Resident set size of pid, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class Daemons:
    """A (the sender) and n receivers on loopback; every receiver trusts A and A trusts them."""

    def __init__(self, receivers: int) -> None:
        self.homes = [make_home() for _ in range(receivers + 1)]
        self.clis = [ShoalCli(h) for h in self.homes]
        self.a, self.bs = self.clis[0], self.clis[1:]
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        starts = [subprocess.Popen([sys.executable, "-m", "shoal", "--home", str(c.home), "daemon", "start"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in self.clis]
        for p in starts:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        self.pid_a = self.a.json("daemon", "status")["pid"]
        id_a = self.a.json("id")["peer_id"]
        listen_a = self.a.json("status")["listen"]
        for b in self.bs:
            id_b = b.json("id")["peer_id"]
            assert self.a("trust", id_b).returncode == 0
            assert b("trust", id_a, "--addr", listen_a).returncode == 0

    def close(self) -> None:
        for cli, home in zip(self.clis, self.homes):
            if running_pid(home) is not None:
                cli("daemon", "stop", timeout=20)
            remove_home(home)


def fetch_cmd(cli: ShoalCli, name: str, dest: Path, timeout: int) -> list[str]:
    return [sys.executable, "-m", "shoal", "--home", str(cli.home), "fetch", name, str(dest), "--json",
            "--timeout", str(timeout)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}


def test_one_sender_eight_concurrent_fetchers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "small").mkdir(parents=True)
    for i in range(LOAD_FILES):
        (data / f"f{i}.bin").write_bytes(os.urandom(LOAD_FILE_SIZE))
    for i in range(50):
        (data / "small" / f"s{i:02}").write_bytes(os.urandom(1000 + 37 * i))
    original = digests(data)
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())

    lab = Daemons(FETCHERS)
    try:
        a = lab.a
        version = a.json("share", str(data), "--name", "load")["version"]
        # Every receiver must see the dataset in A's catalog before the fetches start.
        for b in lab.bs:
            deadline = time.monotonic() + 15
            while [d["name"] for d in b.json("ls", "--remote")["datasets"]] != ["load"]:
                assert time.monotonic() < deadline, "a receiver never saw A's catalog"
                time.sleep(0.05)

        with ControlClient.connect(socket_path(a.home)) as client:
            client.call("status", timeout=5)
            time.sleep(0.5)
            idle = [rss(lab.pid_a)]
            for _ in range(5):
                time.sleep(0.05)
                idle.append(rss(lab.pid_a))
            idle_rss = max(idle)

            dests = [tmp_path / f"copy{i}" for i in range(FETCHERS)]
            t0 = time.monotonic()
            fetches = [subprocess.Popen(fetch_cmd(b, "load", d, 60), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env()) for b, d in zip(lab.bs, dests)]
            outputs: list[tuple[str, str] | None] = [None] * FETCHERS

            def reap(i: int) -> None:
                outputs[i] = fetches[i].communicate(timeout=120)

            reapers = [threading.Thread(target=reap, args=(i,)) for i in range(FETCHERS)]
            for r in reapers:
                r.start()
            rtts: list[float] = []
            peak_rss = idle_rss
            while any(f.poll() is None for f in fetches):
                start = time.perf_counter()
                client.call("status", timeout=5)
                rtts.append(time.perf_counter() - start)
                peak_rss = max(peak_rss, rss(lab.pid_a))
                time.sleep(0.02)
            wall = time.monotonic() - t0
            for r in reapers:
                r.join()
            after_rss = rss(lab.pid_a)

        results = []
        for f, out in zip(fetches, outputs):
            assert out is not None
            assert f.returncode == 0, (f.returncode, out[1])
            results.append(json.loads(out[0]))
        for result, dest in zip(results, dests):
            assert result["version"]["id"] == version["id"]
            assert digests(dest) == original
        received = sum(r["bytes_received"] for r in results)
        median = statistics.median(rtts) if rtts else float("nan")
        print(
            f"\nload: {FETCHERS} concurrent fetches of {size / MB:.0f} MB from one daemon in {wall:.1f}s wall"
            f" ({received / MB / wall:.0f} MB/s aggregate; per fetch {min(r['seconds'] for r in results):.1f}"
            f"..{max(r['seconds'] for r in results):.1f}s)\n"
            f"load: A status round trip over {len(rtts)} calls: median {median * 1000:.1f} ms,"
            f" max {max(rtts) * 1000:.1f} ms\n"
            f"load: A RSS idle {mib(idle_rss)}, peak while serving {mib(peak_rss)}"
            f" (+{mib(peak_rss - idle_rss)}), after {mib(after_rss)}, VmHWM {mib(hwm(lab.pid_a))}"
        )
        assert len(rtts) >= 3, f"A answered only {len(rtts)} status calls while serving"
        assert peak_rss - idle_rss < RSS_GROWTH, f"A's RSS grew from {mib(idle_rss)} to {mib(peak_rss)}"
    finally:
        lab.close()


def test_many_small_files(tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    per_dir = 1000
    t0 = time.monotonic()
    for d in range(SMALL_FILES // per_dir):
        sub = data / f"d{d:03}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            (sub / f"{i:04}.txt").write_bytes(b"%d/%d\n" % (d, i))
    made = time.monotonic() - t0

    lab = Daemons(1)
    try:
        a, b = lab.a, lab.bs[0]
        pid_b = b.json("daemon", "status")["pid"]
        t0 = time.monotonic()
        version = a.json("share", str(data), "--name", "tiny")["version"]
        shared = time.monotonic() - t0
        assert version["files"] == SMALL_FILES
        deadline = time.monotonic() + 15
        while [d["name"] for d in b.json("ls", "--remote")["datasets"]] != ["tiny"]:
            assert time.monotonic() < deadline, "B never saw A's catalog"
            time.sleep(0.05)

        dest = tmp_path / "copy"
        idle_b = rss(pid_b)
        t0 = time.monotonic()
        fetch = subprocess.Popen(fetch_cmd(b, "tiny", dest, 120), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env())
        peak_b = idle_b
        peak_a = rss(lab.pid_a)
        done = threading.Event()
        out: list[tuple[str, str]] = []

        def reap() -> None:
            out.append(fetch.communicate(timeout=600))
            done.set()

        threading.Thread(target=reap, daemon=True).start()
        while not done.wait(0.1):
            try:
                peak_b = max(peak_b, rss(pid_b))
                peak_a = max(peak_a, rss(lab.pid_a))
            except (FileNotFoundError, ProcessLookupError):
                break
        done.wait(600)
        fetched = time.monotonic() - t0
        stdout, stderr = out[0]
        assert fetch.returncode == 0, (fetch.returncode, stderr)
        result = json.loads(stdout)
        hwm_b = hwm(pid_b)
        t0 = time.monotonic()
        n = 0
        for sub in sorted(data.iterdir()):
            for f in sub.iterdir():
                assert (dest / sub.name / f.name).read_bytes() == f.read_bytes()
                n += 1
        compared = time.monotonic() - t0
        on_dest = sum(1 for p in dest.rglob("*") if p.is_file() and PARTIAL not in p.parts)
        print(
            f"\nsmall files: {SMALL_FILES} files ({'SHOAL_LOAD_FULL=1' if FULL else 'CI size'});"
            f" created in {made:.1f}s, shared in {shared:.1f}s, fetched in {fetched:.1f}s"
            f" (fetch says {result['seconds']:.1f}s, {result['files_written']} files written), compared in {compared:.1f}s\n"
            f"small files: receiver RSS idle {mib(idle_b)}, peak sampled {mib(peak_b)}, VmHWM {mib(hwm_b)};"
            f" sender peak sampled {mib(peak_a)}, VmHWM {mib(hwm(lab.pid_a))}"
        )
        assert n == SMALL_FILES and on_dest == SMALL_FILES
        assert result["files_written"] == SMALL_FILES
        assert max(peak_b, hwm_b) < RECEIVER_RSS, f"the receiver's RSS reached {mib(max(peak_b, hwm_b))}"
    finally:
        lab.close()
