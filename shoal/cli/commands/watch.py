"""`shoal watch`, `unwatch` and `watches`: folders shared again whenever they change."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import call, print_result, warn
from shoal.cli.options import add_json_option
from shoal.protocol.control import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_watch(parser: argparse.ArgumentParser) -> None:
    """`shoal watch PATH [--name NAME]`."""
    parser.add_argument("path", metavar="PATH", help="the folder to share now and again whenever it changes")
    parser.add_argument("--name", help="the dataset's name (default: the folder's name)")
    add_json_option(parser)
    parser.epilog = (
        "Each changed file is published once it has gone watch.quiet seconds unchanged and no process has it "
        "open for writing. Files still being written (a log, an event file) do not hold the others back: "
        "versions keep their last settled state until they settle, or for watch.max_wait seconds at most."
    )
    parser.set_defaults(run=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    """Share a folder now and start watching it."""
    params: dict[str, Any] = {"path": str(Path(args.path).absolute())}
    if args.name is not None:
        params["name"] = args.name
    result = call(args, "watch", params, timeout=None)
    warn(args, result["share"])
    print_result(args, result, render.render_watch)
    return ExitCode.OK


def add_unwatch(parser: argparse.ArgumentParser) -> None:
    """`shoal unwatch NAME|PATH`."""
    parser.add_argument("ref", metavar="NAME|PATH", help="the watched dataset's name, or its folder")
    add_json_option(parser)
    parser.set_defaults(run=run_unwatch)


def run_unwatch(args: argparse.Namespace) -> int:
    """Stop watching a folder."""
    ref = args.ref
    if "/" in ref or ref in (".", ".."):  # a path; a bare word is a dataset name
        ref = str(Path(ref).absolute())
    print_result(args, call(args, "unwatch", {"name": ref}), render.render_unwatch)
    return ExitCode.OK


def add_watches(parser: argparse.ArgumentParser) -> None:
    """`shoal watches`."""
    add_json_option(parser)
    parser.set_defaults(run=run_watches)


def run_watches(args: argparse.Namespace) -> int:
    """List watched folders."""
    print_result(args, call(args, "watches"), render.render_watches)
    return ExitCode.OK
