"""Fixtures of the TUI's tests against real daemons."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_daemons import Daemon


@pytest.fixture
def pair() -> Iterator[tuple[Daemon, Daemon]]:
    daemons = (Daemon(), Daemon())
    try:
        for daemon in daemons:
            daemon.run("daemon", "start")
        yield daemons
    finally:
        for daemon in daemons:
            daemon.remove()


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="shoal-tui-data-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)
