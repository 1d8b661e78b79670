"""A command's round trip: connect to the daemon, call one method, print the answer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from shoal.cli import render
from shoal.cli.connect import autostart_enabled, connect
from shoal.cli.progress import open_progress
from shoal.client.blocking import ControlClient
from shoal.home import resolve_home

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any

#: Requests that should answer at once get this long before the CLI gives up.
QUICK_TIMEOUT = 30.0
#: Extra time the CLI allows beyond a resolve's or diff's own --timeout, so the daemon reports it first.
FETCH_TIMEOUT_MARGIN = 10.0


def client_timeout(timeout: float | None) -> float | None:
    """The CLI's deadline for a request the daemon bounds by `timeout` (None: no deadline)."""
    return None if timeout is None else timeout + FETCH_TIMEOUT_MARGIN


def call(
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float | None = QUICK_TIMEOUT,
) -> dict[str, Any]:
    """`method`'s result from the daemon of --home, started first if needed and allowed."""
    with _client(args) as client:
        return client.call(method, params, timeout=timeout)


def call_with_progress(args: argparse.Namespace, method: str, params: dict[str, Any], label: str) -> dict[str, Any]:
    """As `call`, showing progress on stderr unless --json, and with no deadline of its own.

    Share and fetch take as long as their data does; the daemon bounds each wait for a peer.
    """
    with _client(args) as client:
        if args.json:
            return client.call(method, params, timeout=None)
        view = open_progress(label)
        try:
            return client.call(method, params, on_progress=view.update, timeout=None)
        finally:
            view.close()


def warn(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The result's warnings on stderr; --json output carries them in the object instead."""
    if not args.json:
        for warning in result["warnings"]:
            print(f"shoal: warning: {warning}", file=sys.stderr)


def print_result(args: argparse.Namespace, result: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    """`result` as one JSON object with --json, else as `human` renders it."""
    if args.json:
        render.print_json(result)
    else:
        print(human(result))


def _client(args: argparse.Namespace) -> ControlClient:
    return connect(resolve_home(args.home), autostart=autostart_enabled(args.no_autostart))
