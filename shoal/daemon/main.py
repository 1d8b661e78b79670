"""Running the daemon in this process: the single-instance lock, then `serve` until a signal."""

import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from shoal.daemon.collector import tune_collector
from shoal.daemon.config import Config, load_config
from shoal.daemon.service import DaemonHandle, serve
from shoal.errors import DaemonAlreadyRunning, single_exception
from shoal.home import LOCK_FILE, ensure_home, parse_pid, read_pid, socket_path

log = logging.getLogger(__name__)

#: How long a thread holding the GIL may run before one waiting for it gets it (CPython's
#: default is 5 ms). The daemon's worker threads make a system call per file step (open,
#: write, rename, an SQLite write) and each return waits for the GIL: beside busy Python,
#: such a thread wrote 35 files/s at 5 ms and 490 at 0.2 ms (bench/gil_files.py).
SWITCH_INTERVAL = 0.0002


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
            pid = read_pid(self.path)
            holder = f"a daemon (pid {pid})" if pid is not None else "a daemon"
            raise DaemonAlreadyRunning(f"{holder} already runs for this home; stop it with `shoal daemon stop`") from None
        self.previous_pid = parse_pid(os.pread(fd, 32, 0))
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


def run_foreground(home: Path, *, listen: str | None = None, discovery: bool = True, verbose: bool = False) -> None:
    """Run the daemon in this process until SIGINT, SIGTERM or a `shutdown` request."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ensure_home(home)
    sys.setswitchinterval(SWITCH_INTERVAL)
    tune_collector()
    with DaemonLock(home) as lock:
        if lock.previous_pid is not None:
            log.warning("the previous daemon (pid %d) did not shut down cleanly; cleaning up", lock.previous_pid)
        socket_path(home).unlink(missing_ok=True)
        config = load_config(home)
        try:
            trio.run(_serve_until_signalled, home, config, listen, discovery)
        except BaseExceptionGroup as group:
            raise single_exception(group) from None
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
