"""Fixtures for driving the real `shoal` command against real daemons in temporary homes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shoal.home import running_pid


class ShoalCli:
    """Runs `python -m shoal --home HOME ...` as a user would, one process per command."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        full_env = {key: value for key, value in os.environ.items() if key != "SHOAL_NO_AUTOSTART"}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "shoal", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
        )

    def json(self, *args: str, cwd: Path | None = None) -> dict:
        """The one JSON object a successful `shoal ... --json` printed, with nothing on stderr."""
        process = self(*args, "--json", cwd=cwd)
        assert process.returncode == 0, process.stderr
        assert process.stderr == "", process.stderr
        return json.loads(process.stdout)


def make_home(config: str = "") -> Path:
    """A fresh home whose daemon, even when autostarted, stays on loopback and quiet on the LAN.

    `config` is appended to its config.toml.
    """
    # Under /tmp, not pytest's tmp_path: Unix socket paths are limited to 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="shoal-cli-", dir="/tmp"))
    (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n' + config)
    return home


def remove_home(home: Path) -> None:
    pid = running_pid(home)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def home():
    path = make_home()
    yield path
    remove_home(path)


@pytest.fixture
def shoal(home) -> ShoalCli:
    return ShoalCli(home)


@contextmanager
def running_daemon(config: str = "") -> Iterator[ShoalCli]:
    """A `shoal` bound to a fresh home whose daemon runs until the block ends."""
    home = make_home(config)
    cli = ShoalCli(home)
    try:
        started = cli("daemon", "start")
        assert started.returncode == 0, started.stderr
        yield cli
    finally:
        cli("daemon", "stop")
        remove_home(home)


@pytest.fixture(scope="module")
def running():
    """A `shoal` bound to a home whose daemon runs for the whole test module."""
    with running_daemon() as cli:
        yield cli
