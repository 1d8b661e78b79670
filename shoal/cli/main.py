"""The `shoal` command: argument parsing, and one thin adapter per subcommand.

Each `_add_<cmd>` adds a command's arguments to its parser; each `_cmd_<cmd>`
turns parsed arguments into control requests and renders the result. Errors become one line,
"shoal: <what went wrong>; <what to do>", and a documented exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from collections import namedtuple
from pathlib import Path

from shoal import __version__
from shoal.cli import render
from shoal.client.blocking import ControlClient
from shoal.cli.commands.autostart import autostart_enabled, connect
from shoal.cli.commands.progress import open_progress
from shoal.home import LOG_FILE, resolve_home, running_pid, socket_path
from shoal.cli.refs import parse_ref
from shoal.errors import DaemonNotRunning, ShoalError, TimedOut, UnknownSubset, UsageError
from shoal.protocol.control import ExitCode, classify_error

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


#: Requests that should answer at once get this long before the CLI gives up.
QUICK_TIMEOUT = 30.0
#: Extra time the CLI allows beyond a resolve's or diff's own --timeout, so the daemon reports it first.
FETCH_TIMEOUT_MARGIN = 10.0

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """Reports usage errors in shoal's one-line style, with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"shoal: {message}; see `{self.prog} --help`\n")


class _Command(namedtuple("_Command", "summary add run")):
    """A command's one-line summary, argument builder and adapter (run is None when its actions have their own)."""

    __slots__ = ()


