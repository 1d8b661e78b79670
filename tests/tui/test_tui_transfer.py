"""B's TUI against two real daemons: trust A through the UI, browse and fetch A's dataset, pause and resume
it with `p`, watch it to the end.

Set SHOAL_TUI_SCREENSHOT=docs/tui.svg to also save the Transfers tab mid-transfer,
paused, as the screenshot in the docs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Input
from tui_daemons import Daemon, cell, files_of, has_row, running_pair, scratch, trust_each_other, until  # noqa: F401 - fixtures
from tui_fakes import logged

from shoal.client.aio import ControlClient
from shoal.home import running_pid, socket_path
from shoal.tui.app import make_app
from shoal.tui.widgets.modals import CancelTransferDialog, FetchDialog, ShareDialog, TrustDialog, UntrustDialog
from shoal.tui.widgets.screens import BrowseScreen

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


SIZE = (120, 32)
DATASET = "imagenet-mini"
FILE_SIZE = 25 * 1024 * 1024
FILES = 8  # 200 MiB of random data
#: What A serves B at most: the fetch takes about four seconds, so it is surely caught running
#: (uncapped, a loaded CI run once missed it: the whole fetch can fit between two status polls).
SERVE_CAP = 50 * 1000 * 1000
BOTTLENECK = 6  # the transfers table's column
MEASURED = {"waiting for peers", "network", "hashing", "disk write", "disk read"}


async def transfer_state(client: ControlClient, tid: int) -> dict:
    """B's transfer as the daemon reports it in `status`, over the control socket."""
    running = {t["id"]: t for t in (await client.call("status"))["transfers"]}
    assert tid in running, f"transfer {tid} is no longer running in B: {sorted(running)}"
    return running[tid]


async def daemon_says(client: ControlClient, tid: int, condition: Callable[[dict], bool], what: str) -> dict:
    deadline = time.monotonic() + 10
    while not condition(state := await transfer_state(client, tid)):
        assert time.monotonic() < deadline, f"B's daemon never reported the transfer {what}: {state}"
        await asyncio.sleep(0.05)
    return state


@pytest.fixture
def pair() -> Iterator[tuple[Daemon, Daemon]]:
    with running_pair(f"\n[bandwidth]\nper_peer_limit = {SERVE_CAP}\n") as daemons:
        yield daemons


