"""The `shoal` command: the list of commands, argument parsing, and dispatch.

The commands live in shoal.cli.commands, one module per group; each adds its
arguments to its own parser and names its handler. Only the module of the command
given is imported. Errors become one line, "shoal: <what went wrong>; <what to do>",
and a documented exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections import namedtuple

from shoal import __version__
from shoal.cli.options import add_common_options
from shoal.errors import ShoalError
from shoal.protocol.control import ExitCode, classify_error


class Command(namedtuple("Command", "group summary")):
    """The module in shoal.cli.commands whose `add_<command>` builds the command, and its one-line summary.

    A module name rather than the function, so `shoal status` imports one group's module and
    `shoal --help` none (as pip's commands_dict); a namedtuple, as `dataclasses` and `typing`
    would cost every `shoal` start milliseconds.
    """

    __slots__ = ()


#: Every command, in the order `shoal --help` lists them.
COMMANDS = {
    "daemon": Command("daemon", "Run the daemon in the foreground, or start, stop or inspect a background one."),
    "status": Command("daemon", "Summarise the daemon: identity, datasets, peers."),
    "config": Command("config", "Read or change settings in HOME/config.toml."),
    "id": Command("peers", "Print this daemon's peer id, for others to `shoal trust`."),
    "peers": Command("peers", "List trusted peers and peers seen but not trusted."),
    "trust": Command("peers", "Trust a peer: exchange datasets with it from now on."),
    "untrust": Command("peers", "Stop trusting a peer."),
    "share": Command("datasets", "Share a folder as a dataset, or record its changes as a new version."),
    "unshare": Command("datasets", "Stop offering a dataset to peers; its folder stays as it is."),
    "watch": Command("watch", "Share a folder now and again whenever its changes settle."),
    "unwatch": Command("watch", "Stop watching a folder (its versions stay)."),
    "watches": Command("watch", "List watched folders and what each is doing."),
    "ls": Command("datasets", "List datasets shared here, or offered by peers."),
    "log": Command("datasets", "List the versions of a dataset, newest first."),
    "diff": Command("datasets", "List the paths that differ between two versions, and the bytes a fetch moves."),
    "verify": Command(
        "datasets", "Re-hash a dataset's folder against its latest version (exit 5 if anything differs)."
    ),
    "fetch": Command("fetch", "Download a dataset version from trusted peers."),
    "subset": Command("datasets", "List, define or delete a dataset's named subsets."),
    "pin": Command("pin", "Pin a dataset version (or subset) in this repository's shoal.lock."),
    "sync": Command("pin", "Bring every folder pinned in shoal.lock to its pinned version."),
    "subscribe": Command(
        "subscribe", "Keep a folder at the newest version of a dataset, fetching each new version's delta."
    ),
    "unsubscribe": Command("subscribe", "Stop following a dataset; its folder keeps its files."),
    "subscriptions": Command("subscribe", "List followed datasets, their state and the local changes updates kept."),
    "gc": Command("datasets", "Free pack-store space: evict kept versions beyond the budget, compact packs."),
    "tui": Command("tui", "Open the terminal UI: peers, datasets, transfers, watches and subscriptions, live."),
}


class _Parser(argparse.ArgumentParser):
    """Reports usage errors in shoal's one-line style, with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"shoal: {message}; see `{self.prog} --help`\n")


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
    command = COMMANDS[name]
    parser = _Parser(prog=f"shoal {name}", description=command.summary)
    add_common_options(parser, default=None)
    module = importlib.import_module(f"shoal.cli.commands.{command.group}")
    getattr(module, f"add_{name}")(parser)
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
            return index if arg in COMMANDS else None
    return None


def _top_parser() -> argparse.ArgumentParser:
    """The parser for lines without a known command: help, --version and usage errors."""
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items())
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
    add_common_options(parser, default=None)
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    parser.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND", help=argparse.SUPPRESS)
    return parser


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command's handler; every failure becomes one line and an exit code."""
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