def main(argv: list[str] | None = None) -> int:
    """Run `shoal` with `argv` (default: sys.argv[1:]) and return the exit code."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    return _run(args)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; SystemExit on usage errors and after printing help.

    The command's own parser also reads the global options, wherever they stand, so
    only that one parser is built: building them all costs more than the round trip
    to the daemon, and `shoal status` must stay quick.
    """
    index = _command_index(argv)
    if index is None:
        top = _top_parser()
        top.parse_args(argv)
        top.error("a command is needed")
    return command_parser(argv[index]).parse_args(argv[:index] + argv[index + 1 :])


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command, e.g. "share", global options included."""
    command = _commands()[name]
    parser = _Parser(prog=f"shoal {name}", description=command.summary)
    _add_common_options(parser, default=None)
    command.add(parser)
    if command.run is not None:
        parser.set_defaults(run=command.run)
    return parser


def _command_index(argv: list[str]) -> int | None:
    """Where the command name stands, or None when there is no known one."""
    skip_value = False
    for index, arg in enumerate(argv):
        if skip_value:
            skip_value = False
        elif arg == "--home":
            skip_value = True
        elif not arg.startswith("-"):
            return index if arg in _commands() else None
    return None


def _top_parser() -> argparse.ArgumentParser:
    """The parser for lines without a known command: help, --version and usage errors."""
    commands = _commands()
    width = max(map(len, commands))
    listing = "\n".join(f"  {name:<{width}}  {command.summary}" for name, command in commands.items())
    parser = _Parser(
        prog="shoal",
        usage="shoal [--home DIR] [--verbose] [--no-autostart] COMMAND [ARGS...]",
        description="Share datasets and models peer to peer with your team. Commands that need the "
        "background daemon start it when it is not running.",
        epilog=f"commands:\n{listing}\n\n`shoal COMMAND --help` describes a command's options.\n\n"
        "exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable, 4 not found,\n"
        "            5 verification failed, 6 timed out / no peer, 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(parser, default=None)
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    parser.add_argument("command", nargs="?", choices=list(commands), metavar="COMMAND", help=argparse.SUPPRESS)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """--home, --verbose and --no-autostart.

    `default` is None in a command's parser and SUPPRESS in `config get/set`, whose
    values would otherwise overwrite ones given before the action.
    """
    flag_default = False if default is None else default
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=default,
        help="shoal's state directory (default: $SHOAL_HOME, else the platform's user data dir)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=flag_default,
        help="show tracebacks on errors and debug logs from a foreground daemon",
    )
    parser.add_argument(
        "--no-autostart",
        action="store_true",
        default=flag_default,
        help="fail with exit code 3 instead of starting the daemon (also: SHOAL_NO_AUTOSTART=1)",
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object (schema in the README)")


# --- daemon ------------------------------------------------------------------------


def _add_daemon(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("start", "stop", "status"),
        help="start: spawn in the background and wait until it answers; stop: shut it down; "
        "status: show whether it runs (exit 3 if not). Without an action, run in the foreground.",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="accept peers here instead of the configured address")
    parser.add_argument("--no-discovery", action="store_true", help="do not announce or look for peers with mDNS")
    _json_option(parser)


def _cmd_daemon(args: argparse.Namespace) -> int:
    from shoal.client import process  # subprocess and its kin, only for commands that manage the daemon

    home = resolve_home(args.home)
    if args.action in ("stop", "status") and (args.listen or args.no_discovery):
        raise UsageError(f"--listen and --no-discovery apply to starting the daemon, not `daemon {args.action}`")
    if args.action is None:
        from shoal.daemon.main import run_foreground  # the whole daemon: only `shoal daemon` runs it

        run_foreground(home, listen=args.listen, discovery=not args.no_discovery, verbose=args.verbose)
        return ExitCode.OK
    if args.action == "start":
        return _daemon_start(args, home, process)
    if args.action == "stop":
        return _daemon_stop(args, home, process)
    return _daemon_status(args, home)


def _daemon_start(args: argparse.Namespace, home: Path, process: Any) -> int:
    pid = running_pid(home)
    started = pid is None
    if started:
        pid = process.start_detached(home, listen=args.listen, discovery=not args.no_discovery)
    if args.json:
        render.print_json({"pid": pid, "started": started, "log": str(home / LOG_FILE)})
    elif started:
        print(f"shoal daemon started (pid {pid}); log: {home / LOG_FILE}")
    else:
        print(f"shoal daemon already running (pid {pid})")
    return ExitCode.OK


def _daemon_stop(args: argparse.Namespace, home: Path, process: Any) -> int:
    pid = process.stop(home)
    if args.json:
        render.print_json({"pid": pid, "stopped": pid is not None})
    elif pid is None:
        print("shoal daemon is not running")
    else:
        print(f"shoal daemon stopped (pid {pid})")
    return ExitCode.OK


def _daemon_status(args: argparse.Namespace, home: Path) -> int:
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
    _print(args, {"running": True, **status}, render.render_status)
    return ExitCode.OK


# --- identity and peers ----------------------------------------------------------------


def _add_id(parser: argparse.ArgumentParser) -> None:
    _json_option(parser)


def _cmd_id(args: argparse.Namespace) -> int:
    _print(args, _call(args, "id"), render.render_id)
    return ExitCode.OK


def _add_peers(parser: argparse.ArgumentParser) -> None:
    _json_option(parser)


def _cmd_peers(args: argparse.Namespace) -> int:
    _print(args, _call(args, "peers"), render.render_peers)
    return ExitCode.OK


def _add_trust(parser: argparse.ArgumentParser) -> None:
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
    _json_option(parser)


def _cmd_trust(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"peer_id": args.peer_id, "addresses": args.addresses}
    if args.name is not None:
        params["name"] = args.name
    _print(args, _call(args, "trust", params), lambda result: render.render_trust_change(result, "trusted"))
    return ExitCode.OK


def _add_untrust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("peer_id", metavar="ID", help="the peer's full id, its name, or a unique prefix of its id")
    _json_option(parser)


def _cmd_untrust(args: argparse.Namespace) -> int:
    result = _call(args, "untrust", {"peer_id": args.peer_id})
    _print(args, result, lambda result: render.render_trust_change(result, "no longer trusting"))
    return ExitCode.OK


# --- datasets ----------------------------------------------------------------------------


def _add_share(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH|NAME",
        help="the folder to share, read in place, never copied; or, with --to/--to-all, a dataset shared here",
    )
    parser.add_argument("--name", help="the dataset's name (default: the folder's name)")
    parser.add_argument("-m", "--message", default="", metavar="MSG", help="a note stored with the version")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument(
        "--no-keep", dest="keep", action="store_false", default=None,
        help="do not copy this dataset's versions into the pack store (data too big to keep twice); sticks until --keep",
    )
    keep.add_argument("--keep", dest="keep", action="store_true", help="keep this dataset's versions again (the default)")
    audience = parser.add_mutually_exclusive_group()
    audience.add_argument(
        "--to", action="append", metavar="PEER",
        help="only this trusted peer (name, id or unique id prefix) sees the dataset; repeatable",
    )
    audience.add_argument("--to-all", action="store_true", help="every trusted peer sees the dataset again")
    _json_option(parser)


def _cmd_share(args: argparse.Namespace) -> int:
    audience: dict[str, Any] = {"to": args.to} if args.to else {"to_all": True} if args.to_all else {}
    if audience and not os.path.lexists(args.path):
        # No such folder: NAME is a dataset whose audience changes.
        _print(args, _call(args, "audience", {"name": args.path, **audience}), render.render_audience)
        return ExitCode.OK
    # The daemon has its own working directory: send it an absolute path.
    folder = Path(args.path).absolute()
    params: dict[str, Any] = {"path": str(folder), "message": args.message, **audience}
    if args.name is not None:
        params["name"] = args.name
    if args.keep is not None:
        params["keep"] = args.keep
    result = _call_with_progress(args, "share", params, f"sharing {args.name or folder.name or folder}", None)
    _warn(args, result)
    _print(args, result, render.render_share)
    return ExitCode.OK


def _add_unshare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the dataset to stop offering; its folder is left as it is")
    parser.add_argument(
        "--forget", action="store_true",
        help="also drop its versions and the copies the pack store keeps (a later share starts at version 1)",
    )
    _json_option(parser)


def _cmd_unshare(args: argparse.Namespace) -> int:
    _print(args, _call(args, "unshare", {"name": args.name, "forget": args.forget}), render.render_unshare)
    return ExitCode.OK


def _add_watch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the folder to share now and again whenever it changes")
    parser.add_argument("--name", help="the dataset's name (default: the folder's name)")
    _json_option(parser)


def _cmd_watch(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"path": str(Path(args.path).absolute())}
    if args.name is not None:
        params["name"] = args.name
    result = _call(args, "watch", params, timeout=None)
    _warn(args, result["share"])
    _print(args, result, render.render_watch)
    return ExitCode.OK


def _add_unwatch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="NAME|PATH", help="the watched dataset's name, or its folder")
    _json_option(parser)


def _cmd_unwatch(args: argparse.Namespace) -> int:
    ref = args.ref
    if "/" in ref or ref in (".", ".."):  # a path; a bare word is a dataset name
        ref = str(Path(ref).absolute())
    _print(args, _call(args, "unwatch", {"name": ref}), render.render_unwatch)
    return ExitCode.OK


def _add_watches(parser: argparse.ArgumentParser) -> None:
    _json_option(parser)


def _cmd_watches(args: argparse.Namespace) -> int:
    _print(args, _call(args, "watches"), render.render_watches)
    return ExitCode.OK


def _add_ls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", metavar="NAME[@VERSION]", nargs="?",
        help="list the files of this dataset version (local or on a peer) instead of the datasets",
    )
    parser.add_argument("path", metavar="PATH", nargs="?", default="", help="a folder inside the dataset (default: its root)")
    parser.add_argument("--remote", action="store_true", help="list the datasets online peers offer instead")
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="with --remote: list at most N (default 10,000)")
    _json_option(parser)


def _cmd_ls(args: argparse.Namespace) -> int:
    if args.spec:
        name, _, version = args.spec.partition("@")
        params: dict[str, Any] = {"name": name, "path": args.path}
        if version:
            params["version"] = version
        _print(args, _call(args, "browse", params), render.render_browse)
    elif args.remote:
        params = {"remote": True} | ({"limit": args.limit} if args.limit else {})
        _print(args, _call(args, "ls", params), render.render_remote_datasets)
    else:
        _print(args, _call(args, "ls"), render.render_datasets)
    return ExitCode.OK


def _add_log(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the dataset")
    _json_option(parser)


def _cmd_log(args: argparse.Namespace) -> int:
    _print(args, _call(args, "log", {"name": args.name}), render.render_log)
    return ExitCode.OK


def _add_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the dataset")
    parser.add_argument(
        "path", metavar="PATH", nargs="?", help="a folder a fetch left it in (default: the dataset's own folder)"
    )
    _json_option(parser)


def _cmd_verify(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"name": args.name}
    if args.path:
        params["path"] = os.path.abspath(args.path)
    report = _call(args, "verify", params, timeout=None)
    _print(args, report, render.render_verify)
    return ExitCode.OK if report["ok"] else ExitCode.VERIFY_FAILED


def _add_fetch(parser: argparse.ArgumentParser) -> None:
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
        "--timeout", type=_positive_seconds, metavar="SECONDS",
        help="how long to wait for a peer (default 30; exit 6 when it runs out); never limits the whole transfer",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="hash every file DEST already holds rather than trusting an unchanged size and mtime",
    )
    _json_option(parser)


def _cmd_fetch(args: argparse.Namespace) -> int:
    ref = parse_ref(args.spec)
    params: dict[str, Any] = {"name": ref.name, "dest": str(Path(args.dest or ref.name).absolute()), "include": args.include}
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
    # No deadline of our own: --timeout bounds each wait for a peer, which the daemon
    # enforces and reports, not the transfer, which takes as long as its data does.
    result = _call_with_progress(args, "fetch", params, f"fetching {args.spec}", None)
    _warn(args, result)
    _print(args, result, render.render_fetch)
    return ExitCode.OK


def _add_subscribe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the dataset to follow")
    parser.add_argument("dest", metavar="DEST", nargs="?", help="the folder to keep at its newest version (default: ./NAME)")
    _json_option(parser)


def _cmd_subscribe(args: argparse.Namespace) -> int:
    if "@" in args.name:
        raise UsageError(f"{args.name!r}: a subscription follows the newest version; give NAME without @VERSION")
    params = {"name": args.name, "dest": str(Path(args.dest or args.name).absolute())}
    _print(args, _call(args, "subscription.add", params), lambda r: render.render_subscription_change(r, "following"))
    return ExitCode.OK


def _add_unsubscribe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the dataset to stop following")
    parser.add_argument("dest", metavar="DEST", nargs="?", help="only if it follows into this folder")
    _json_option(parser)


def _cmd_unsubscribe(args: argparse.Namespace) -> int:
    params = {"name": args.name}
    if args.dest is not None:
        params["dest"] = str(Path(args.dest).absolute())
    result = _call(args, "subscription.remove", params)
    _print(args, result, lambda r: render.render_subscription_change(r, "stopped following"))
    return ExitCode.OK


def _add_subscriptions(parser: argparse.ArgumentParser) -> None:
    _json_option(parser)


def _cmd_subscriptions(args: argparse.Namespace) -> int:
    _print(args, _call(args, "subscription.list"), render.render_subscriptions)
    return ExitCode.OK


def _add_diff(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="NAME@A", help="the version to compare from")
    parser.add_argument("new", metavar="NAME@B", help="the version to compare to (NAME alone: the newest)")
    parser.add_argument("--limit", type=_positive_int, default=1000, metavar="N", help="list at most N paths")
    parser.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS", help="how long to wait for peers")
    _json_option(parser)


def _cmd_diff(args: argparse.Namespace) -> int:
    old, new = parse_ref(args.old, subset=False), parse_ref(args.new, subset=False)
    if old.name != new.name:
        raise UsageError(f"diff compares two versions of one dataset, not {old.name} and {new.name}")
    params: dict[str, Any] = {"name": old.name, "from": old.version or "latest", "to": new.version or "latest"}
    params["limit"] = args.limit
    if args.timeout is not None:
        params["timeout"] = args.timeout
    _print(args, _call(args, "diff", params, timeout=_client_timeout(args.timeout)), render.render_diff)
    return ExitCode.OK


def _add_subset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the dataset (shared or fetched here)")
    parser.add_argument("subset", metavar="SUBSET", nargs="?", help="the subset to define or delete; none lists them")
    parser.add_argument("--include", metavar="GLOB", action="append", help="paths the subset holds (repeatable)")
    parser.add_argument("--sample", metavar="PCT", help="keep this share of the files, e.g. 1%% or 0.01")
    parser.add_argument("--seed", type=int, metavar="N", help="the sample's seed (default 0)")
    parser.add_argument("--delete", action="store_true", help="remove the subset")
    _json_option(parser)


def _cmd_subset(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"name": args.name}
    if args.subset is not None:
        params["subset"] = args.subset
    for key in ("include", "sample", "seed"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.delete:
        params["delete"] = True
    _print(args, _call(args, "subset", params), render.render_subsets)
    return ExitCode.OK


def _add_pin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="NAME[@VERSION][:SUBSET]", help="what to pin (default: the newest version)")
    parser.add_argument("--path", metavar="DIR", help="the folder, relative to shoal.lock (default: NAME, or as pinned)")
    parser.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS", help="how long to wait for peers")
    _json_option(parser)


def _cmd_pin(args: argparse.Namespace) -> int:
    from shoal.cli import lockfile  # TOML costs start-up time every other command would pay

    ref = parse_ref(args.spec)
    lock = lockfile.find_lock(Path.cwd())
    pins = lockfile.read_pins(lock)
    params: dict[str, Any] = {"name": ref.name, "version": ref.version or "latest"}
    if args.timeout is not None:
        params["timeout"] = args.timeout
    version = _call(args, "resolve", params, timeout=_client_timeout(args.timeout))["version"]
    if ref.subset is not None and ref.subset not in version["subsets"]:
        known = ", ".join(sorted(version["subsets"])) or "none"
        raise UnknownSubset(
            f"{ref.name}@{version['seq']} has no subset {ref.subset!r} (it has: {known}); `shoal subset {ref.name}` lists them"
        )
    earlier = next((p.path for p in pins if p.name == ref.name), ref.name)
    path = lockfile.check_pin_path(_lock_relative(lock, args.path) if args.path else earlier, "--path")
    pin = lockfile.Pin(ref.name, version["id"], version["root"], ref.subset, path)
    lockfile.write_pins(lock, lockfile.updated(pins, pin))
    _print(args, {"lock": str(lock), "pin": pin.to_toml(), "version": version}, render.render_pin)
    return ExitCode.OK


def _lock_relative(lock: Path, path: str) -> str:
    """--path as typed (relative to the working directory) made relative to the lock file."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(lock.parent).as_posix()
    except ValueError:
        raise UsageError(f"--path {path} is outside {lock.parent}, the folder of {lock.name}") from None


