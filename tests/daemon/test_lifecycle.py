"""The daemon process: the single-instance lock, detached start, stop, signals, crash recovery."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shoal.client.process import _wait_for_exit, answers, start_detached, stop
from shoal.daemon.main import DaemonLock
from shoal.errors import DaemonAlreadyRunning, DaemonStartFailed
from shoal.home import LOCK_FILE, LOG_FILE, running_pid

pytestmark = pytest.mark.slow


@pytest.fixture
def home():
    # Under /tmp, not pytest's tmp_path: Unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="shoal-life-", dir="/tmp"))
    yield path
    pid = running_pid(path)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether `pid` still runs; the detached daemon is our child, so a zombie has exited."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def foreground(home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shoal", "--home", str(home), "daemon", "--listen", "127.0.0.1:0", "--no-discovery"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_lock_is_exclusive_and_names_its_holder(home):
    with DaemonLock(home):
        assert running_pid(home) == os.getpid()
        with pytest.raises(DaemonAlreadyRunning, match=f"pid {os.getpid()}"):
            DaemonLock(home).acquire()
    assert running_pid(home) is None
    assert (home / LOCK_FILE).read_text() == "", "a clean exit leaves no pid behind"


def test_a_pid_left_by_a_crash_is_not_mistaken_for_a_running_daemon(home):
    (home / LOCK_FILE).write_text("4242\n")
    assert running_pid(home) is None
    lock = DaemonLock(home)
    lock.acquire()
    try:
        assert lock.previous_pid == 4242
        assert (home / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_start_answers_then_stop_removes_every_trace(home):
    pid = start_detached(home, listen="127.0.0.1:0", discovery=False)
    assert running_pid(home) == pid
    assert answers(home)
    assert os.getsid(pid) == pid, "the daemon leads its own session, detached from our terminal"
    assert stop(home) == pid
    assert not _running(pid), "stop returns once the process has exited, not only its lock"
    assert running_pid(home) is None
    assert not (home / "control.sock").exists()
    assert "ready" in (home / LOG_FILE).read_text()
    assert stop(home) is None, "stopping a stopped daemon is not an error"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_foreground_daemon_shuts_down_cleanly_on_a_signal(home, signum):
    process = foreground(home)
    try:
        wait_until(lambda: answers(home))
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "shutting down" in stderr
    assert not (home / "control.sock").exists()
    assert running_pid(home) is None


def test_a_second_daemon_for_the_same_home_refuses_to_run(home):
    process = foreground(home)
    try:
        wait_until(lambda: answers(home))
        second = subprocess.run(
            [sys.executable, "-m", "shoal", "--home", str(home), "daemon"], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert f"pid {process.pid}" in second.stderr and "shoal daemon stop" in second.stderr
        assert answers(home), "the running daemon is untouched"
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_the_next_daemon_cleans_up_after_a_killed_one(home):
    pid = start_detached(home, listen="127.0.0.1:0", discovery=False)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: running_pid(home) is None)
    assert (home / "control.sock").exists(), "a killed daemon leaves its socket behind"
    assert not answers(home)
    new_pid = start_detached(home, listen="127.0.0.1:0", discovery=False)
    assert new_pid != pid and answers(home)
    assert f"previous daemon (pid {pid}) did not shut down cleanly" in (home / LOG_FILE).read_text()
    stop(home)


def test_a_daemon_that_cannot_start_is_reported_with_its_reason(home):
    (home / "config.toml").write_text("listen = 5\n")
    with pytest.raises(DaemonStartFailed) as caught:
        start_detached(home, timeout=30)
    assert "config.toml" in str(caught.value) and "daemon.log" in str(caught.value)
    assert running_pid(home) is None


def test_stopping_outlasts_a_lock_that_no_longer_names_a_pid(home):
    # A stopping daemon clears its pid before it drops the lock; on a busy machine the gap
    # can be longer than running_pid waits for a pid (it then raises DaemonNotRunning).
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(0.6, os.close, (fd,)).start()
    started = time.monotonic()
    assert _wait_for_exit(home, timeout=5.0)
    assert time.monotonic() - started >= 0.5
