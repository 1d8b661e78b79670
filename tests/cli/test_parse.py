"""Argument parsing, help texts, and how `main` turns failures into one line and an exit code."""

import argparse
import subprocess
import sys

import pytest

from shoal.cli import main as main_mod
from shoal.cli.commands import peers
from shoal.cli.main import command_parser, main, parse_args
from shoal.cli.refs import parse_ref
from shoal.errors import UnknownDataset, UsageError

COMMANDS = [
    "daemon", "status", "config", "id", "peers", "trust", "untrust", "share", "unshare", "watch", "unwatch", "watches",
    "ls", "log", "diff", "verify", "fetch", "subset", "pin", "sync", "subscribe", "unsubscribe", "subscriptions", "gc",
    "tui",
]


@pytest.mark.parametrize(
    "text, parts",
    [
        ("ds", ("ds", None, None)),
        ("ds@3", ("ds", "3", None)),
        ("ds:small", ("ds", None, "small")),
        ("ds@ab12cd:small", ("ds", "ab12cd", "small")),
    ],
)
def test_dataset_references(text, parts):
    ref = parse_ref(text)
    assert (ref.name, ref.version, ref.subset) == parts


@pytest.mark.parametrize("text", ["", "@3", "ds@", "ds:", "ds@:x", ":x"])
def test_bad_dataset_references(text):
    with pytest.raises(UsageError, match="is not NAME"):
        parse_ref(text)


def test_every_documented_command_exists():
    assert list(main_mod.COMMANDS) == COMMANDS


def described_options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from described_options(sub)
        elif action.option_strings or action.dest != "help":
            yield parser, action


@pytest.mark.parametrize("name", COMMANDS)
def test_help_describes_every_option_of_every_command(name, capsys):
    for parser, action in described_options(command_parser(name)):
        assert action.help and action.help != argparse.SUPPRESS, f"{parser.prog}: {action.dest} has no help"
        text = parser.format_help()
        for option in action.option_strings:
            assert option in text
    with pytest.raises(SystemExit) as exited:
        parse_args([name, "--help"])
    assert exited.value.code == 0
    assert f"usage: shoal {name}" in capsys.readouterr().out


def test_top_level_help_lists_commands_and_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n  {name} " in out
    assert "130 interrupted" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--home", "/h", "-v", "status"],
        ["status", "--home", "/h", "--verbose"],
        ["-v", "status", "--home", "/h"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv):
    args = parse_args(argv)
    assert (args.home, args.verbose, args.no_autostart) == ("/h", True, False)


def test_config_actions_keep_global_options_given_before_them():
    args = parse_args(["--home", "/h", "config", "set", "listen", "127.0.0.1:1"])
    assert (args.home, args.key, args.value) == ("/h", "listen", "127.0.0.1:1")
    assert parse_args(["config", "get", "--no-autostart"]).no_autostart is True


def test_repeatable_options_collect_every_value():
    args = parse_args(["trust", "ID", "--addr", "a:1", "--addr", "b:2"])
    assert args.addresses == ["a:1", "b:2"]
    args = parse_args(["fetch", "imagenet@3", "out", "--include", "*.csv", "--include", "train/", "--timeout", "9"])
    assert (args.spec, args.dest, args.include, args.timeout) == ("imagenet@3", "out", ["*.csv", "train/"], 9.0)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "a command is needed"),
        (["sahre"], "invalid choice: 'sahre'"),
        (["share"], "the following arguments are required: PATH"),
        (["fetch", "x", "--timeout", "-1"], "must be positive"),
        (["config", "get", "colour"], "invalid choice: 'colour'"),
        (["daemon", "restart"], "invalid choice: 'restart'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shoal: ") and fragment in err[0] and "--help" in err[0]


def test_a_fetch_spec_ending_in_at_is_a_usage_error(capsys):
    assert main(["--no-autostart", "fetch", "imagenet@"]) == 2
    assert "NAME[@VERSION]" in capsys.readouterr().err


def failing(exc: BaseException):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize(
    "exc, code, fragment",
    [
        (KeyboardInterrupt(), 130, "shoal: interrupted"),
        (UnknownDataset("no dataset named 'x'; see `shoal ls`"), 4, "shoal: no dataset named 'x'; see `shoal ls`"),
        (ZeroDivisionError("boom"), 1, "shoal: unexpected ZeroDivisionError: boom; rerun with --verbose"),
    ],
)
def test_failures_become_one_line_and_an_exit_code(monkeypatch, capsys, exc, code, fragment):
    monkeypatch.setattr(peers, "run_id", failing(exc))
    assert main(["id"]) == code
    err = capsys.readouterr().err
    assert err.strip() == fragment or err.strip().startswith(fragment)
    assert "Traceback" not in err


def test_verbose_adds_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(peers, "run_id", failing(ZeroDivisionError("boom")))
    assert main(["id", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("report it")


#: Modules that cost `shoal status` milliseconds (it must start within 2x a bare interpreter), or that only
#: some commands need: subprocess (daemon start/stop), TOML (pin, sync), shoal.daemon (daemon, config), textual.
HEAVY = ("dataclasses", "typing", "trio", "textual", "cryptography", "sqlite3", "tomllib", "subprocess", "rich",
         "shoal.daemon", "shoal.tui")


def loaded_by(statements: str) -> str:
    probe = f"import sys; {statements}; print([m for m in {HEAVY!r} if m in sys.modules])"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def test_the_command_line_loads_no_heavy_module_before_it_knows_the_command():
    assert loaded_by("import shoal.cli.main") == "[]"


@pytest.mark.parametrize("group", sorted({command.group for command in main_mod.COMMANDS.values()}))
def test_a_command_module_imports_what_only_some_commands_need_inside_them(group):
    # Parsing a command loads its group's module, so `shoal status` or `shoal ls` would pay for it.
    assert loaded_by(f"import shoal.cli.commands.{group}") == "[]"


def test_parsing_a_command_loads_only_its_groups_module():
    probe = (
        "import sys, shoal.cli.main as m; m.parse_args(['status'])\n"
        "print(sorted(n for n in sys.modules if n.startswith('shoal.cli.commands.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['shoal.cli.commands.daemon']"
