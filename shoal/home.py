"""Where a daemon keeps its state: the home, its control socket, its lock and log.

Shared by the daemon and its clients. One daemon per home: it holds an exclusive
flock on home/daemon.lock, with its pid written inside, for as long as it lives.
The kernel drops the lock when the process dies, however it dies, so "is a daemon
running?" is "is the lock held?", and a pid or socket left behind by a crash is
recognised and cleaned up by the next daemon. Kept apart from the configuration so
that `shoal status` does not pay for loading the configuration machinery.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from shoal.errors import ConfigError, DaemonNotRunning

HOME_ENV = "SHOAL_HOME"
SOCKET_FILE = "control.sock"
LOCK_FILE = "daemon.lock"
LOG_FILE = "daemon.log"
#: sun_path holds 108 bytes including the terminating NUL on Linux.
MAX_SOCKET_PATH = 107


def resolve_home(arg: str | os.PathLike[str] | None = None) -> Path:
    """The home directory: `--home`, else $SHOAL_HOME, else the platform's user data dir."""
    chosen = arg or os.environ.get(HOME_ENV)
    if not chosen:
        import platformdirs

        chosen = platformdirs.user_data_dir("shoal")
    return Path(chosen).expanduser().absolute()


def ensure_home(home: Path) -> Path:
    """Create the home if needed and make it private (0700): it holds keys and the socket."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        home.chmod(0o700)
    return home


def socket_path(home: Path) -> Path:
    """The control socket's path; raises ConfigError when too long for a Unix socket."""
    path = home / SOCKET_FILE
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH:
        raise ConfigError(
            f"the control socket path {path} is {length} bytes, over the {MAX_SOCKET_PATH}-byte "
            "limit of Unix sockets; use a shorter --home"
        )
    return path


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


def _wait_for_pid(fd: int) -> int:
    # The lock is taken a moment before the pid is written; give the writer that moment.
    for _ in range(40):
        pid = parse_pid(os.pread(fd, 32, 0))
        if pid is not None:
            return pid
        time.sleep(0.005)
    raise DaemonNotRunning("the daemon lock is held but names no pid; check `ps` for a stuck shoal daemon")


def read_pid(path: Path) -> int | None:
    try:
        return parse_pid(path.read_bytes()[:32])
    except OSError:
        return None


def parse_pid(data: bytes) -> int | None:
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
