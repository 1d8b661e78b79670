"""SVG snapshots of the TUI's main screens over fixed demo data (pytest-textual-snapshot).

After an intended change of the UI, review and rewrite the baselines with
`.venv/bin/python -m pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from textual.pilot import Pilot
from tui_fakes import NOW, FakeClient, demo_client, version

from shoal.tui.app import ShoalApp, make_app

SIZE = (120, 32)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times are shown in local time: pin the zone so the baselines hold on any machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def loaded(pilot: Pilot[int]) -> None:
    app = pilot.app
    assert isinstance(app, ShoalApp)
    deadline = time.monotonic() + 5
    while not app.opened or app.table("datasets").row_count < 5 or app.table("subscriptions").row_count < 4:
        assert time.monotonic() < deadline, "the demo data never loaded"
        await pilot.pause(0.01)


def demo_app() -> tuple[ShoalApp, FakeClient]:
    client = demo_client()
    return make_app(client), client


def test_peers_tab(snap_compare) -> None:
    app, _ = demo_app()
    assert snap_compare(app, press=["1"], terminal_size=SIZE, run_before=loaded)


def test_datasets_tab(snap_compare) -> None:
    app, _ = demo_app()
    assert snap_compare(app, press=["2", "down"], terminal_size=SIZE, run_before=loaded)


def test_transfers_tab_with_a_transfer_in_progress(snap_compare) -> None:
    app, client = demo_app()
    gpu_a, nas = (client.peers[i]["peer_id"] for i in (0, 4))

    async def transferring(pilot: Pilot[int]) -> None:
        await loaded(pilot)
        client.event("transfers", id=1, event="started", name="robot-trajectories", dest="/scratch/robot-trajectories")
        client.event("transfers", id=1, event="progress", name="robot-trajectories", phase="chunks",
                     bytes_total=48_000_000_000, bytes_done=19_400_000_000, rate=230_000_000, eta=124.0,
                     paused=False, bottleneck="rate limit (receiver)",
                     peers={nas: {"received": 12_000_000_000, "dropped": None},
                            gpu_a: {"received": 7_400_000_000, "dropped": None}})
        while "1" not in app.transfers or app.transfers["1"].phase != "chunks":
            await pilot.pause(0.01)
        # Per-peer rates come from the time between two reports; fix them rather than sleep.
        tracker = app.transfers["1"]
        tracker.peer_rates = {nas: 150_000_000.0, gpu_a: 80_000_000.0}
        app.table("transfers").upsert("1", tracker.row(app._peer_label))

    assert snap_compare(app, press=["3"], terminal_size=SIZE, run_before=transferring)


def test_events_tab_with_the_daemons_history(snap_compare) -> None:
    client = demo_client()
    gpu_a = client.peers[0]["peer_id"]
    client.publish("peers", {"change": "online", "peer_id": gpu_a, "address": "10.0.0.2:7447"}, live=False,
                   when=NOW - 3_600)
    client.publish("datasets", {"name": "eval-suite", "version": version("eval-suite", 12)}, live=False, when=NOW - 1_800)
    client.publish("transfers", {"id": 1, "event": "started", "name": "robot-trajectories",
                                 "dest": "/scratch/robot-trajectories"}, live=False, when=NOW - 600)
    client.publish("transfers", {"id": 1, "event": "done", "name": "robot-trajectories",
                                 "dest": "/scratch/robot-trajectories"}, live=False, when=NOW - 60)
    client.publish("watches", {"change": "state", "watch": {"name": "notes", "state": "error",
                                                             "detail": "/home/mira/notes: No such file or directory"}},
                   live=False, when=NOW - 5)
    assert snap_compare(make_app(client), press=["4"], terminal_size=SIZE, run_before=loaded)


def test_watches_tab(snap_compare) -> None:
    app, _ = demo_app()
    assert snap_compare(app, press=["5"], terminal_size=SIZE, run_before=loaded)


def test_subscriptions_tab(snap_compare) -> None:
    app, _ = demo_app()
    assert snap_compare(app, press=["6"], terminal_size=SIZE, run_before=loaded)


def test_help_screen(snap_compare) -> None:
    app, _ = demo_app()
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE, run_before=loaded)
