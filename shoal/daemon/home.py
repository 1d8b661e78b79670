"""Where a daemon keeps its state, and the control socket's path in it.

Kept apart from the configuration so that `shoal status` does not pay for
loading the configuration machinery on every start.
"""

from __future__ import annotations

import os
from pathlib import Path

from shoal.errors import ConfigError

HOME_ENV = "SHOAL_HOME"
SOCKET_FILE = "control.sock"
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
