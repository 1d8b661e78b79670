"""What `shoal tui` shows as it opens and while idle: the tab it opens on, the daemon's recent events,
rates that fall to 0, and the folder the fetch dialog proposes (against an in-memory control client)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Input, TabbedContent
from tui_fakes import NOW, FakeClient, cell, demo_client, local_dataset, logged, peer, remote_dataset, until, version

from shoal.client.aio import Connected, Disconnected
from shoal.tui.app import ShoalApp, make_app
from shoal.tui.rows import TransferTracker, existing_folder
from shoal.tui.widgets.modals import FetchDialog

pytestmark = pytest.mark.asyncio

SIZE = (120, 40)
IN = 5  # the peers table's column of bytes received


def active(app: ShoalApp) -> str:
    return app.query_one(TabbedContent).active


# --- the tab it opens on ----------------------------------------------------------------


async def test_opens_on_peers_while_no_peer_is_trusted() -> None:
    client = FakeClient([peer(4, state="pending")], [local_dataset("eval-suite", 2)])
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened)
        assert active(app) == "peers"
        assert app.focused is app.table("peers")


async def test_opens_on_transfers_when_one_already_runs() -> None:
    client = demo_client()
    # Running before the app connected: no event of it will come, only `status` lists it.
    client.transfers[9] = {"name": "speech-commands", "dest": "/scratch/sc", "phase": "data", "bytes_total": 400,
                           "bytes_done": 100, "rate": 50, "eta": 6.0, "peers": {}, "paused": False,
                           "bottleneck": "rate limit (sender)"}
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened)
        assert active(app) == "transfers"
        assert cell(app, "transfers", "9", 0) == "speech-commands"
        assert cell(app, "transfers", "9", 6) == "rate limit (sender)"


async def test_opens_on_datasets_with_trusted_peers_and_nothing_running() -> None:
    client = demo_client()
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened)
        assert active(app) == "datasets"
        # A transfer starting later does not move the user away from where they are.
        client.start_transfer(3, "eval-suite")
        await until(pilot, lambda: app.table("transfers").row_count == 1)
        assert active(app) == "datasets"


# --- the Events tab ----------------------------------------------------------------------


async def test_events_tab_shows_the_daemons_history_then_live_events_once_each() -> None:
    client = demo_client()
    gpu_a, stranger = client.peers[0]["peer_id"], peer(9)["peer_id"]
    # As the daemon's peer layer sends them: by id; the log names the peer as the Peers tab does.
    client.publish("peers", {"change": "online", "peer_id": gpu_a, "address": "10.0.0.2:7447"}, live=False,
                   when=NOW - 120)
    client.publish("peers", {"change": "catalog", "peer_id": gpu_a, "datasets": 3}, live=False)
    client.publish("peers", {"change": "pending", "peer_id": stranger, "addresses": []}, live=False)
    client.publish("peers", {"change": "offline", "peer_id": gpu_a, "reason": "connection lost"}, live=False)
    client.publish("datasets", {"name": "eval-suite", "version": version("eval-suite", 12)}, live=False)
    # Published between the app's subscribe and its `events` call: sent live, and in the history too.
    client.publish("watches", {"change": "added", "watch": {"name": "ckpt", "path": "/runs/ckpt"}})
    client.publish("transfers", {"id": 1, "event": "started", "name": "nas-dump", "dest": "/scratch/nas"})
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened and len(logged(app)) >= 6)
        client.publish("datasets", {"name": "tokenizer-corpus", "version": version("tokenizer-corpus", 4)})
        await until(pilot, lambda: len(logged(app)) >= 7)
        await pilot.pause(0.1)
        assert logged(app) == [
            "peer gpu-box-a joined",
            f"refused untrusted peer {stranger[:7]} (trust it on the Peers tab if it is yours)",
            "peer gpu-box-a left (connection lost)",
            "published eval-suite@12",
            "watching /runs/ckpt as ckpt",
            "fetching nas-dump into /scratch/nas",
            "published tokenizer-corpus@4",
        ]
        # History lines carry the time the daemon published them.
        assert app.events_log.lines[0].startswith(time.strftime("%H:%M:%S", time.localtime(NOW - 120)))


async def test_reconnecting_shows_only_what_is_new_and_all_of_a_restarted_daemons_history() -> None:
    client = demo_client()
    client.publish("datasets", {"name": "eval-suite", "version": version("eval-suite", 12)}, live=False)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened and len(logged(app)) == 1)
        client.push(Disconnected("the daemon closed the connection", 0.0))
        client.publish("datasets", {"name": "eval-suite", "version": version("eval-suite", 13)}, live=False)
        client.push(Connected())
        await until(pilot, lambda: len(logged(app)) == 2)
        # A new run of the daemon numbers its events from 1 again.
        client.push(Disconnected("the daemon closed the connection", 0.0))
        client.run, client.history, client._seq = "run-2", [], 0
        client.publish("daemon", {"state": "started"}, live=False)
        client.push(Connected())
        await until(pilot, lambda: len(logged(app)) == 3)
        await pilot.pause(0.1)
        assert logged(app) == ["published eval-suite@12", "published eval-suite@13", "daemon: started"]


# --- idle rates -------------------------------------------------------------------------


async def test_peer_rates_fall_to_zero_without_any_event_once_nothing_moves() -> None:
    client = demo_client()
    gpu = client.peers[0]
    gpu["rates"] = {"up": 0, "down": 1_800_000}
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.opened)
        await pilot.press("1")
        await until(pilot, lambda: cell(app, "peers", gpu["peer_id"], IN).endswith("1.8 MB/s"))
        gpu["rates"] = {"up": 0, "down": 0}  # what the daemon measures once the transfer is over
        await until(pilot, lambda: "/s" not in cell(app, "peers", gpu["peer_id"], IN), timeout=10)


async def test_a_paused_or_ended_transfer_shows_no_rate_and_an_ended_one_what_each_peer_sent() -> None:
    tracker = TransferTracker({"id": 1, "name": "x"})
    tracker.update({"phase": "data", "bytes_total": 100, "bytes_done": 10, "rate": 10,
                    "peers": {"P1": {"received": 10}}}, now=1.0)
    tracker.update({"phase": "data", "bytes_total": 100, "bytes_done": 60, "rate": 50, "eta": 0.8,
                    "peers": {"P1": {"received": 60}}}, now=2.0)
    assert tracker.row(str)[7] == "P1 50 B/s"
    # Paused: the daemon's average rate lags behind, but nothing new is asked for.
    tracker.update_state({"paused": True})
    assert tracker.row(str)[4:6] == ("-", "-")
    tracker.update_state({"paused": False})
    assert tracker.row(str)[4] == "50 B/s"
    tracker.finish({"bytes_received": 100, "bytes_reused": 0, "peers": {"P1": 100}})
    row = tracker.row(str)
    assert (row[1], row[4], row[5], row[7]) == ("done", "-", "-", "P1 100 B")


async def test_a_configured_rate_cap_stands_out_like_the_other_limits_of_a_machine() -> None:
    styles = {}
    for bottleneck in ("disk write", "rate limit (sender)", "rate limit (receiver)", "network"):
        shown = TransferTracker({"id": 1, "name": "x", "bottleneck": bottleneck}).row(str)[6]
        assert isinstance(shown, Text) and shown.plain == bottleneck
        styles[bottleneck] = shown.style
    assert styles["rate limit (sender)"] == styles["rate limit (receiver)"] == styles["disk write"] != styles["network"]


# --- the fetch dialog's folder ------------------------------------------------------------


async def proposed(pilot: Pilot[int], app: ShoalApp, name: str) -> str:
    await pilot.press("2")
    app.table("datasets").move_cursor(row=app.table("datasets").get_row_index(name))
    await pilot.press("f")
    await until(pilot, lambda: isinstance(app.screen, FetchDialog))
    dest = app.screen.query_one("#dest", Input).value
    await pilot.press("escape")
    await until(pilot, lambda: not isinstance(app.screen, FetchDialog))
    return dest


async def test_fetch_proposes_the_folder_the_dataset_already_lives_in() -> None:
    client = demo_client()
    client.remote += [remote_dataset("weather", 1, client.peers[1]), remote_dataset("traces", 2, client.peers[1])]
    # Before the app opened: only the daemon's history tells.
    client.publish("transfers", {"id": 3, "event": "done", "version": version("traces", 2), "dest": "/scratch/tr"},
                   live=False)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("datasets").row_count == 7 and app.table("subscriptions").row_count == 4)
        assert await proposed(pilot, app, "imagenet-subset") == "/data/imagenet-subset"  # shared from there
        assert await proposed(pilot, app, "robot-trajectories") == "/data/robot-trajectories"  # a subscription's
        assert await proposed(pilot, app, "weather") == str(Path.cwd() / "weather")  # nowhere here
        assert await proposed(pilot, app, "traces") == "/scratch/tr"
        # Fetched in part (--include): `ls` does not list it, the fetch's done event said where it went.
        done = {"id": 4, "event": "done", "version": version("weather", 1), "dest": "/scratch/weather"}
        client.publish("transfers", done)
        await until(pilot, lambda: "weather" in app.fetched)
        assert await proposed(pilot, app, "weather") == "/scratch/weather"


async def test_a_fetched_copy_is_found_whole_and_newest_first() -> None:
    def checkout(path: str, seq: int, whole: bool) -> dict:
        return {"path": path, "version": version("corpus", seq), "whole": whole}

    fetched = {**local_dataset("corpus", 3), "path": None,
               "checkouts": [checkout("/a", 3, False), checkout("/b", 1, True), checkout("/c", 2, True)]}
    assert existing_folder("corpus", [fetched], {"corpus": "/d"}, []) == "/c"
    assert existing_folder("other", [fetched], {}, [{"name": "other", "dest": "/sub/other"}]) == "/sub/other"
    assert existing_folder("other", [fetched], {}, []) is None
