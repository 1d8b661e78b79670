"""The Watches and Subscriptions tabs against real daemons: watch a folder and see it shared again when it
changes, subscribe B to A's dataset and see it follow A's new version, remove both, and the errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input
from tui_daemons import Daemon, cell, files_of, has_row, notices, pair, scratch, trust_each_other, until  # noqa: F401 - fixtures
from tui_fakes import logged

from shoal.client.aio import ControlClient
from shoal.home import socket_path
from shoal.tui.app import ShoalApp, make_app
from shoal.tui.widgets.modals import ConfirmDialog, SubscribeDialog, WatchDialog

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


SIZE = (120, 32)
STATE, VERSION = 2, 3  # the columns of both tables: state, then pending (watches) or what DEST holds


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    # Half a second of quiet, not two, before a watch shares a change: the test waits less.
    one = Daemon("[watch]\nquiet = 0.5\n")
    try:
        one.run("daemon", "start")
        yield one
    finally:
        one.remove()


def connect(daemon: Daemon) -> tuple[ShoalApp, ControlClient]:
    client = ControlClient(socket_path(daemon.home), min_backoff=0.05, max_backoff=0.2)
    return make_app(client), client


async def fill_dialog(pilot: Pilot[int], dialog: type, **fields: str) -> None:
    """Wait for `dialog`, type `fields` into its inputs and confirm it."""
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, dialog), f"the {dialog.__name__}")
    for field, value in fields.items():
        app.screen.query_one(f"#{field}", Input).value = value
    await pilot.click("#ok")
    await until(pilot, lambda: not isinstance(app.screen, dialog), f"the {dialog.__name__} closing")


async def remove_selected(pilot: Pilot[int], table: str, key: str) -> None:
    """Select `key` on `table`'s tab, press x and answer yes."""
    app = pilot.app
    assert isinstance(app, ShoalApp)
    app.table(table).move_cursor(row=app.table(table).get_row_index(key))
    await pilot.press("x")
    await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
    await pilot.press("y")
    await until(pilot, lambda: not has_row(app, table, key), f"{key} gone from {table}")


async def test_watch_a_folder_through_the_ui(daemon: Daemon, scratch: Path) -> None:
    data = scratch / "runs"
    data.mkdir()
    (data / "step-1.ckpt").write_bytes(b"weights 1")
    app, client = connect(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connected, "the connection")
        await pilot.press("5", "w")
        await fill_dialog(pilot, WatchDialog, path=str(data), name="ckpt")
        await until(pilot, lambda: has_row(app, "watches", "ckpt") and cell(app, "watches", "ckpt", STATE) == "idle",
                    "the watch idle")
        assert cell(app, "watches", "ckpt", 1) == str(data)
        await until(pilot, lambda: has_row(app, "datasets", "ckpt"), "the watched folder's dataset")
        assert cell(app, "datasets", "ckpt", 2) == "@1"
        assert f"watching {data} as ckpt" in logged(app)

        # A change is shared once it settles: the watch passes through settling and the dataset gets @2.
        (data / "step-2.ckpt").write_bytes(b"weights 2")
        await until(pilot, lambda: cell(app, "watches", "ckpt", STATE) != "idle", "the watch noticing the change")
        await until(pilot, lambda: cell(app, "datasets", "ckpt", 2) == "@2", "the change shared as @2")
        await until(pilot, lambda: cell(app, "watches", "ckpt", STATE) == "idle", "the watch idle again")
        log = await client.call("log", {"name": "ckpt"})
        assert log["versions"][0]["message"] == "watch: 1 file changed (step-2.ckpt)"

        # A folder that does not exist: the daemon refuses, the UI says why, no row appears.
        await pilot.press("w")
        await fill_dialog(pilot, WatchDialog, path=str(scratch / "missing"))
        await until(pilot, lambda: any(n.startswith("watch failed: ") for n in notices(app)), "the error")
        assert app.table("watches").row_count == 1

        await remove_selected(pilot, "watches", "ckpt")
        assert (await client.call("watches"))["watches"] == []
        assert "stopped watching ckpt" in logged(app)
        assert has_row(app, "datasets", "ckpt")  # its versions stay


async def test_subscribe_through_the_ui(pair: tuple[Daemon, Daemon], scratch: Path) -> None:
    a, b = pair
    data = scratch / "corpus"
    data.mkdir()
    (data / "part-0.txt").write_text("the first part\n")
    trust_each_other(a, b)
    a.run("share", str(data))
    dest = scratch / "follow"

    app, client = connect(b)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: has_row(app, "datasets", "corpus"), "A's dataset on B")
        # S on the Datasets tab offers the selected dataset.
        await pilot.press("2")
        app.table("datasets").move_cursor(row=app.table("datasets").get_row_index("corpus"))
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, SubscribeDialog), "the subscribe dialog")
        assert app.screen.query_one("#name", Input).value == "corpus"
        await fill_dialog(pilot, SubscribeDialog, dest=str(dest))
        await pilot.press("6")
        await until(pilot, lambda: has_row(app, "subscriptions", "corpus"), "the subscription")
        await until(pilot, lambda: cell(app, "subscriptions", "corpus", STATE) == "current", "the subscription current")
        assert cell(app, "subscriptions", "corpus", VERSION) == "@1"
        assert files_of(dest) == files_of(data)

        # A publishes @2: B follows by itself, and the row says so.
        (data / "part-1.txt").write_text("the second part\n")
        await asyncio.to_thread(a.run, "share", str(data))
        await until(pilot, lambda: cell(app, "subscriptions", "corpus", VERSION) == "@2", "the update to @2", timeout=45)
        await until(pilot, lambda: cell(app, "subscriptions", "corpus", STATE) == "current", "the subscription current")
        assert files_of(dest) == files_of(data)
        assert f"corpus updated to @2 in {dest}" in logged(app)

        # The same dataset into another folder: the daemon refuses, the UI says why.
        await pilot.press("S")
        await fill_dialog(pilot, SubscribeDialog, name="corpus", dest=str(scratch / "elsewhere"))
        await until(pilot, lambda: any(n.startswith("subscription.add failed: ") for n in notices(app)), "the error")
        assert app.table("subscriptions").row_count == 1

        await remove_selected(pilot, "subscriptions", "corpus")
        assert (await client.call("subscription.list"))["subscriptions"] == []
        assert files_of(dest) == files_of(data)  # the folder keeps its files
