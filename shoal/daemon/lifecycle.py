"""Running, starting, stopping and probing the daemon process.

One daemon per home: it holds an exclusive flock on home/daemon.lock, with its pid
written inside, for as long as it lives. The kernel drops the lock when the process
dies, however it dies, so "is a daemon running?" is "is the lock held?", and a pid
or socket left behind by a crash is recognised and cleaned up by the next daemon.
"""

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from shoal.cli.client import ControlClient
from shoal.daemon.config import Config, load_config
from shoal.daemon.home import ensure_home, socket_path
from shoal.daemon.service import DaemonHandle, serve
from shoal.errors import DaemonAlreadyRunning, DaemonNotRunning, DaemonStartFailed, ShoalError, TimedOut

log = logging.getLogger(__name__)

LOCK_FILE = "daemon.lock"
LOG_FILE = "daemon.log"
#: The log is rotated to daemon.log.1 at start once it is this big.
MAX_LOG_SIZE = 10 * 1024 * 1024
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TERM_TIMEOUT = 5.0
POLL_INTERVAL = 0.05


class DaemonLock:
    """The single-instance lock: an exclusive flock on home/daemon.lock holding our pid."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._fd: int | None = None
        self.previous_pid: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DaemonAlreadyRunning; remembers a crashed predecessor's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(self.path)
            holder = f"a daemon (pid {pid})" if pid is not None else "a daemon"
            raise DaemonAlreadyRunning(f"{holder} already runs for this home; stop it with `shoal daemon stop`") from None
        self.previous_pid = _parse_pid(os.pread(fd, 32, 0))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid (a clean exit leaves none behind) and drop the lock."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "DaemonLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def running_pid(home: Path) -> int | None:
    """The pid of the daemon running for `home`, or None if none holds the lock."""
    path = home / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _wait_for_pid(fd)
    finally:
        os.close(fd)
    return None


def run_foreground(home: Path, *, listen: str | None = None, discovery: bool = True, verbose: bool = False) -> None:
    """Run the daemon in this process until SIGINT, SIGTERM or a `shutdown` request."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ensure_home(home)
    with DaemonLock(home) as lock:
        if lock.previous_pid is not None:
            log.warning("the previous daemon (pid %d) did not shut down cleanly; cleaning up", lock.previous_pid)
        socket_path(home).unlink(missing_ok=True)
        config = load_config(home)
        try:
            trio.run(_serve_until_signalled, home, config, listen, discovery)
        except BaseExceptionGroup as group:
            raise _sole(group) from None
    log.info("daemon stopped")


async def _serve_until_signalled(home: Path, config: Config, listen: str | None, discovery: bool) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle: DaemonHandle = await nursery.start(
                _serve_then_cancel, nursery.cancel_scope, home, config, listen, discovery
            )
            async for signum in signals:
                name = signal.Signals(signum).name
                if handle.stopping.is_set():
                    log.warning("second %s: stopping now", name)
                    nursery.cancel_scope.cancel()
                else:
                    log.info("%s received; shutting down", name)
                    handle.shutdown()


async def _serve_then_cancel(
    scope: trio.CancelScope,
    home: Path,
    config: Config,
    listen: str | None,
    discovery: bool,
    *,
    task_status: trio.TaskStatus[DaemonHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(home, config, listen=listen, discovery=discovery, task_status=task_status)
    # serve returned after a graceful stop: end the signal loop that shares its nursery.
    scope.cancel()


def _sole(group: BaseExceptionGroup) -> BaseException:
    """The one error inside nested one-member groups (so the CLI can report it), else the group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


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
    if _wait_for_exit(home, timeout):
        return pid
    _signal(pid, signal.SIGTERM)
    if _wait_for_exit(home, TERM_TIMEOUT):
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


def _wait_for_exit(home: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running_pid(home) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _wait_for_pid(fd: int) -> int:
    # The lock is taken a moment before the pid is written; give the writer that moment.
    for _ in range(40):
        pid = _parse_pid(os.pread(fd, 32, 0))
        if pid is not None:
            return pid
        time.sleep(0.005)
    raise DaemonNotRunning("the daemon lock is held but names no pid; check `ps` for a stuck shoal daemon")


def _read_pid(path: Path) -> int | None:
    try:
        return _parse_pid(path.read_bytes()[:32])
    except OSError:
        return None


def _parse_pid(data: bytes) -> int | None:
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


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
