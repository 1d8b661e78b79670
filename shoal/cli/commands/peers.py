"""`shoal id`, `peers`, `trust` and `untrust`: this daemon's identity and the peers it trusts."""

from __future__ import annotations

import argparse

from shoal.cli import render
from shoal.cli.calls import call, print_result
from shoal.cli.options import add_json_option
from shoal.protocol.control import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_id(parser: argparse.ArgumentParser) -> None:
    """`shoal id`."""
    add_json_option(parser)
    parser.set_defaults(run=run_id)


def run_id(args: argparse.Namespace) -> int:
    """Print this daemon's peer id."""
    print_result(args, call(args, "id"), render.render_id)
    return ExitCode.OK


def add_peers(parser: argparse.ArgumentParser) -> None:
    """`shoal peers`."""
    add_json_option(parser)
    parser.set_defaults(run=run_peers)


def run_peers(args: argparse.Namespace) -> int:
    """List trusted peers and peers seen but not trusted."""
    print_result(args, call(args, "peers"), render.render_peers)
    return ExitCode.OK


def add_trust(parser: argparse.ArgumentParser) -> None:
    """`shoal trust ID [--addr HOST:PORT]... [--name NAME]`."""
    parser.add_argument("peer_id", metavar="ID", help="the peer's id, as `shoal id` prints it on that machine")
    parser.add_argument(
        "--addr",
        dest="addresses",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="where to reach the peer when discovery cannot find it (repeatable)",
    )
    parser.add_argument("--name", help="a short name to show instead of the id (default: the id's first group)")
    add_json_option(parser)
    parser.set_defaults(run=run_trust)


def run_trust(args: argparse.Namespace) -> int:
    """Trust a peer."""
    params: dict[str, Any] = {"peer_id": args.peer_id, "addresses": args.addresses}
    if args.name is not None:
        params["name"] = args.name
    print_result(args, call(args, "trust", params), lambda result: render.render_trust_change(result, "trusted"))
    return ExitCode.OK


def add_untrust(parser: argparse.ArgumentParser) -> None:
    """`shoal untrust ID`."""
    parser.add_argument("peer_id", metavar="ID", help="the peer's full id, its name, or a unique prefix of its id")
    add_json_option(parser)
    parser.set_defaults(run=run_untrust)


def run_untrust(args: argparse.Namespace) -> int:
    """Stop trusting a peer."""
    result = call(args, "untrust", {"peer_id": args.peer_id})
    print_result(args, result, lambda result: render.render_trust_change(result, "no longer trusting"))
    return ExitCode.OK
