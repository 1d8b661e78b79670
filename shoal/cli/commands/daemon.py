"""`shoal daemon` (run, start, stop, status) and `shoal status`."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import QUICK_TIMEOUT, call, print_result
from shoal.cli.options import add_json_option
from shoal.client.blocking import ControlClient
from shoal.errors import DaemonNotRunning, TimedOut, UsageError
from shoal.home import LOG_FILE, resolve_home, running_pid, socket_path
from shoal.protocol.control import ExitCode


def add_daemon(parser: argparse.ArgumentParser) -> None:
    """`shoal daemon [start|stop|status] [--listen HOST:PORT] [--no-discovery]`."""
    parser.add_argument(
        "action",
        nargs="?",
        choices=("start", "stop", "status"),
        help="start: spawn in the background and wait until it answers; stop: shut it down; "
        "status: show whether it runs (exit 3 if not). Without an action, run in the foreground.",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="accept peers here instead of the configured address")
    parser.add_argument("--no-discovery", action="store_true", help="do not announce or look for peers with mDNS")
    add_json_option(parser)
    parser.set_defaults(run=run_daemon)


def run_daemon(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground, or start, stop or inspect a background one."""
    home = resolve_home(args.home)
    if args.action in ("stop", "status") and (args.listen or args.no_discovery):
        raise UsageError(f"--listen and --no-discovery apply to starting the daemon, not `daemon {args.action}`")
    if args.action is None:
        from shoal.daemon.main import run_foreground  # the whole daemon: only `shoal daemon` runs it

        run_foreground(home, listen=args.listen, discovery=not args.no_discovery, verbose=args.verbose)
        return ExitCode.OK
    if args.action == "start":
        return _start(args, home)
    if args.action == "stop":
        return _stop(args, home)
    return _status(args, home)


def _start(args: argparse.Namespace, home: Path) -> int:
    pid = running_pid(home)
    started = pid is None
    if started:
        from shoal.client.process import start_detached  # subprocess and its kin: only daemon start/stop load them

        pid = start_detached(home, listen=args.listen, discovery=not args.no_discovery)
    if args.json:
        render.print_json({"pid": pid, "started": started, "log": str(home / LOG_FILE)})
    elif started:
        print(f"shoal daemon started (pid {pid}); log: {home / LOG_FILE}")
    else:
        print(f"shoal daemon already running (pid {pid})")
    return ExitCode.OK


def _stop(args: argparse.Namespace, home: Path) -> int:
    from shoal.client.process import stop  # as in _start

    pid = stop(home)
    if args.json:
        render.print_json({"pid": pid, "stopped": pid is not None})
    elif pid is None:
        print("shoal daemon is not running")
    else:
        print(f"shoal daemon stopped (pid {pid})")
    return ExitCode.OK


def _status(args: argparse.Namespace, home: Path) -> int:
    """Unlike `shoal status`, never starts the daemon: exit 3 says it is down."""
    pid = running_pid(home)
    if pid is None:
        if args.json:
            render.print_json({"running": False, "home": str(home)})
        else:
            print(f"shoal daemon is not running (home {home})")
        return ExitCode.UNREACHABLE
    try:
        with ControlClient.connect(socket_path(home)) as client:
            status = client.call("status", timeout=QUICK_TIMEOUT)
    except (DaemonNotRunning, TimedOut) as exc:
        raise DaemonNotRunning(f"the daemon (pid {pid}) runs but does not answer: {exc}") from None
    print_result(args, {"running": True, **status}, render.render_status)
    return ExitCode.OK


def add_status(parser: argparse.ArgumentParser) -> None:
    """`shoal status`."""
    add_json_option(parser)
    parser.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    """Summarise the daemon, starting it first if needed."""
    print_result(args, {"running": True, **call(args, "status")}, render.render_status)
    return ExitCode.OK