async def test_trust_then_fetch_through_the_ui(pair: tuple[Daemon, Daemon], scratch: Path) -> None:
    a, b = pair
    data = scratch / DATASET
    (data / "train").mkdir(parents=True)
    for i in range(FILES):
        (data / "train" / f"shard-{i:02}.bin").write_bytes(os.urandom(FILE_SIZE))
    (data / "labels.csv").write_text("id,label\n1,cat\n2,dog\n")
    id_a, id_b = a.json("id")["peer_id"], b.json("id")["peer_id"]
    listen_b = b.json("status")["listen"]
    a.run("share", str(data), "-m", "first")

    client = ControlClient(socket_path(b.home), min_backoff=0.05, max_backoff=0.2)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connected, "the connection to B")

        # A dials B, which refuses it and shows it as pending, through the peers event.
        await asyncio.to_thread(a.run, "trust", id_b, "--name", "laptop", "--addr", listen_b)
        await until(pilot, lambda: has_row(app, "peers", id_a), "A as a pending peer")
        assert cell(app, "peers", id_a, 3) == "pending"
        await pilot.press("1")
        app.table("peers").move_cursor(row=app.table("peers").get_row_index(id_a))
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, TrustDialog), "the trust dialog")
        app.screen.query_one("#name", Input).value = "gpu-box"
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, TrustDialog), "the trust dialog closing")
        await until(pilot, lambda: cell(app, "peers", id_a, 3) in ("trusted", "offline", "online"), "A trusted")
        peers = {peer["peer_id"]: peer for peer in (await client.call("peers"))["peers"]}
        assert peers[id_a]["trusted"] is True and peers[id_a]["name"] == "gpu-box"

        # A's dialler may be backing off after B's refusals; trusting again wakes it.
        await asyncio.to_thread(a.run, "trust", id_b, "--addr", listen_b)
        await until(pilot, lambda: cell(app, "peers", id_a, 3) == "online", "A online")
        await until(pilot, lambda: has_row(app, "datasets", DATASET), "A's dataset")
        assert app.table("datasets").get_row(DATASET)[:3] == [DATASET, "remote", "@1"]
        assert cell(app, "datasets", DATASET, 5) == "gpu-box"

        dest = scratch / "copy"
        await pilot.press("2")
        app.table("datasets").move_cursor(row=app.table("datasets").get_row_index(DATASET))

        # Browse it before fetching: only tree objects move, the fetch below still moves every byte.
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BrowseScreen) and app.screen.shown is not None,
                    "A's dataset browsed from B")
        browse = app.screen
        assert isinstance(browse, BrowseScreen) and browse.error is None
        table = browse.table
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["labels.csv", "train/"]
        assert browse.shown is not None and browse.shown["seq"] == 1
        table.move_cursor(row=1)
        await pilot.press("enter")
        await until(pilot, lambda: browse.path == "train" and not browse.loading, "train/ browsed")
        assert table.row_count == FILES + 1 and str(table.get_row_at(1)[0]) == "shard-00.bin"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, BrowseScreen), "the browse screen closing")

        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FetchDialog), "the fetch dialog")
        app.screen.query_one("#dest", Input).value = str(dest)
        # A is frozen once a fifth has arrived (as in tests/cli/test_faults.py), so the UI
        # surely shows the fetch in progress and the keys act on a running fetch.
        pid_a = running_pid(a.home)
        assert pid_a is not None
        await pilot.click("#ok")
        await asyncio.to_thread(_freeze_when_received, b.home, pid_a, 0.2)
        try:
            await until(pilot, lambda: not isinstance(app.screen, FetchDialog), "the fetch dialog closing")
            await pilot.press("3")

            transfers = app.table("transfers")
            await until(pilot, lambda: transfers.row_count == 1, "the transfer")
            key = next(iter(transfers._shown))
            tracker = app.transfers[key]
            await until(pilot, lambda: 0 < tracker.bytes_done < tracker.bytes_total, "the transfer in progress")
            assert cell(app, "transfers", key, 0) == DATASET
            assert tracker.bytes_total >= FILES * FILE_SIZE
            assert "%" in cell(app, "transfers", key, 2) and " / " in cell(app, "transfers", key, 3)
            assert cell(app, "transfers", key, BOTTLENECK) in MEASURED

            # Pause and resume with `p`.
            assert tracker.running and tracker.id is not None
            await pilot.press("p")
            await until(pilot, lambda: cell(app, "transfers", key, BOTTLENECK) == "paused", "the transfer paused")
            assert (await transfer_state(client, tracker.id))["paused"] is True
            # The daemon's next measurement names it too.
            await daemon_says(client, tracker.id, lambda t: t["bottleneck"] == "paused", "bottleneck paused")
            await until(pilot, lambda: tracker.bottleneck == "paused", "the measured bottleneck paused")
            assert cell(app, "transfers", key, BOTTLENECK) == "paused"
            assert f"paused the fetch of {DATASET}" in logged(app)
            if screenshot := os.environ.get("SHOAL_TUI_SCREENSHOT"):
                # Mid-transfer and paused: the new column and keys are in the picture.
                await pilot.pause()
                out = Path(screenshot).resolve()
                app.save_screenshot(out.name, path=str(out.parent))
            await pilot.press("p")
            await until(pilot, lambda: cell(app, "transfers", key, BOTTLENECK) != "paused", "the transfer resumed")
            assert (await transfer_state(client, tracker.id))["paused"] is False
            assert f"resumed the fetch of {DATASET}" in logged(app)
        finally:
            os.kill(pid_a, signal.SIGCONT)
        await until(pilot, lambda: cell(app, "transfers", key, 1) == "done", "the transfer done", timeout=30)
        assert "100%" in cell(app, "transfers", key, 2)
        log = logged(app)
        assert f"fetched {DATASET} into {dest}" in log
        assert files_of(dest) == files_of(data)
        # B now holds it too; the datasets table follows.
        await until(pilot, lambda: cell(app, "datasets", DATASET, 1) == "local+remote", "B's own copy")


