"""`shoal tui`: the terminal UI, another client of the daemon."""

from __future__ import annotations

import argparse

from shoal.cli.connect import autostart_enabled, connect
from shoal.home import resolve_home


def add_tui(parser: argparse.ArgumentParser) -> None:
    """`shoal tui`: no options beyond the common ones."""
    parser.set_defaults(run=run_tui)


def run_tui(args: argparse.Namespace) -> int:
    """Start the daemon if needed and allowed, then run the UI until it quits."""
    home = resolve_home(args.home)
    # Connect first so a daemon that cannot start fails here, in one line, not inside the UI.
    connect(home, autostart=autostart_enabled(args.no_autostart)).close()
    from shoal.tui.app import run_tui as run_app  # textual is heavy; only the TUI pays for it

    return int(run_app(home) or 0)
