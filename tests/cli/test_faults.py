"""Faults with real daemons: a receiver killed mid-fetch, a fetch interrupted with
Ctrl-C, a sender that dies (or restarts), and a shared file rewritten while it is served.

Catching a transfer "half way" on a fast machine (loopback moves 150 MB in well
under a second): the tests poll the receiver's status over its control socket
and, as soon as it has received about a third of the data, freeze the sending
daemon with SIGSTOP (a tc-free way to hold the transfer still; nothing in shoal
sleeps). What was already on its way lands, the receiver's `shoal status --json`
settles, and the fault is injected at a known point. SIGCONT (or SIGKILL) then
lets the sender go on (or die)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ShoalCli, make_home, remove_home
from trees import PARTIAL, digests

from shoal.client.blocking import ControlClient
from shoal.home import running_pid, socket_path

pytestmark = pytest.mark.slow


NAME = "ds"
BIG_FILES = 3
BIG_SIZE = 49_000_000
SMALL_FILES = 30
#: Catch the transfer once this share of the bytes has been received ...
TRIGGER = 0.35
#: ... and require that, once the frozen transfer settles, this much is verified and written.
WINDOW = (0.30, 0.70)
#: How long the sender in test 3 stays frozen before it is killed.
HANG = 2.0


# --- helpers -----------------------------------------------------------------------------


def make_dataset(root: Path) -> int:
    """~150 MB: a few large incompressible files and some small ones; returns the size."""
    (root / "small").mkdir(parents=True)
    size = 0
    for i in range(BIG_FILES):
        data = os.urandom(BIG_SIZE)
        (root / f"big{i}.bin").write_bytes(data)
        size += len(data)
    for i in range(SMALL_FILES):
        data = os.urandom(20_000 + 997 * i)
        (root / "small" / f"s{i:02}.dat").write_bytes(data)
        size += len(data)
    return size


def assert_no_half_written(dest: Path, version: dict[str, str]) -> dict[str, str]:
    """Every file in DEST (outside .shoal-partial) is a complete, exact file of the version."""
    present = digests(dest)
    strangers = sorted(set(present) - set(version))
    assert not strangers, f"files in DEST that the version does not have: {strangers}"
    wrong = sorted(p for p, d in present.items() if d != version[p])
    assert not wrong, f"half-written or wrong files in DEST: {wrong}"
    return present


def assert_one_line_error(stderr: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("shoal: "), f"not a one-line error: {stderr!r}"
    assert "Traceback" not in stderr


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def daemon_pid(cli: ShoalCli) -> int:
    status = cli.json("daemon", "status")
    assert status["running"] is True
    return status["pid"]


def transfers(cli: ShoalCli) -> list[dict]:
    process = cli("status", "--json", "--no-autostart")
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)["transfers"]


def start_fetch(cli: ShoalCli, dest: Path, *extra: str) -> subprocess.Popen:
    """`shoal fetch NAME DEST --json` in the background, as a user's terminal would run it.

    SIGINT is reset to its default in the child: a test runner started in the
    background of a non-interactive shell has it ignored, and an ignored SIGINT
    would be inherited, so Ctrl-C could never reach the command.
    """
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal", "--home", str(cli.home), "fetch", NAME, str(dest), "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"`shoal fetch` still running after {timeout}s; stderr so far: {err!r}")
    return process.returncode, out, err


def log_tail(cli: ShoalCli, lines: int = 30) -> str:
    try:
        text = (cli.home / "daemon.log").read_text(errors="replace")
    except OSError:
        return "(no daemon.log)"
    return "\n".join(text.splitlines()[-lines:])


class Pair:
    """Two daemons on loopback: A shares, B fetches; each trusts the other."""

    def __init__(self) -> None:
        self.homes = [make_home(), make_home()]
        self.a, self.b = (ShoalCli(h) for h in self.homes)
        self.frozen: set[int] = set()
        self.pid_a = 0
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        for cli in (self.a, self.b):
            started = cli("daemon", "start")
            assert started.returncode == 0, started.stderr
        self.id_a = self.a.json("id")["peer_id"]
        self.id_b = self.b.json("id")["peer_id"]
        self.listen_a = self.a.json("status")["listen"]
        self.pid_a = daemon_pid(self.a)
        assert self.a("trust", self.id_b, "--name", "laptop").returncode == 0
        assert self.b("trust", self.id_a, "--name", "gpu-box", "--addr", self.listen_a).returncode == 0

    def freeze(self, pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        self.frozen.add(pid)

    def thaw(self, pid: int) -> None:
        self.frozen.discard(pid)
        os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        for pid in list(self.frozen):
            try:
                self.thaw(pid)
            except ProcessLookupError:
                pass
        for cli, home in zip((self.a, self.b), self.homes):
            if running_pid(home) is not None:
                cli("daemon", "stop", timeout=20)
            remove_home(home)

    def share(self, data: Path) -> dict:
        shared = self.a.json("share", str(data), "--name", NAME)
        return shared["version"]

    def catch_midway(self, fetch: subprocess.Popen, dest: Path) -> dict:
        """Wait until B has received TRIGGER of the data, freeze A, and return B's
        transfer once it has settled (everything already sent is verified and written)."""
        pid_a = self.pid_a
        deadline = time.monotonic() + 60
        seen = None
        # The trigger polls the control socket directly: a `shoal status` process
        # takes longer to start than loopback takes to move a third of the data.
        with ControlClient.connect(socket_path(self.b.home)) as client:
            while True:
                if fetch.poll() is not None:
                    pytest.fail(f"the fetch ended before it could be caught half way (last seen {seen}): "
                                f"{fetch.communicate()}")
                assert time.monotonic() < deadline, f"no progress to catch: {seen}\n{log_tail(self.b)}"
                current = client.call("status", timeout=10)["transfers"]
                if current:
                    seen = current[0]
                    if seen["bytes_total"] and seen["bytes_received"] >= TRIGGER * seen["bytes_total"]:
                        self.freeze(pid_a)
                        break
        # What A had already written to the socket still arrives; wait until B has
        # verified and written all it received and nothing moves any more.
        previous = None
        still_since = None
        while True:
            time.sleep(0.2)
            current = transfers(self.b)
            assert current, f"B's transfer vanished while A was frozen\n{log_tail(self.b)}"
            t = current[0]
            snapshot = (t["bytes_received"], t["bytes_done"], t["files_done"])
            if snapshot != previous:
                previous, still_since = snapshot, time.monotonic()
                continue
            if t["bytes_done"] == t["bytes_received"] + t["bytes_reused"] or time.monotonic() - still_since > 5:
                break
        settled = current[0]
        total = settled["bytes_total"]
        low, high = WINDOW
        assert low * total <= settled["bytes_done"] <= high * total, (
            f"caught at {settled['bytes_done'] / total:.0%} instead of {low:.0%}..{high:.0%}: {settled}"
        )
        assert settled["phase"] == "data"
        assert (dest / PARTIAL).is_dir() and any(p.suffix == ".part" for p in (dest / PARTIAL).iterdir())
        return settled


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, int, dict[str, str]]:
    root = tmp_path / "data"
    size = make_dataset(root)
    return root, size, digests(root)


def kill_hard(home: Path, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: running_pid(home) is None, 10, f"pid {pid} to die")


# --- the tests ---------------------------------------------------------------------------


def test_receiver_killed_half_way_resumes_without_refetching(pair: Pair, data, tmp_path: Path) -> None:
    root, size, original = data
    version = pair.share(root)
    assert version["size"] == size
    dest = tmp_path / "copy"
    fetch = start_fetch(pair.b, dest, "--timeout", "30")
    first = pair.catch_midway(fetch, dest)

    kill_hard(pair.homes[1], daemon_pid(pair.b))
    pair.thaw(pair.pid_a)
    code, out, err = finish(fetch, 15)
    assert code != 0 and out == "", (code, out, err)
    assert_one_line_error(err)

    # Nothing half-written in DEST: a file there is complete, or it is not there.
    present = assert_no_half_written(dest, original)
    assert len(present) < len(original), "the kill came after every file was in place"
    # The daemon is really gone; a status that does not autostart says so.
    assert pair.b("daemon", "status", "--json").returncode == 3

    started = pair.b("daemon", "start")
    assert started.returncode == 0, started.stderr
    second = pair.b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert second["version"]["id"] == version["id"]
    assert digests(dest) == original
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    # Chunks verified before the kill were not fetched again.
    assert first["bytes_received"] + second["bytes_received"] <= 1.05 * size, (first, second)
    assert second["bytes_received"] <= size - first["bytes_done"] + 0.05 * size, (first, second)
    assert pair.b.json("verify", NAME)["ok"] is True


def test_ctrl_c_of_fetch_leaves_daemon_running_and_fetch_resumes(pair: Pair, data, tmp_path: Path) -> None:
    root, size, original = data
    version = pair.share(root)
    dest = tmp_path / "copy"
    pid_b = daemon_pid(pair.b)
    fetch = start_fetch(pair.b, dest, "--timeout", "30")
    first = pair.catch_midway(fetch, dest)

    fetch.send_signal(signal.SIGINT)
    code, out, err = finish(fetch, 10)
    pair.thaw(pair.pid_a)
    assert code == 130, (code, out, err)
    assert out == ""
    assert_one_line_error(err)
    assert "interrupt" in err

    # The daemon stays up and drops the interrupted request.
    assert daemon_pid(pair.b) == pid_b
    wait_until(lambda: transfers(pair.b) == [], 10, "the daemon to cancel the interrupted fetch")
    assert_no_half_written(dest, original)

    second = pair.b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert second["version"]["id"] == version["id"]
    assert digests(dest) == original
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    assert second["bytes_received"] <= size - first["bytes_done"] + 0.05 * size, (first, second)
    assert second["bytes_received"] < 0.75 * size
    assert daemon_pid(pair.b) == pid_b


def test_sender_killed_mid_transfer_fails_cleanly_then_resumes(pair: Pair, data, tmp_path: Path) -> None:
    root, size, original = data
    version = pair.share(root)
    dest = tmp_path / "copy"
    timeout = 5
    fetch = start_fetch(pair.b, dest, "--timeout", str(timeout))
    first = pair.catch_midway(fetch, dest)
    # The sender hangs a while, then dies: B is left with no peer at all.
    time.sleep(HANG)

    killed_at = time.monotonic()
    kill_hard(pair.homes[0], pair.pid_a)
    pair.frozen.clear()
    code, out, err = finish(fetch, timeout + 15)
    elapsed = time.monotonic() - killed_at
    # README: exit 6 is "timed out, or no peer has what was asked for".
    assert code == 6, (code, out, err, log_tail(pair.b))
    assert out == ""
    assert_one_line_error(err)
    assert NAME in err
    assert elapsed <= timeout + 2, f"the fetch failed {elapsed:.1f}s after the sender died (--timeout {timeout})"
    # It says it "waited 5s for another" peer: it must have, counted from when the
    # last one left (checked at the end, so that the resume below runs anyway).
    waited_too_little = elapsed < timeout - 0.5
    assert_no_half_written(dest, original)
    assert transfers(pair.b) == []

    # A comes back on the same address, with the index it had; its folder is unchanged.
    started = pair.a("daemon", "start", "--listen", pair.listen_a)
    assert started.returncode == 0, started.stderr
    listed = pair.a.json("ls")["datasets"]
    assert [(d["name"], d["head"]["id"]) for d in listed] == [(NAME, version["id"])]
    assert pair.a.json("verify", NAME)["ok"] is True
    # Ask B to dial now rather than after its backoff.
    assert pair.b("trust", pair.id_a, "--addr", pair.listen_a).returncode == 0

    second = pair.b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert second["version"]["id"] == version["id"]
    assert digests(dest) == original
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    assert second["bytes_received"] <= size - first["bytes_done"] + 0.05 * size, (first, second)
    assert pair.b.json("verify", NAME)["ok"] is True

    assert not waited_too_little, (
        f"the fetch gave up {elapsed:.1f}s after its only peer died, not after --timeout {timeout}s: {err!r}"
    )


def test_file_rewritten_while_served_is_never_accepted(pair: Pair, data, tmp_path: Path) -> None:
    root, size, original = data
    version = pair.share(root)
    dest = tmp_path / "copy"
    fetch = start_fetch(pair.b, dest, "--timeout", "30")
    pair.catch_midway(fetch, dest)

    # The last big file is still to come: rewrite 1 MiB in its middle, same size.
    victim = f"big{BIG_FILES - 1}.bin"
    assert victim not in digests(dest)
    with open(root / victim, "r+b") as f:
        f.seek(BIG_SIZE // 2)
        f.write(os.urandom(1 << 20))
    assert (root / victim).stat().st_size == BIG_SIZE
    pair.thaw(pair.pid_a)

    code, out, err = finish(fetch, 40)
    if code == 0:
        # A still had the old bytes somewhere: then they must be exactly the old ones.
        assert json.loads(out)["version"]["id"] == version["id"]
        assert digests(dest) == original
    else:
        assert code == 1, (code, out, err, log_tail(pair.b))
        assert out == ""
        assert_one_line_error(err)
        assert "chunks" in err, err
        present = assert_no_half_written(dest, original)
        assert victim not in present

    # A shares the new content; B updates to it and ends consistent.
    now = digests(root)
    assert now[victim] != original[victim]
    shared = pair.a.json("share", str(root), "--name", NAME)
    assert shared["created"] is True and shared["version"]["seq"] == 2
    wait_until(
        lambda: [d["head"]["seq"] for d in pair.b.json("ls", "--remote")["datasets"]] == [2],
        15,
        "B to see version 2 in A's catalog",
    )
    second = pair.b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert second["version"]["id"] == shared["version"]["id"]
    assert digests(dest) == now
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    verified = pair.b.json("verify", NAME)
    assert verified["ok"] is True and verified["files_checked"] == len(now)


def test_sender_restarted_mid_transfer_is_used_again(pair: Pair, data, tmp_path: Path) -> None:
    """A sender whose daemon restarts while B fetches: it is back online well within
    --timeout, so the running fetch takes it up again and completes."""
    root, size, original = data
    version = pair.share(root)
    dest = tmp_path / "copy"
    fetch = start_fetch(pair.b, dest, "--timeout", "8")
    pair.catch_midway(fetch, dest)

    kill_hard(pair.homes[0], pair.pid_a)
    pair.frozen.clear()
    started = pair.a("daemon", "start", "--listen", pair.listen_a)
    assert started.returncode == 0, started.stderr
    assert pair.b("trust", pair.id_a, "--addr", pair.listen_a).returncode == 0
    wait_until(
        lambda: [p["state"] for p in pair.b.json("peers")["peers"]] == ["online"], 5, "B to reconnect to A"
    )

    code, out, err = finish(fetch, 30)
    assert code == 0, (code, err, log_tail(pair.b))
    result = json.loads(out)
    assert result["version"]["id"] == version["id"]
    assert digests(dest) == original
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    assert result["bytes_received"] <= 1.05 * size


def b_call(pair: Pair, method: str, **params) -> dict:
    with ControlClient.connect(socket_path(pair.b.home)) as client:
        return client.call(method, params, timeout=10)


def test_pause_holds_the_transfer_and_resume_completes_it(pair: Pair, data, tmp_path: Path) -> None:
    root, size, original = data
    pair.share(root)
    dest = tmp_path / "copy"
    fetch = start_fetch(pair.b, dest, "--timeout", "30")
    caught = pair.catch_midway(fetch, dest)
    paused = b_call(pair, "transfer.pause", id=caught["id"])["transfer"]
    assert paused["paused"] is True
    pair.thaw(pair.pid_a)

    # Requests already open are answered; no new one goes out while paused.
    def settled() -> dict | None:
        before = transfers(pair.b)[0]
        time.sleep(1.0)
        after = transfers(pair.b)[0]
        return after if after["bytes_received"] == before["bytes_received"] else None

    held = wait_until(settled, 20, "the paused transfer to stop moving")
    assert held["bytes_done"] < size and held["paused"] is True and held["bottleneck"] == "paused"
    assert fetch.poll() is None, "a paused fetch must not end"

    b_call(pair, "transfer.resume", id=caught["id"])
    code, out, err = finish(fetch, 60)
    assert code == 0, err
    assert json.loads(out)["bytes_received"] <= size + 0.05 * size
    assert digests(dest) == original


def test_cancel_stops_the_fetch_and_the_next_one_resumes(pair: Pair, data, tmp_path: Path) -> None:
    root, size, original = data
    pair.share(root)
    dest = tmp_path / "copy"
    fetch = start_fetch(pair.b, dest, "--timeout", "30")
    caught = pair.catch_midway(fetch, dest)
    b_call(pair, "transfer.cancel", id=caught["id"])
    code, out, err = finish(fetch, 20)
    pair.thaw(pair.pid_a)
    assert code == 1 and out == "", (code, out, err)
    assert_one_line_error(err)
    assert "cancelled" in err
    wait_until(lambda: transfers(pair.b) == [], 10, "the cancelled transfer to go away")
    assert_no_half_written(dest, original)
    with pytest.raises(Exception, match="no transfer"):
        b_call(pair, "transfer.cancel", id=caught["id"])

    again = pair.b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert digests(dest) == original
    assert again["bytes_received"] <= size - caught["bytes_done"] + 0.05 * size