async def test_share_cancel_and_untrust_through_the_ui(pair: tuple[Daemon, Daemon], scratch: Path) -> None:
    """The remaining actions against real daemons: share a folder on B, cancel a fetch, untrust a peer."""
    a, b = pair
    data = scratch / "ckpt"
    data.mkdir()
    for i in range(FILES):
        (data / f"part-{i:02}.bin").write_bytes(os.urandom(FILE_SIZE))
    mine = scratch / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("check the labels\n")
    id_a = a.json("id")["peer_id"]
    trust_each_other(a, b)
    a.run("share", str(data))

    client = ControlClient(socket_path(b.home), min_backoff=0.05, max_backoff=0.2)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connected, "the connection to B")

        # Share a folder of B's own.
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ShareDialog), "the share dialog")
        app.screen.query_one("#path", Input).value = str(mine)
        app.screen.query_one("#message", Input).value = "from the ui"
        await pilot.click("#ok")
        await until(pilot, lambda: has_row(app, "datasets", "notes"), "the shared dataset listed")
        log = await client.call("log", {"name": "notes"})
        assert [v["message"] for v in log["versions"]] == ["from the ui"]

        # Start a fetch of A's dataset, freeze A mid-way and cancel it with `c`.
        await until(pilot, lambda: has_row(app, "datasets", "ckpt"), "A's dataset")
        await pilot.press("2")
        app.table("datasets").move_cursor(row=app.table("datasets").get_row_index("ckpt"))
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FetchDialog), "the fetch dialog")
        dest = scratch / "copy"
        app.screen.query_one("#dest", Input).value = str(dest)
        pid_a = running_pid(a.home)
        assert pid_a is not None
        await pilot.click("#ok")
        # Freeze A once a fifth has arrived, so the fetch is certainly still running when `c` is pressed.
        await asyncio.to_thread(_freeze_when_received, b.home, pid_a, 0.2)
        try:
            await pilot.press("3")
            transfers = app.table("transfers")
            await until(pilot, lambda: transfers.row_count == 1, "the transfer")
            key = next(iter(transfers._shown))
            tracker = app.transfers[key]
            await until(pilot, lambda: 0 < tracker.bytes_done < tracker.bytes_total, "the transfer in progress")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CancelTransferDialog), "the cancel dialog")
            await pilot.press("y")
            await until(pilot, lambda: not tracker.running, "the transfer cancelled")
            assert (await client.call("status"))["transfers"] == []
            assert "cancelled" in " ".join(logged(app))
        finally:
            os.kill(pid_a, signal.SIGCONT)
        assert not any(p.is_file() for p in dest.glob("part-*.bin") if p.stat().st_size != FILE_SIZE)

        # Untrust A with `u`: B drops the session and the peer is no longer trusted.
        await pilot.press("1")
        app.table("peers").move_cursor(row=app.table("peers").get_row_index(id_a))
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, UntrustDialog), "the untrust dialog")
        await pilot.click("#ok")
        await until(pilot, lambda: not isinstance(app.screen, UntrustDialog), "the untrust dialog closing")

        async def trusted() -> bool:
            peers = (await client.call("peers"))["peers"]
            return any(p["peer_id"] == id_a and p["trusted"] for p in peers)

        deadline = time.monotonic() + 10
        while await trusted():
            assert time.monotonic() < deadline, "A still trusted after untrust from the UI"
            await pilot.pause(0.1)


def _freeze_when_received(home: Path, pid: int, share: float) -> None:
    """SIGSTOP `pid` once the daemon at `home` has received `share` of its running fetch."""
    from shoal.client.blocking import ControlClient as BlockingClient

    deadline = time.monotonic() + 30
    seen = None
    with BlockingClient.connect(socket_path(home)) as client:
        while time.monotonic() < deadline:
            running = client.call("status", timeout=10)["transfers"]
            if not running and seen is not None:
                raise AssertionError(f"the fetch ended before {share:.0%} of it was seen arriving: {seen}")
            if running:
                seen = running[0]
                if seen["bytes_total"] and seen["bytes_received"] >= share * seen["bytes_total"]:
                    os.kill(pid, signal.SIGSTOP)
                    return
    raise AssertionError(f"the fetch never got going: {seen}")