def _add_sync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS", help="how long to wait for a peer (exit 6 when it runs out)")
    _json_option(parser)


def _cmd_sync(args: argparse.Namespace) -> int:
    from shoal.cli import lockfile  # as in _cmd_pin

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
        label = f"syncing {pin.path} to {pin.name}@{pin.version[:12]}"
        result = _call_with_progress(args, "fetch", params, label, None)  # as in _cmd_fetch
        if result["version"]["root"] != pin.root:
            raise UsageError(f"{pin.name}@{pin.version[:12]} has root {result['version']['root'][:12]}, not the pinned"
                             f" {pin.root[:12]}; {lock} was edited by hand, pin again")
        _warn(args, result)
        synced.append({"path": pin.path, "fetch": result})
    _print(args, {"lock": str(lock), "synced": synced}, render.render_sync)
    return ExitCode.OK


def _client_timeout(timeout: float | None) -> float | None:
    return None if timeout is None else timeout + FETCH_TIMEOUT_MARGIN


def _positive(convert: Callable[[str], Any], what: str, name: str) -> Callable[[str], Any]:
    """An argparse type: `convert`ed text that must be above zero."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"the {name} must be positive")
        return value

    return parse


_positive_int = _positive(int, "a whole number", "limit")
_positive_seconds = _positive(float, "a number of seconds", "timeout")


# --- daemon-wide -------------------------------------------------------------------------


def _add_gc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="evict only this dataset's versions (packs are compacted for all)")
    _json_option(parser)


def _cmd_gc(args: argparse.Namespace) -> int:
    params = {"name": args.name} if args.name else {}
    _print(args, _call(args, "gc", params, timeout=None), render.render_gc)
    return ExitCode.OK


def _add_status(parser: argparse.ArgumentParser) -> None:
    _json_option(parser)


def _cmd_status(args: argparse.Namespace) -> int:
    _print(args, {"running": True, **_call(args, "status")}, render.render_status)
    return ExitCode.OK


def _add_config(parser: argparse.ArgumentParser) -> None:
    from shoal.daemon.config import KEYS

    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    keys = "; ".join(f"{key}: {spec.doc}" for key, spec in KEYS.items())
    get = actions.add_parser("get", help="print one key, or all", description=f"Print settings. Keys: {keys}.")
    _add_common_options(get, default=argparse.SUPPRESS)
    get.add_argument("key", metavar="KEY", nargs="?", choices=list(KEYS), help="the key (default: every key)")
    _json_option(get)
    get.set_defaults(run=_cmd_config_get)
    put = actions.add_parser(
        "set",
        help="change one key",
        description="Change a setting and have a running daemon reload it. Rates accept 100MB/s, 50Mbit, "
        f"2GiB/s or 0 (unlimited). Keys: {keys}.",
    )
    _add_common_options(put, default=argparse.SUPPRESS)
    put.add_argument("key", metavar="KEY", choices=list(KEYS), help="the key")
    put.add_argument("value", metavar="VALUE", help="the new value")
    _json_option(put)
    put.set_defaults(run=_cmd_config_set)


def _cmd_config_get(args: argparse.Namespace) -> int:
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


def _cmd_config_set(args: argparse.Namespace) -> int:
    from shoal.daemon.config import set_config_value

    home = resolve_home(args.home)
    value = set_config_value(home, args.key, args.value).get(args.key)
    reload = _reload_if_running(home)
    restart = reload is not None and args.key in reload["restart_required"]
    if args.json:
        render.print_json({"key": args.key, "value": value, "reloaded": reload is not None, "restart_required": restart})
        return ExitCode.OK
    print(render.render_config({args.key: value}))
    if restart:
        print("restart the daemon to apply it: shoal daemon stop && shoal daemon start", file=sys.stderr)
    return ExitCode.OK


def _reload_if_running(home: Path) -> dict[str, Any] | None:
    try:
        client = ControlClient.connect(socket_path(home))
    except DaemonNotRunning:
        return None
    with client:
        return client.call("config.reload", timeout=QUICK_TIMEOUT)


def _add_tui(parser: argparse.ArgumentParser) -> None:
    """The TUI has no options beyond the common ones."""


def _cmd_tui(args: argparse.Namespace) -> int:
    home = resolve_home(args.home)
    connect(home, autostart=autostart_enabled(args.no_autostart)).close()
    from shoal.tui.app import run_tui  # textual is heavy; only the TUI pays for it

    return int(run_tui(home) or 0)


def _commands() -> dict[str, _Command]:
    return {
        "daemon": _Command(
            "Run the daemon in the foreground, or start, stop or inspect a background one.", _add_daemon, _cmd_daemon
        ),
        "status": _Command("Summarise the daemon: identity, datasets, peers.", _add_status, _cmd_status),
        "config": _Command("Read or change settings in HOME/config.toml.", _add_config, None),
        "id": _Command("Print this daemon's peer id, for others to `shoal trust`.", _add_id, _cmd_id),
        "peers": _Command("List trusted peers and peers seen but not trusted.", _add_peers, _cmd_peers),
        "trust": _Command("Trust a peer: exchange datasets with it from now on.", _add_trust, _cmd_trust),
        "untrust": _Command("Stop trusting a peer.", _add_untrust, _cmd_untrust),
        "share": _Command("Share a folder as a dataset, or record its changes as a new version.", _add_share, _cmd_share),
        "unshare": _Command("Stop offering a dataset to peers; its folder stays as it is.", _add_unshare, _cmd_unshare),
        "watch": _Command("Share a folder now and again whenever its changes settle.", _add_watch, _cmd_watch),
        "unwatch": _Command("Stop watching a folder (its versions stay).", _add_unwatch, _cmd_unwatch),
        "watches": _Command("List watched folders and what each is doing.", _add_watches, _cmd_watches),
        "ls": _Command("List datasets shared here, or offered by peers.", _add_ls, _cmd_ls),
        "log": _Command("List the versions of a dataset, newest first.", _add_log, _cmd_log),
        "diff": _Command("List the paths that differ between two versions, and the bytes a fetch moves.", _add_diff, _cmd_diff),
        "verify": _Command(
            "Re-hash a dataset's folder against its latest version (exit 5 if anything differs).",
            _add_verify,
            _cmd_verify,
        ),
        "fetch": _Command("Download a dataset version from trusted peers.", _add_fetch, _cmd_fetch),
        "subset": _Command("List, define or delete a dataset's named subsets.", _add_subset, _cmd_subset),
        "pin": _Command("Pin a dataset version (or subset) in this repository's shoal.lock.", _add_pin, _cmd_pin),
        "sync": _Command("Bring every folder pinned in shoal.lock to its pinned version.", _add_sync, _cmd_sync),
        "subscribe": _Command(
            "Keep a folder at the newest version of a dataset, fetching each new version's delta.",
            _add_subscribe,
            _cmd_subscribe,
        ),
        "unsubscribe": _Command("Stop following a dataset; its folder keeps its files.", _add_unsubscribe, _cmd_unsubscribe),
        "subscriptions": _Command(
            "List followed datasets, their state and the local changes updates kept.",
            _add_subscriptions,
            _cmd_subscriptions,
        ),
        "gc": _Command("Free pack-store space: evict kept versions beyond the budget, compact packs.", _add_gc, _cmd_gc),
        "tui": _Command("Open the terminal UI: peers, datasets, transfers, watches and subscriptions, live.", _add_tui, _cmd_tui),
    }


# --- shared plumbing -------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ControlClient:
    return connect(resolve_home(args.home), autostart=autostart_enabled(args.no_autostart))


def _call(
    args: argparse.Namespace, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = QUICK_TIMEOUT
) -> dict[str, Any]:
    with _client(args) as client:
        return client.call(method, params, timeout=timeout)


def _call_with_progress(
    args: argparse.Namespace, method: str, params: dict[str, Any], label: str, timeout: float | None
) -> dict[str, Any]:
    with _client(args) as client:
        if args.json:
            return client.call(method, params, timeout=timeout)
        view = open_progress(label)
        try:
            return client.call(method, params, on_progress=view.update, timeout=timeout)
        finally:
            view.close()


def _warn(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if not args.json:
        for warning in result["warnings"]:
            print(f"shoal: warning: {warning}", file=sys.stderr)


def _print(args: argparse.Namespace, result: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if args.json:
        render.print_json(result)
    else:
        print(human(result))


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        _report("interrupted; run the same command again to pick up where it stopped", args.verbose)
        return ExitCode.INTERRUPTED
    except ShoalError as exc:
        _report(str(exc), args.verbose)
        return classify_error(exc)[1]
    except BrokenPipeError:
        # The reader went away (`shoal ls | head`); say nothing more to a closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence turns bugs into one line
        _report(f"unexpected {type(exc).__name__}: {exc}; rerun with --verbose and report it", args.verbose)
        return ExitCode.ERROR


def _report(message: str, verbose: bool) -> None:
    if verbose:
        import traceback  # only --verbose needs it; the common path stays fast

        traceback.print_exc(file=sys.stderr)
    print(f"shoal: {message}", file=sys.stderr)
