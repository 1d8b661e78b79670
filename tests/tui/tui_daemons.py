"""Real daemons for the TUI's tests: each a home of its own, driven with the `shoal` command as a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from textual.pilot import Pilot

from shoal.home import running_pid
from shoal.tui.app import ShoalApp


class Daemon:
    """One home and its daemon, driven with the `shoal` command as a user would."""

    def __init__(self, config: str = "") -> None:
        """`config`: more lines of config.toml, after the loopback-only settings."""
        # Under /tmp, not pytest's tmp_path: Unix socket paths are limited to 107 bytes.
        self.home = Path(tempfile.mkdtemp(prefix="shoal-tui-", dir="/tmp"))
        (self.home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n' + config)

    def run(self, *args: str) -> str:
        process = subprocess.run(
            [sys.executable, "-m", "shoal", "--home", str(self.home), *args],
            capture_output=True, text=True, timeout=60,
            env={key: value for key, value in os.environ.items() if key != "SHOAL_NO_AUTOSTART"},
        )
        assert process.returncode == 0, process.stderr
        return process.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json"))

    def remove(self) -> None:
        subprocess.run([sys.executable, "-m", "shoal", "--home", str(self.home), "daemon", "stop"],
                       capture_output=True, timeout=30)
        pid = running_pid(self.home)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)


def trust_each_other(a: Daemon, b: Daemon) -> None:
    """A and B trust each other (B names A gpu-box) and know where the other listens."""
    id_a, id_b = a.json("id")["peer_id"], b.json("id")["peer_id"]
    a.run("trust", id_b, "--addr", b.json("status")["listen"])
    b.run("trust", id_a, "--name", "gpu-box", "--addr", a.json("status")["listen"])


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".shoal-partial" not in p.parts
    }


def cell(app: ShoalApp, table: str, key: str, column: int) -> str:
    return str(app.table(table).get_row(key)[column])


def has_row(app: ShoalApp, table: str, key: str) -> bool:
    return key in app.table(table)._shown


async def until(pilot: Pilot[int], condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"the UI never showed {what}"
        await pilot.pause(0.02)


def notices(app: ShoalApp) -> list[str]:
    """The messages of the notifications on screen now."""
    return [notification.message for notification in app._notifications]


@contextmanager
def running_pair(config_a: str = "") -> Iterator[tuple[Daemon, Daemon]]:
    """Two started daemons, A with `config_a` in its config.toml; removed after."""
    daemons = (Daemon(config_a), Daemon())
    try:
        for daemon in daemons:
            daemon.run("daemon", "start")
        yield daemons
    finally:
        for daemon in daemons:
            daemon.remove()


@pytest.fixture
def pair() -> Iterator[tuple[Daemon, Daemon]]:
    with running_pair() as daemons:
        yield daemons


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="shoal-tui-data-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)
