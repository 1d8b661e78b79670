"""Arguments several commands share: the global options, --json, and positive numbers."""

from __future__ import annotations

import argparse
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


def add_common_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
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


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """--json, which every listing or reporting command takes."""
    parser.add_argument("--json", action="store_true", help="print one JSON object (schema in the README)")


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


#: The argparse type of --limit.
positive_int = _positive(int, "a whole number", "limit")
#: The argparse type of --timeout.
positive_seconds = _positive(float, "a number of seconds", "timeout")
