"""The TUI against a real daemon process: shows its datasets, notices it stop, recovers when it returns."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from shoal.client.aio import ControlClient
from shoal.home import socket_path
from shoal.tui.app import make_app

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


@pytest.fixture
def home() -> Iterator[Path]:
    # Unix socket paths are short; pytest's tmp_path can exceed the limit.
    root = Path(tempfile.mkdtemp(prefix="shoal-tui-", dir="/tmp"))
    (root / "data").mkdir()
    (root / "data" / "labels.csv").write_text("id,label\n1,cat\n")
    yield root / "home"
    shutil.rmtree(root, ignore_errors=True)


def start_daemon(home: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "shoal", "daemon", "--home", str(home), "--listen", "127.0.0.1:0", "--no-discovery"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.terminate()
    daemon.wait(10)


async def until(pilot: Pilot[int], condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the UI never reached the expected state"
        await pilot.pause(0.02)


async def test_follows_a_real_daemon_through_a_restart(home: Path) -> None:
    daemon = start_daemon(home)
    try:
        client = ControlClient(socket_path(home), min_backoff=0.05, max_backoff=0.2)
        app = make_app(client)
        async with app.run_test(size=(120, 40)) as pilot:
            status = app.query_one("#status", Static)
            await until(pilot, lambda: app.connected)
            await client.call("share", {"path": str(home.parent / "data"), "name": "labels"})
            # The datasets event, not a poll, brings the new dataset into the table.
            await until(pilot, lambda: app.table("datasets").row_count == 1)
            assert app.table("datasets").get_row("labels")[:3] == ["labels", "local", "@1"]

            stop(daemon)
            await until(pilot, lambda: status.has_class("down"))
            assert "daemon not running — retrying" in str(status.render())

            daemon = start_daemon(home)
            await until(pilot, lambda: not status.has_class("down"))
            assert "connected" in str(status.render())
            assert app.table("datasets").row_count == 1
    finally:
        stop(daemon)
