"""`shoal subscribe`, `unsubscribe` and `subscriptions`: folders kept at a dataset's newest version."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import call, print_result
from shoal.cli.options import add_json_option
from shoal.errors import UsageError
from shoal.protocol.control import ExitCode


def add_subscribe(parser: argparse.ArgumentParser) -> None:
    """`shoal subscribe NAME [DEST]`."""
    parser.add_argument("name", metavar="NAME", help="the dataset to follow")
    parser.add_argument(
        "dest", metavar="DEST", nargs="?", help="the folder to keep at its newest version (default: ./NAME)"
    )
    add_json_option(parser)
    parser.set_defaults(run=run_subscribe)


def run_subscribe(args: argparse.Namespace) -> int:
    """Follow a dataset into DEST."""
    if "@" in args.name:
        raise UsageError(f"{args.name!r}: a subscription follows the newest version; give NAME without @VERSION")
    params = {"name": args.name, "dest": str(Path(args.dest or args.name).absolute())}
    result = call(args, "subscription.add", params)
    print_result(args, result, lambda r: render.render_subscription_change(r, "following"))
    return ExitCode.OK


def add_unsubscribe(parser: argparse.ArgumentParser) -> None:
    """`shoal unsubscribe NAME [DEST]`."""
    parser.add_argument("name", metavar="NAME", help="the dataset to stop following")
    parser.add_argument("dest", metavar="DEST", nargs="?", help="only if it follows into this folder")
    add_json_option(parser)
    parser.set_defaults(run=run_unsubscribe)


def run_unsubscribe(args: argparse.Namespace) -> int:
    """Stop following a dataset (into DEST only, if given)."""
    params = {"name": args.name}
    if args.dest is not None:
        params["dest"] = str(Path(args.dest).absolute())
    result = call(args, "subscription.remove", params)
    print_result(args, result, lambda r: render.render_subscription_change(r, "stopped following"))
    return ExitCode.OK


def add_subscriptions(parser: argparse.ArgumentParser) -> None:
    """`shoal subscriptions`."""
    add_json_option(parser)
    parser.set_defaults(run=run_subscriptions)


def run_subscriptions(args: argparse.Namespace) -> int:
    """List followed datasets."""
    print_result(args, call(args, "subscription.list"), render.render_subscriptions)
    return ExitCode.OK
