"""The TUI opening on real daemons: the tab it opens on, the Events tab's history, and a capped fetch's
peer rate falling to 0 once it is over."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_daemons import Daemon, cell, has_row, pair, scratch, trust_each_other, until  # noqa: F401 - fixtures
from tui_fakes import logged

from shoal.client.aio import ControlClient
from shoal.home import socket_path
from shoal.tui.app import ShoalApp, make_app

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SIZE = (120, 32)
IN = 5  # the peers table's column of bytes received
#: A's upload cap, and what it shares: a fetch of about four seconds, long enough to open the UI during it.
CAP = 1_000_000
DATA = 4 * CAP


def connect(daemon: Daemon) -> ShoalApp:
    return make_app(ControlClient(socket_path(daemon.home), min_backoff=0.05, max_backoff=0.2))


def active(app: ShoalApp) -> str:
    return app.tabs.active


@pytest.fixture
def lone() -> Iterator[Daemon]:
    daemon = Daemon()
    try:
        daemon.run("daemon", "start")
        yield daemon
    finally:
        daemon.remove()


async def test_a_new_daemon_opens_on_peers_with_its_recent_events(lone: Daemon, scratch: Path) -> None:
    for name in ("labels", "images"):
        (scratch / name).mkdir()
        (scratch / name / "a.txt").write_text(name)
        lone.run("share", str(scratch / name))

    app = connect(lone)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened, "the first view")
        assert active(app) == "peers"  # no peer is trusted yet: nothing can be fetched before one is
        await until(pilot, lambda: "published images@1" in logged(app), "the history")
        (scratch / "labels" / "b.txt").write_text("more")
        await asyncio.to_thread(lone.run, "share", str(scratch / "labels"))
        await until(pilot, lambda: "published labels@2" in logged(app), "the live event")
        await pilot.pause(0.3)
        lines = logged(app)
        assert [line for line in lines if line.startswith("published")] == [
            "published labels@1", "published images@1", "published labels@2",
        ]
        history = await app.client.call("events")
        assert [e["data"]["version"]["seq"] for e in history["events"] if e["topic"] == "datasets"] == [1, 1, 2]
        seqs = [e["seq"] for e in history["events"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def start_fetch(daemon: Daemon, name: str, dest: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "shoal", "--home", str(daemon.home), "fetch", name, str(dest)]
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_NO_AUTOSTART"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_running(daemon: Daemon) -> None:
    deadline = time.monotonic() + 30
    while not daemon.json("status")["transfers"]:
        assert time.monotonic() < deadline, "the fetch never started"
        time.sleep(0.05)


async def test_opens_on_datasets_then_on_a_running_fetch_whose_rate_falls_to_zero(scratch: Path) -> None:
    a, b = Daemon(f'\n[bandwidth]\nglobal_limit = {CAP}\n'), Daemon()
    fetch = None
    try:
        for daemon in (a, b):
            daemon.run("daemon", "start")
        (scratch / "weights").mkdir()
        (scratch / "weights" / "model.bin").write_bytes(os.urandom(DATA))
        a.run("share", str(scratch / "weights"))
        trust_each_other(a, b)
        id_a = a.json("id")["peer_id"]

        app = connect(b)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.opened, "the first view")
            assert active(app) == "datasets"  # a trusted peer, nothing running
            await until(pilot, lambda: has_row(app, "datasets", "weights"), "A's dataset", timeout=30)
            # B named A gpu-box; from the history, or live if the session opened after the app did.
            await until(pilot, lambda: "peer gpu-box joined" in logged(app), "A joining, in the history")

        fetch = start_fetch(b, "weights", scratch / "copy")
        await asyncio.to_thread(wait_running, b)
        app = connect(b)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.opened, "the first view")
            assert active(app) == "transfers"
            assert cell(app, "transfers", next(iter(app.transfers)), 0) == "weights"
            await pilot.press("1")
            await until(pilot, lambda: cell(app, "peers", id_a, IN).endswith("/s"), "A's rate while it sends")
            await until(pilot, lambda: any(t.phase == "done" for t in app.transfers.values()), "the fetch done", 60)
            # Nothing moves any more: the rate leaves the cell, with no event to say so, and
            # the total received stays (a refresh from before the last bytes shows neither).
            await until(pilot, lambda: cell(app, "peers", id_a, IN).endswith("MB"), "A's rate at 0", timeout=15)
        assert fetch.wait(30) == 0, fetch.stderr.read() if fetch.stderr else ""
    finally:
        if fetch is not None and fetch.poll() is None:
            fetch.kill()
        for daemon in (a, b):
            daemon.remove()
