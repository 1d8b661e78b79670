"""Connecting to the daemon, starting it first when it is not running."""

import os
import sys
from pathlib import Path

from shoal.cli.client import ControlClient
from shoal.daemon.home import socket_path
from shoal.errors import DaemonNotRunning

NO_AUTOSTART_ENV = "SHOAL_NO_AUTOSTART"


def autostart_enabled(no_autostart_flag: bool) -> bool:
    """False when `--no-autostart` is given or SHOAL_NO_AUTOSTART is set to a true value."""
    env = os.environ.get(NO_AUTOSTART_ENV, "").strip().lower()
    return not no_autostart_flag and env in ("", "0", "false", "no", "off")


def connect(home: Path, *, autostart: bool) -> ControlClient:
    """A client of home's daemon; spawns the daemon first if allowed and needed, saying so on stderr."""
    path = socket_path(home)
    try:
        return ControlClient.connect(path)
    except DaemonNotRunning:
        if not autostart:
            raise DaemonNotRunning(
                "the daemon is not running and autostart is off; start it with `shoal daemon start`"
            ) from None
    # Imported only here: it pulls in the whole daemon (trio, cryptography), which
    # commands that find a daemon already running never need.
    from shoal.daemon import lifecycle

    pid = lifecycle.start_detached(home)
    print(f"shoal: started the daemon (pid {pid}); its log is {home / lifecycle.LOG_FILE}", file=sys.stderr)
    return ControlClient.connect(path)
