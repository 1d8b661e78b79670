"""Starting, stopping and probing the daemon process from a client."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shoal.client.blocking import ControlClient
from shoal.errors import DaemonNotRunning, DaemonStartFailed, ShoalError, TimedOut
from shoal.home import LOG_FILE, ensure_home, running_pid, socket_path

log = logging.getLogger(__name__)

#: The log is rotated to daemon.log.1 at start once it is this big.
MAX_LOG_SIZE = 10 * 1024 * 1024
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TERM_TIMEOUT = 5.0
POLL_INTERVAL = 0.05


def start_detached(
    home: Path, *, listen: str | None = None, discovery: bool = True, timeout: float = START_TIMEOUT
) -> int:
    """Spawn `python -m shoal daemon` in its own session and return its pid once it answers."""
    ensure_home(home)
    command = [sys.executable, "-m", "shoal", "--home", str(home), "daemon"]
    if listen is not None:
        command += ["--listen", listen]
    if not discovery:
        command.append("--no-discovery")
    log_path = home / LOG_FILE
    _rotate_log(log_path)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,
        )
    return _wait_until_answering(home, process, log_path, timeout)


def stop(home: Path, *, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the daemon: ask it over the socket, then SIGTERM. Returns its pid, or None if none ran."""
    pid = running_pid(home)
    if pid is None:
        return None
    try:
        with ControlClient.connect(socket_path(home), timeout=2.0) as client:
            client.call("shutdown", timeout=timeout)
    except ShoalError as exc:
        # The daemon may close the socket before the reply leaves: that is a stop too.
        log.debug("shutdown request: %s", exc)
    if _wait_for_exit(home, timeout, pid):
        return pid
    _signal(pid, signal.SIGTERM)
    if _wait_for_exit(home, TERM_TIMEOUT, pid):
        return pid
    raise TimedOut(f"the daemon (pid {pid}) did not stop; end it with `kill -9 {pid}`")


def answers(home: Path, *, timeout: float = 2.0) -> bool:
    """Whether a daemon answers a `status` request on home's socket."""
    try:
        with ControlClient.connect(socket_path(home), timeout=timeout) as client:
            client.call("status", timeout=timeout)
    except ShoalError:
        return False
    return True


def _wait_until_answering(home: Path, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(home, timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
            return running_pid(home) or process.pid
        if process.poll() is not None and running_pid(home) is None:
            raise DaemonStartFailed(
                f"the daemon exited at start ({_last_line(log_path)}); see {log_path}"
            )
        time.sleep(POLL_INTERVAL)
    raise DaemonStartFailed(
        f"the daemon (pid {process.pid}) did not answer within {timeout:g}s; "
        f"see {log_path}, or check `shoal daemon status` in a moment"
    )


def _wait_for_exit(home: Path, timeout: float, pid: int | None = None) -> bool:
    """Wait until the lock is free and, given its pid, the process is gone: it drops the lock
    before the interpreter shuts down, and a stop that returns must mean nothing of it runs."""
    deadline = time.monotonic() + timeout
    while _still_running(home) or (pid is not None and _alive(pid)):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # A daemon that is a child of the caller (tests run it so) stays a zombie until reaped.
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def _still_running(home: Path) -> bool:
    try:
        return running_pid(home) is not None
    except DaemonNotRunning:
        # A stopping daemon clears its pid a moment before it drops the lock; on a busy
        # machine that moment can outlast running_pid's wait. It is still stopping.
        return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise ShoalError(f"not allowed to signal the daemon (pid {pid}); stop it as the user who started it") from None


def _rotate_log(path: Path) -> None:
    try:
        if path.stat().st_size > MAX_LOG_SIZE:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
