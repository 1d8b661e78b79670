"""A fetch split over worker processes (`fetch.workers`), as a user runs one: real daemons, real files.

Each worker opens its own lanes to the serving peer (SPEC.md, "Lanes"); what
must hold is what holds for any fetch: the files byte for byte, an update that
removes what the version no longer has, a worker or daemon killed midway
leaving nothing broken and the next fetch completing the copy.
"""

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ShoalCli
from linked import linked_daemons, ok

from shoal.client.blocking import ControlClient
from shoal.home import running_pid, socket_path

pytestmark = pytest.mark.slow

#: Enough files for three workers (split.MIN_FILES_PER_WORKER each).
FILES = 6400


def make_dataset(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(FILES):
        folder = root / f"part{i % 4}" / f"sub{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:05}.jpg").write_bytes(rng.randbytes(rng.randrange(1, 40_000)))
    (root / "model.pt").write_bytes(rng.randbytes(6_000_000))
    (root / "empty").write_bytes(b"")
    tool = root / "part0" / "run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    (root / "latest").symlink_to("model.pt")


def tree(root: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every file's bytes and permission bits, every link's target."""
    out: dict[str, tuple[bytes | str, int]] = {}
    for path in sorted(root.rglob("*")):
        if ".shoal-partial" in path.parts:
            continue
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = (os.readlink(path), 0)
        elif path.is_file():
            out[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def workers_of(home: Path) -> list[int]:
    """The fetch worker processes of the daemon in `home`."""
    daemon = running_pid(home)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == daemon and b"shoal.daemon.worker" in cmdline:
            found.append(int(entry))
    return found


def start_fetch(cli: ShoalCli, name: str, dest: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal", "--home", str(cli.home), "fetch", name, str(dest), "--timeout", "30", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def wait_for_workers(home: Path, fetch: subprocess.Popen, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = workers_of(home)
        if len(found) == count:
            return found
        assert fetch.poll() is None, fetch.communicate()
        time.sleep(0.005)
    raise AssertionError(f"{count} fetch workers never ran")


def wait_gone(pids: list[int], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while any(os.path.exists(f"/proc/{p}") for p in pids):
        assert time.monotonic() < deadline, "fetch workers outlived their fetch"
        time.sleep(0.05)


def test_a_split_fetch_and_its_update_match_the_source(tmp_path: Path) -> None:
    data = tmp_path / "images"
    make_dataset(data, 1)
    with linked_daemons(2) as (a, b):
        ok(b("config", "set", "fetch.workers", "3"))
        ok(a("share", str(data), "-m", "first"))
        dest = tmp_path / "copy"
        fetched = b.json("fetch", "images", str(dest), "--timeout", "30")
        assert fetched["workers"] == 3
        assert tree(dest) == tree(data)
        assert fetched["files_written"] == FILES + 3
        assert fetched["bytes_received"] >= fetched["bytes_total"] - 100_000
        assert "by 3 worker processes" in ok(b("fetch", "images", str(tmp_path / "again"), "--timeout", "30"))
        # The workers' lanes are not peers: each daemon lists the other once.
        assert len(a.json("peers")["peers"]) == 1 and len(b.json("peers")["peers"]) == 1
        assert workers_of(b.home) == []

        rng = random.Random(2)
        for i in range(0, FILES, 97):
            (data / f"part{i % 4}" / f"sub{i % 7}" / f"img{i:05}.jpg").unlink()
        rewritten = range(1, FILES, 4)
        for i in rewritten:
            (data / f"part{i % 4}" / f"sub{i % 7}" / f"img{i:05}.jpg").write_bytes(rng.randbytes(5000))
        (data / "part3" / "new").mkdir()
        (data / "part3" / "new" / "fresh.bin").write_bytes(rng.randbytes(70_000))
        ok(a("share", str(data), "-m", "second"))
        updated = b.json("fetch", "images", str(dest), "--timeout", "30")
        assert updated["version"]["seq"] == 2 and updated["workers"] == 3
        assert tree(dest) == tree(data)
        assert updated["files_written"] == len(rewritten) + 1

        # An update of a few files is not worth starting workers: the daemon assembles it.
        (data / "model.pt").write_bytes(rng.randbytes(6_000_000))
        ok(a("share", str(data), "-m", "third"))
        small = b.json("fetch", "images", str(dest), "--timeout", "30")
        assert small["version"]["seq"] == 3 and small["workers"] == 0 and small["files_written"] == 1
        assert tree(dest) == tree(data)
        assert workers_of(b.home) == []


@contextmanager
def shared_to_split(tmp_path: Path, seed: int) -> Iterator[tuple[ShoalCli, ShoalCli, Path, Path]]:
    """Daemons A and B, A sharing a dataset of `seed`, B fetching with two workers: (a, b, data, dest)."""
    data = tmp_path / "images"
    make_dataset(data, seed)
    with linked_daemons(2) as (a, b):
        ok(b("config", "set", "fetch.workers", "2"))
        ok(a("share", str(data)))
        yield a, b, data, tmp_path / "copy"


def test_a_killed_worker_fails_the_fetch_by_name_and_the_next_fetch_completes_it(tmp_path: Path) -> None:
    with shared_to_split(tmp_path, 3) as (_, b, data, dest):
        fetch = start_fetch(b, "images", dest)
        first, second = wait_for_workers(b.home, fetch, 2)
        os.kill(first, signal.SIGKILL)
        out, err = fetch.communicate(timeout=60)
        assert fetch.returncode != 0, out
        log = (b.home / "daemon.log").read_text()
        assert "fetch worker" in err and "ended before its files were done" in err, err + log
        assert "run the same fetch again" in err
        assert "internal error" not in err
        wait_gone([second])
        fetched = b.json("fetch", "images", str(dest), "--timeout", "30")
        assert tree(dest) == tree(data)
        assert fetched["files_total"] == FILES + 3


def test_workers_stop_with_a_killed_daemon_and_a_restarted_one_resumes(tmp_path: Path) -> None:
    with shared_to_split(tmp_path, 4) as (_, b, data, dest):
        fetch = start_fetch(b, "images", dest)
        workers = wait_for_workers(b.home, fetch, 2)
        os.kill(running_pid(b.home), signal.SIGKILL)
        fetch.communicate(timeout=60)
        # Their stdin closes with the daemon: they stop rather than write on unobserved.
        wait_gone(workers)
        ok(b("daemon", "start"))
        fetched = json.loads(ok(b("fetch", "images", str(dest), "--timeout", "30", "--json")))
        assert tree(dest) == tree(data)
        assert fetched["workers"] == 2


def test_pause_holds_every_worker_and_resume_completes_the_fetch(tmp_path: Path) -> None:
    with shared_to_split(tmp_path, 5) as (a, b, data, dest):
        fetch = start_fetch(b, "images", dest)
        wait_for_workers(b.home, fetch, 2)
        # Freeze the sender so that the fetch cannot end before the pause reaches the workers.
        sender = running_pid(a.home)
        os.kill(sender, signal.SIGSTOP)
        try:
            with ControlClient.connect(socket_path(b.home)) as client:
                (transfer,) = client.call("status", {}, timeout=10)["transfers"]
                assert transfer["workers"] == 2
                assert client.call("transfer.pause", {"id": transfer["id"]}, timeout=10)["transfer"]["paused"]
        finally:
            os.kill(sender, signal.SIGCONT)
        before = received(b)
        deadline = time.monotonic() + 20
        while True:
            time.sleep(1.0)
            after = received(b)
            if after == before:
                break
            assert time.monotonic() < deadline, "the paused split fetch kept receiving"
            before = after
        assert fetch.poll() is None and len(workers_of(b.home)) == 2
        assert after < sum(len(v[0]) for v in tree(data).values() if isinstance(v[0], bytes))
        with ControlClient.connect(socket_path(b.home)) as client:
            client.call("transfer.resume", {"id": transfer["id"]}, timeout=10)
        out, err = finish(fetch, b)
        assert fetch.returncode == 0, err
        assert tree(dest) == tree(data)


def received(cli: ShoalCli) -> int:
    (transfer,) = cli.json("status")["transfers"]
    return transfer["bytes_received"]


def finish(fetch: subprocess.Popen, cli: ShoalCli, timeout: float = 60) -> tuple[str, str]:
    try:
        return fetch.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        fetch.kill()
        pytest.fail(f"the fetch did not end in {timeout} s:\n" + (cli.home / "daemon.log").read_text()[-5000:])
