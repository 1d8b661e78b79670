"""Datasets shared here: `shoal share`, `unshare`, `ls`, `log`, `diff`, `verify`, `subset` and `gc`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shoal.cli import render
from shoal.cli.calls import call, call_with_progress, client_timeout, print_result, warn
from shoal.cli.options import add_json_option, positive_int, positive_seconds
from shoal.cli.refs import parse_ref
from shoal.errors import UsageError
from shoal.protocol.control import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_share(parser: argparse.ArgumentParser) -> None:
    """`shoal share PATH|NAME [--name] [-m MSG] [--keep|--no-keep] [--to PEER...|--to-all]`."""
    parser.add_argument(
        "path", metavar="PATH|NAME",
        help="the folder to share, read in place, never copied; or, with --to/--to-all, a dataset shared here",
    )
    parser.add_argument("--name", help="the dataset's name (default: the folder's name)")
    parser.add_argument("-m", "--message", default="", metavar="MSG", help="a note stored with the version")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument(
        "--no-keep", dest="keep", action="store_false", default=None,
        help="do not copy this dataset's versions into the pack store (data too big to keep twice); "
        "sticks until --keep",
    )
    keep.add_argument(
        "--keep", dest="keep", action="store_true", help="keep this dataset's versions again (the default)"
    )
    audience = parser.add_mutually_exclusive_group()
    audience.add_argument(
        "--to", action="append", metavar="PEER",
        help="only this trusted peer (name, id or unique id prefix) sees the dataset; repeatable",
    )
    audience.add_argument("--to-all", action="store_true", help="every trusted peer sees the dataset again")
    add_json_option(parser)
    parser.set_defaults(run=run_share)


def run_share(args: argparse.Namespace) -> int:
    """Share a folder (a new version if it changed), or change who sees a shared dataset."""
    audience: dict[str, Any] = {"to": args.to} if args.to else {"to_all": True} if args.to_all else {}
    if audience and not os.path.lexists(args.path):
        # No such folder: NAME is a dataset whose audience changes.
        print_result(args, call(args, "audience", {"name": args.path, **audience}), render.render_audience)
        return ExitCode.OK
    # The daemon has its own working directory: send it an absolute path.
    folder = Path(args.path).absolute()
    params: dict[str, Any] = {"path": str(folder), "message": args.message, **audience}
    if args.name is not None:
        params["name"] = args.name
    if args.keep is not None:
        params["keep"] = args.keep
    result = call_with_progress(args, "share", params, f"sharing {args.name or folder.name or folder}")
    warn(args, result)
    print_result(args, result, render.render_share)
    return ExitCode.OK


def add_unshare(parser: argparse.ArgumentParser) -> None:
    """`shoal unshare NAME [--forget]`."""
    parser.add_argument("name", metavar="NAME", help="the dataset to stop offering; its folder is left as it is")
    parser.add_argument(
        "--forget", action="store_true",
        help="also drop its versions and the copies the pack store keeps (a later share starts at version 1)",
    )
    add_json_option(parser)
    parser.set_defaults(run=run_unshare)


def run_unshare(args: argparse.Namespace) -> int:
    """Stop offering a dataset."""
    print_result(args, call(args, "unshare", {"name": args.name, "forget": args.forget}), render.render_unshare)
    return ExitCode.OK


def add_ls(parser: argparse.ArgumentParser) -> None:
    """`shoal ls [NAME[@VERSION] [PATH]] [--remote [--limit N]]`."""
    parser.add_argument(
        "spec", metavar="NAME[@VERSION]", nargs="?",
        help="list the files of this dataset version (local or on a peer) instead of the datasets",
    )
    parser.add_argument(
        "path", metavar="PATH", nargs="?", default="", help="a folder inside the dataset (default: its root)"
    )
    parser.add_argument("--remote", action="store_true", help="list the datasets online peers offer instead")
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="with --remote: list at most N (default 10,000)"
    )
    add_json_option(parser)
    parser.set_defaults(run=run_ls)


def run_ls(args: argparse.Namespace) -> int:
    """List a version's files, the datasets peers offer, or those shared here."""
    if args.spec:
        name, _, version = args.spec.partition("@")
        params: dict[str, Any] = {"name": name, "path": args.path}
        if version:
            params["version"] = version
        print_result(args, call(args, "browse", params), render.render_browse)
    elif args.remote:
        params = {"remote": True} | ({"limit": args.limit} if args.limit else {})
        print_result(args, call(args, "ls", params), render.render_remote_datasets)
    else:
        print_result(args, call(args, "ls"), render.render_datasets)
    return ExitCode.OK


