"""`shoal fetch`: download a dataset version from trusted peers."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import call_with_progress, print_result, warn
from shoal.cli.options import add_json_option, positive_seconds
from shoal.cli.refs import parse_ref
from shoal.protocol.control import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_fetch(parser: argparse.ArgumentParser) -> None:
    """`shoal fetch NAME[@VERSION][:SUBSET] [DEST] [--include GLOB...] [--from PEER] [--timeout S] [--verify]`."""
    parser.add_argument(
        "spec",
        metavar="NAME[@VERSION][:SUBSET]",
        help="the dataset, optionally a version (its number @3, an id prefix, @latest) and a named subset",
    )
    parser.add_argument("dest", metavar="DEST", nargs="?", help="the folder to write (default: ./NAME)")
    parser.add_argument(
        "--include",
        metavar="GLOB",
        action="append",
        default=[],
        help="fetch only paths matching this gitignore-style pattern (repeatable)",
    )
    parser.add_argument("--from", dest="peer", metavar="PEER", help="fetch only from this peer (id, name or prefix)")
    parser.add_argument(
        "--timeout", type=positive_seconds, metavar="SECONDS",
        help="how long to wait for a peer that has the dataset (default: only until every trusted peer has been"
        " tried), and for another once serving peers leave (default 30); exit 6 when it runs out; never limits the"
        " whole transfer",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="hash every file DEST already holds rather than trusting an unchanged size and mtime",
    )
    add_json_option(parser)
    parser.set_defaults(run=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch a version (or subset) into DEST, showing progress."""
    ref = parse_ref(args.spec)
    dest = Path(args.dest or ref.name).absolute()
    params: dict[str, Any] = {"name": ref.name, "dest": str(dest), "include": args.include}
    if ref.version:
        params["version"] = ref.version
    if ref.subset:
        params["subset"] = ref.subset
    if args.peer is not None:
        params["from"] = args.peer
    if args.timeout is not None:
        params["timeout"] = args.timeout
    if args.verify:
        params["verify"] = True
    result = call_with_progress(args, "fetch", params, f"fetching {args.spec}")
    warn(args, result)
    print_result(args, result, render.render_fetch)
    return ExitCode.OK
