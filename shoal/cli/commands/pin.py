"""`shoal pin` and `shoal sync`: dataset versions pinned in a repository's shoal.lock."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import call, call_with_progress, client_timeout, print_result, warn
from shoal.cli.options import add_json_option, positive_seconds
from shoal.cli.refs import parse_ref
from shoal.errors import UnknownSubset, UsageError
from shoal.protocol.control import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_pin(parser: argparse.ArgumentParser) -> None:
    """`shoal pin NAME[@VERSION][:SUBSET] [--path DIR] [--timeout SECONDS]`."""
    parser.add_argument("spec", metavar="NAME[@VERSION][:SUBSET]", help="what to pin (default: the newest version)")
    parser.add_argument(
        "--path", metavar="DIR", help="the folder, relative to shoal.lock (default: NAME, or as pinned)"
    )
    parser.add_argument("--timeout", type=positive_seconds, metavar="SECONDS", help="how long to wait for peers")
    add_json_option(parser)
    parser.set_defaults(run=run_pin)


def run_pin(args: argparse.Namespace) -> int:
    """Resolve a version and record it in shoal.lock."""
    from shoal.cli import lockfile  # TOML costs start-up time every other command would pay

    ref = parse_ref(args.spec)
    lock = lockfile.find_lock(Path.cwd())
    pins = lockfile.read_pins(lock)
    params: dict[str, Any] = {"name": ref.name, "version": ref.version or "latest"}
    if args.timeout is not None:
        params["timeout"] = args.timeout
    version = call(args, "resolve", params, timeout=client_timeout(args.timeout))["version"]
    if ref.subset is not None and ref.subset not in version["subsets"]:
        known = ", ".join(sorted(version["subsets"])) or "none"
        raise UnknownSubset(
            f"{ref.name}@{version['seq']} has no subset {ref.subset!r} (it has: {known}); "
            f"`shoal subset {ref.name}` lists them"
        )
    earlier = next((p.path for p in pins if p.name == ref.name), ref.name)
    path = lockfile.check_pin_path(_lock_relative(lock, args.path) if args.path else earlier, "--path")
    pin = lockfile.Pin(ref.name, version["id"], version["root"], ref.subset, path)
    lockfile.write_pins(lock, lockfile.updated(pins, pin))
    ignored = lockfile.ignore_in_git(lock, path)
    result = {"lock": str(lock), "pin": pin.to_toml(), "version": version, "gitignore": ignored and str(ignored)}
    print_result(args, result, render.render_pin)
    return ExitCode.OK


def _lock_relative(lock: Path, path: str) -> str:
    """--path as typed (relative to the working directory) made relative to the lock file."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(lock.parent).as_posix()
    except ValueError:
        raise UsageError(f"--path {path} is outside {lock.parent}, the folder of {lock.name}") from None


def add_sync(parser: argparse.ArgumentParser) -> None:
    """`shoal sync [--timeout SECONDS]`."""
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="how long to wait for a peer (exit 6 when it runs out)",
    )
    add_json_option(parser)
    parser.set_defaults(run=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    """Fetch every pinned folder's version, checking each root against the lock."""
    from shoal.cli import lockfile  # as in run_pin

    lock = lockfile.find_lock(Path.cwd())
    if not lock.exists():
        raise UsageError(f"no {lockfile.LOCK_NAME} at {lock.parent}; pin a dataset first with `shoal pin NAME`")
    synced = []
    for pin in lockfile.read_pins(lock):
        params: dict[str, Any] = {"name": pin.name, "version": pin.version, "dest": str(lock.parent / pin.path)}
        if pin.subset is not None:
            params["subset"] = pin.subset
        if args.timeout is not None:
            params["timeout"] = args.timeout
        result = call_with_progress(args, "fetch", params, f"syncing {pin.path} to {pin.name}@{pin.version[:12]}")
        if result["version"]["root"] != pin.root:
            raise UsageError(f"{pin.name}@{pin.version[:12]} has root {result['version']['root'][:12]}, not the pinned"
                             f" {pin.root[:12]}; {lock} was edited by hand, pin again")
        warn(args, result)
        synced.append({"path": pin.path, "fetch": result})
    print_result(args, {"lock": str(lock), "synced": synced}, render.render_sync)
    return ExitCode.OK
