"""Connecting to the daemon, starting it first when it is not running."""

import os
import sys
from pathlib import Path

from shoal.client.blocking import ControlClient
from shoal.errors import DaemonNotRunning
from shoal.home import LOG_FILE, socket_path

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
    # Imported only here: commands that find a daemon already running never need subprocess.
    from shoal.client.process import start_detached

    pid = start_detached(home)
    print(f"shoal: started the daemon (pid {pid}); its log is {home / LOG_FILE}", file=sys.stderr)
    return ControlClient.connect(path)
