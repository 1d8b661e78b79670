"""`shoal config get|set`: settings in HOME/config.toml.

The file is read and written here, not by the daemon, so both work while it is down;
shoal.daemon.config is imported only when `config` is the command: it costs start-up time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import QUICK_TIMEOUT
from shoal.cli.options import add_common_options, add_json_option
from shoal.client.blocking import ControlClient
from shoal.errors import DaemonNotRunning
from shoal.home import resolve_home, socket_path
from shoal.protocol.control import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_config(parser: argparse.ArgumentParser) -> None:
    """`shoal config get [KEY]` and `shoal config set KEY VALUE`, each with its own handler."""
    from shoal.daemon.config import KEYS

    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    keys = "; ".join(f"{key}: {spec.doc}" for key, spec in KEYS.items())
    get = actions.add_parser("get", help="print one key, or all", description=f"Print settings. Keys: {keys}.")
    add_common_options(get, default=argparse.SUPPRESS)
    get.add_argument("key", metavar="KEY", nargs="?", choices=list(KEYS), help="the key (default: every key)")
    add_json_option(get)
    get.set_defaults(run=run_config_get)
    put = actions.add_parser(
        "set",
        help="change one key",
        description="Change a setting and have a running daemon reload it. Rates accept 100MB/s, 50Mbit, "
        f"2GiB/s or 0 (unlimited). Keys: {keys}.",
    )
    add_common_options(put, default=argparse.SUPPRESS)
    put.add_argument("key", metavar="KEY", choices=list(KEYS), help="the key")
    put.add_argument("value", metavar="VALUE", help="the new value")
    add_json_option(put)
    put.set_defaults(run=run_config_set)


def run_config_get(args: argparse.Namespace) -> int:
    """Print one setting, or all."""
    from shoal.daemon.config import load_config

    values = load_config(resolve_home(args.home)).to_dict()
    if args.key is not None:
        values = {args.key: values[args.key]}
    if args.json:
        render.print_json(values)
    elif args.key is not None:
        print(values[args.key])
    else:
        print(render.render_config(values))
    return ExitCode.OK


def run_config_set(args: argparse.Namespace) -> int:
    """Change a setting and have a running daemon reload it."""
    from shoal.daemon.config import set_config_value

    home = resolve_home(args.home)
    value = set_config_value(home, args.key, args.value).get(args.key)
    reload = _reload_if_running(home)
    restart = reload is not None and args.key in reload["restart_required"]
    if args.json:
        reloaded = reload is not None
        render.print_json({"key": args.key, "value": value, "reloaded": reloaded, "restart_required": restart})
        return ExitCode.OK
    print(render.render_config({args.key: value}))
    if restart:
        print("restart the daemon to apply it: shoal daemon stop && shoal daemon start", file=sys.stderr)
    return ExitCode.OK


def _reload_if_running(home: Path) -> dict[str, Any] | None:
    """The daemon's reload report, or None when it is not running (it reads the file when it starts)."""
    try:
        client = ControlClient.connect(socket_path(home))
    except DaemonNotRunning:
        return None
    with client:
        return client.call("config.reload", timeout=QUICK_TIMEOUT)