def add_log(parser: argparse.ArgumentParser) -> None:
    """`shoal log NAME`."""
    parser.add_argument("name", metavar="NAME", help="the dataset")
    add_json_option(parser)
    parser.set_defaults(run=run_log)


def run_log(args: argparse.Namespace) -> int:
    """List a dataset's versions."""
    print_result(args, call(args, "log", {"name": args.name}), render.render_log)
    return ExitCode.OK


def add_diff(parser: argparse.ArgumentParser) -> None:
    """`shoal diff NAME@A NAME@B [--limit N] [--timeout SECONDS]`."""
    parser.add_argument("old", metavar="NAME@A", help="the version to compare from")
    parser.add_argument("new", metavar="NAME@B", help="the version to compare to (NAME alone: the newest)")
    parser.add_argument("--limit", type=positive_int, default=1000, metavar="N", help="list at most N paths")
    parser.add_argument("--timeout", type=positive_seconds, metavar="SECONDS", help="how long to wait for peers")
    add_json_option(parser)
    parser.set_defaults(run=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    """List the paths two versions of a dataset differ in."""
    old, new = parse_ref(args.old, subset=False), parse_ref(args.new, subset=False)
    if old.name != new.name:
        raise UsageError(f"diff compares two versions of one dataset, not {old.name} and {new.name}")
    params: dict[str, Any] = {"name": old.name, "from": old.version or "latest", "to": new.version or "latest"}
    params["limit"] = args.limit
    if args.timeout is not None:
        params["timeout"] = args.timeout
    print_result(args, call(args, "diff", params, timeout=client_timeout(args.timeout)), render.render_diff)
    return ExitCode.OK


def add_verify(parser: argparse.ArgumentParser) -> None:
    """`shoal verify NAME [PATH]`."""
    parser.add_argument("name", metavar="NAME", help="the dataset")
    parser.add_argument(
        "path", metavar="PATH", nargs="?", help="a folder a fetch left it in (default: the dataset's own folder)"
    )
    add_json_option(parser)
    parser.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Re-hash a dataset's folder; exit 5 if anything differs."""
    params: dict[str, Any] = {"name": args.name}
    if args.path:
        params["path"] = os.path.abspath(args.path)
    report = call(args, "verify", params, timeout=None)
    print_result(args, report, render.render_verify)
    return ExitCode.OK if report["ok"] else ExitCode.VERIFY_FAILED


def add_subset(parser: argparse.ArgumentParser) -> None:
    """`shoal subset NAME [SUBSET] [--include GLOB...] [--sample PCT] [--seed N] [--delete]`."""
    parser.add_argument("name", metavar="NAME", help="the dataset (shared or fetched here)")
    parser.add_argument("subset", metavar="SUBSET", nargs="?", help="the subset to define or delete; none lists them")
    parser.add_argument("--include", metavar="GLOB", action="append", help="paths the subset holds (repeatable)")
    parser.add_argument(
        "--sample", metavar="PCT",
        help="draw exactly this share of the (included) files, rounded to whole files and at least one, "
        "e.g. 10%% or 0.1 (0.0001%% to 100%%); every machine draws the same files",
    )
    parser.add_argument("--seed", type=int, metavar="N", help="which files the sample draws (default 0)")
    parser.add_argument("--delete", action="store_true", help="remove the subset")
    add_json_option(parser)
    parser.set_defaults(run=run_subset)


def run_subset(args: argparse.Namespace) -> int:
    """List, define or delete a dataset's subsets."""
    params: dict[str, Any] = {"name": args.name}
    if args.subset is not None:
        params["subset"] = args.subset
    for key in ("include", "sample", "seed"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.delete:
        params["delete"] = True
    print_result(args, call(args, "subset", params), render.render_subsets)
    return ExitCode.OK


def add_gc(parser: argparse.ArgumentParser) -> None:
    """`shoal gc [NAME]`."""
    parser.add_argument(
        "name", metavar="NAME", nargs="?", help="evict only this dataset's versions (packs are compacted for all)"
    )
    add_json_option(parser)
    parser.set_defaults(run=run_gc)


def run_gc(args: argparse.Namespace) -> int:
    """Evict kept versions beyond the budget and compact packs."""
    params = {"name": args.name} if args.name else {}
    print_result(args, call(args, "gc", params, timeout=None), render.render_gc)
    return ExitCode.OK
