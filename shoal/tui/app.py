"""`shoal tui`: the app shell, wiring the control client's signals into the tables.

The app holds the daemon's state as the last maps it sent, keyed like the
tables, so an event changes one row and a refresh is a diff, not a rebuild.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from shoal.client.aio import Connected, ControlClient, Signal
from shoal.errors import DaemonError, DaemonNotRunning
from shoal.home import socket_path
from shoal.protocol.control import Event
from shoal.tui.rows import (
    DATASET_COLUMNS,
    PEER_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    TRANSFER_COLUMNS,
    WATCH_COLUMNS,
    Row,
    TransferTracker,
    dataset_rows,
    existing_folder,
    peer_label,
    peer_row,
    subscription_row,
    watch_row,
)
from shoal.tui.widgets.event_log import EventLog
from shoal.tui.widgets.keyed_table import KeyedTable
from shoal.tui.widgets.modals import (
    CancelTransferDialog,
    ConfirmDialog,
    FetchDialog,
    Params,
    ShareDialog,
    SubscribeDialog,
    TrustDialog,
    UntrustDialog,
    WatchDialog,
)
from shoal.tui.widgets.screens import BrowseScreen, HelpScreen, VersionsScreen

#: Dataset events come in bursts (a share of many datasets); one `ls` per burst is enough.
REFRESH_DELAY = 0.2
#: Seconds between reads of the peers while the Peers tab shows them: their rates are measured, not announced.
PEER_POLL = 2.0
#: The tabs with a table, by id; the Events tab holds the log instead.
TABLES = ("peers", "datasets", "transfers", "watches", "subscriptions")
#: Actions that belong to some tabs only: elsewhere they are hidden, so the footer fits, and do nothing.
TAB_ACTIONS = {"pause_transfer": {"transfers"}, "cancel_transfer": {"transfers"}, "watch": {"watches"},
               "unwatch": {"watches"}, "subscribe": {"subscriptions", "datasets"}, "unsubscribe": {"subscriptions"}}


class Client(Protocol):
    """What the app needs from a control client; tests pass an in-memory one."""

    def call(
        self, method: str, params: dict[str, Any] | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> Awaitable[dict[str, Any]]: ...

    def signals(self) -> AsyncIterator[Signal]: ...


class ShoalApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "shoal"
    BINDINGS = [
        Binding("f", "fetch", "Fetch"),
        Binding("b", "browse", "Browse"),
        Binding("t", "trust", "Trust"),
        Binding("u", "untrust", "Untrust"),
        Binding("s", "share", "Share"),
        Binding("w", "watch", "Watch"),
        Binding("S", "subscribe", "Subscribe", key_display="S"),
        Binding("x", "unwatch", "Unwatch"),
        Binding("x", "unsubscribe", "Unsubscribe"),
        Binding("p", "pause_transfer", "Pause/Resume"),
        Binding("c", "cancel_transfer", "Cancel fetch"),
        Binding("r", "refresh", "Refresh"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("1", "tab('peers')", "Peers", show=False),
        Binding("2", "tab('datasets')", "Datasets", show=False),
        Binding("3", "tab('transfers')", "Transfers", show=False),
        Binding("4", "tab('events')", "Events", show=False),
        Binding("5", "tab('watches')", "Watches", show=False),
        Binding("6", "tab('subscriptions')", "Subscriptions", show=False),
    ]

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.connected = False
        self.peers: dict[str, dict[str, Any]] = {}
        self.local: list[dict[str, Any]] = []
        self.remote: list[dict[str, Any]] = []
        self.transfers: dict[str, TransferTracker] = {}
        self.watches: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        #: Dataset name to the folder its last fetch (in the events seen, history included) completed into.
        self.fetched: dict[str, str] = {}
        #: Whether the tab to open on was chosen: once, when the daemon's state first arrives.
        self.opened = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting to the daemon…", id="status")
        with TabbedContent(initial="datasets"):
            with TabPane("Peers", id="peers"):
                yield KeyedTable(PEER_COLUMNS, id="peers-table")
            with TabPane("Datasets", id="datasets"):
                yield KeyedTable(DATASET_COLUMNS, id="datasets-table")
            with TabPane("Transfers", id="transfers"):
                yield KeyedTable(TRANSFER_COLUMNS, id="transfers-table")
            with TabPane("Events", id="events"):
                yield EventLog(self._peer_label, id="events-log")
            with TabPane("Watches", id="watches"):
                yield KeyedTable(WATCH_COLUMNS, id="watches-table")
            with TabPane("Subscriptions", id="subscriptions"):
                yield KeyedTable(SUBSCRIPTION_COLUMNS, id="subscriptions-table")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # Looked up once: events keep arriving while the app shuts down, when a
        # query of the torn-down screen would raise NoMatches inside a worker.
        self.status = self.query_one("#status", Static)
        self.events_log = self.query_one("#events-log", EventLog)
        self.tabs = self.query_one(TabbedContent)
        self.tables = {name: self.query_one(f"#{name}-table", KeyedTable) for name in TABLES}
        self.table("datasets").focus()
        self.run_worker(self._follow(), group="signals", exclusive=True)
        self.set_interval(PEER_POLL, self._poll_peers)

    def table(self, name: str) -> KeyedTable:
        return self.tables[name]

    # --- the daemon's signals ----------------------------------------------------------

    async def _follow(self) -> None:
        async for signal in self.client.signals():
            if isinstance(signal, Connected):
                self.connected = True
                self._set_status("connected", down=False)
                await self._refresh()
                # Before the queued live events, which it tells apart from its own; after the peers, which name.
                await self._reporting_failures(self._load_history())
            elif isinstance(signal, Event):
                self._on_event(signal)
            else:
                self.connected = False
                retry = f" in {signal.retry_in:.0f}s" if signal.retry_in >= 1 else ""
                self._set_status(f"daemon not running — retrying{retry} ({signal.reason})", down=True)

    def _set_status(self, text: str, *, down: bool) -> None:
        self.status.update(text)
        self.status.set_class(down, "down")

    def _on_event(self, event: Event) -> None:
        data = event.data
        if event.topic == "peers" and data.get("peer"):
            peer = data["peer"]
            self.peers[peer["peer_id"]] = {**self.peers.get(peer["peer_id"], {}), **peer}
            self.table("peers").upsert(peer["peer_id"], peer_row(self.peers[peer["peer_id"]]))
        elif event.topic == "peers":
            # The peer layer's changes (pending, online, offline, catalog) carry only the
            # peer id: re-read the peers, and the remote datasets that come and go with them.
            self._in_background(partial(self._refresh_later, peers=True), "peers")
            self._subscriptions_may_change()
        elif event.topic == "datasets":
            self._in_background(self._refresh_later, "datasets")
        elif event.topic == "transfers":
            self._on_transfer(data)
        elif event.topic == "watches":
            self._on_sync("watches", self.watches, data["watch"], data.get("change"), watch_row)
        elif event.topic == "subscriptions":
            self._on_sync("subscriptions", self.subscriptions, data["subscription"], data.get("change"), subscription_row)
            # `updated` and `failed` are sent while the update still counts as running: re-read the settled state.
            self._subscriptions_may_change()
        self.events_log.event(event.topic, data, event.seq)

    def _in_background(self, work: Callable[[], Coroutine[None, None, None]], group: str) -> None:
        """Run `work` as the only worker of `group`, replacing one still running.

        A callable, not a coroutine: a worker cancelled before it starts then leaves none unawaited.
        """
        # mypy infers Never for textual's WorkType union when a callable matches two of its arms.
        self.run_worker(work, group=group, exclusive=True)  # type: ignore[arg-type]

    def _on_sync(
        self, table: str, shown: dict[str, dict[str, Any]], item: dict[str, Any], change: str | None,
        row: Callable[[dict[str, Any]], Row],
    ) -> None:
        """Show the watch or subscription an event carries in `table` (and `shown`), or drop it when removed."""
        name = str(item["name"])
        if change == "removed":
            shown.pop(name, None)
            self.table(table).drop(name)
        else:
            shown[name] = item
            self.table(table).upsert(name, row(item))

    def _subscriptions_may_change(self) -> None:
        """Re-read the subscriptions soon: the daemon publishes no event when one turns pending or updating."""
        if self.subscriptions:
            self._in_background(self._refresh_sync_later, "sync")

    def _on_transfer(self, data: dict[str, Any]) -> None:
        key = str(data.get("id", data.get("name")))
        tracker = self.transfers.setdefault(key, TransferTracker(data))
        kind = data.get("event")
        if kind == "progress":
            tracker.update(data)
        elif kind == "done":
            self._note_fetch(data)
            tracker.finish(data)
            # The daemon publishes no datasets event for a fetch; the copy is local now.
            self._in_background(self._refresh_later, "datasets")
        elif kind == "failed":
            tracker.finish(data, failed=str(data.get("reason") or "cancelled"))
        elif kind in ("paused", "resumed"):
            tracker.update_state(data)
        self.table("transfers").upsert(key, tracker.row(self._peer_label))
        if kind in ("started", "done", "failed"):
            self._subscriptions_may_change()  # the transfer may be a subscription's update

    def _peer_label(self, peer_id: str) -> str:
        peer = self.peers.get(peer_id)
        return peer_label(peer) if peer else peer_id[:7]

    # --- fetching state ----------------------------------------------------------------

    async def _refresh(self) -> None:
        await self._reporting_failures(self._refresh_all())

    async def _refresh_later(self, *, peers: bool = False, datasets: bool = True) -> None:
        await asyncio.sleep(REFRESH_DELAY)
        if peers:
            await self._reporting_failures(self._refresh_peers())
        if datasets:
            await self._reporting_failures(self._refresh_datasets())

    async def _refresh_sync_later(self) -> None:
        await asyncio.sleep(REFRESH_DELAY)
        await self._reporting_failures(self._refresh_sync())

    async def _reporting_failures(self, refresh: Awaitable[None]) -> None:
        try:
            await refresh
        except DaemonNotRunning:
            return  # the signal stream reports the loss and retries
        except DaemonError as exc:
            self.notify(f"refresh failed: {exc}", severity="error", timeout=8)

    async def _refresh_all(self) -> None:
        identity = await self.client.call("id")
        self._set_status(f"connected — this peer {identity['short']} listens on {identity['listen']}", down=False)
        await self._refresh_peers()
        await self._refresh_datasets()
        await self._refresh_sync()
        await self._refresh_transfers()
        if not self.opened:
            self.opened = True
            self._open_first_tab()

    async def _load_history(self) -> None:
        try:
            recent = await self.client.call("events")
        except DaemonError:
            self.events_log.forget_order()
            raise
        self.events_log.history(recent["run"], recent["events"])
        for entry in recent["events"]:
            if entry["topic"] == "transfers" and entry["data"].get("event") == "done":
                self._note_fetch(entry["data"])

    def _note_fetch(self, done: dict[str, Any]) -> None:
        """Remember where a fetch put its dataset: with --include, `ls` does not list that folder."""
        name = (done.get("version") or {}).get("name")
        if name and done.get("dest"):
            self.fetched[str(name)] = str(done["dest"])

    async def _refresh_transfers(self) -> None:
        """The transfers already running: their events came before this app subscribed."""
        for transfer in (await self.client.call("status")).get("transfers", ()):
            key = str(transfer["id"])
            tracker = self.transfers.setdefault(key, TransferTracker(transfer))
            tracker.update(transfer)
            self.table("transfers").upsert(key, tracker.row(self._peer_label))

    def _open_first_tab(self) -> None:
        """Peers until one is trusted (nothing can move before), else a running transfer, else the datasets."""
        if self.tabs.active != "datasets":
            return  # the user chose a tab already
        if not any(peer.get("trusted") for peer in self.peers.values()):
            self.action_tab("peers")
        elif any(tracker.running for tracker in self.transfers.values()):
            self.action_tab("transfers")

    def _poll_peers(self) -> None:
        # Its own group: replacing a refresh that a peers event started would drop that one's datasets.
        if self.connected and self.tabs.active == "peers":
            self._in_background(partial(self._refresh_later, peers=True, datasets=False), "peer-poll")

    async def _refresh_peers(self) -> None:
        peers = await self.client.call("peers")
        self.peers = {peer["peer_id"]: peer for peer in peers["peers"]}
        self.table("peers").sync({key: peer_row(peer) for key, peer in self.peers.items()})

    async def _refresh_sync(self) -> None:
        """The watches and subscriptions, whose events miss some changes (pending counts, subscription states)."""
        self.watches = {watch["name"]: watch for watch in (await self.client.call("watches"))["watches"]}
        self.table("watches").sync({name: watch_row(watch) for name, watch in self.watches.items()})
        listing = (await self.client.call("subscription.list"))["subscriptions"]
        self.subscriptions = {sub["name"]: sub for sub in listing}
        self.table("subscriptions").sync({name: subscription_row(sub) for name, sub in self.subscriptions.items()})

    async def _refresh_datasets(self) -> None:
        self.local = (await self.client.call("ls"))["datasets"]
        try:
            self.remote = (await self.client.call("ls", {"remote": True}))["datasets"]
        except DaemonError as exc:
            if exc.code != "usage":
                raise
            self.remote = []  # a daemon without the peer layer lists local datasets only
        self.table("datasets").sync(dataset_rows(self.local, self.remote))

    # --- actions -----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tabs = TAB_ACTIONS.get(action)
        return tabs is None or self.tabs.active in tabs

    def on_tabbed_content_tab_activated(self) -> None:
        self.refresh_bindings()  # the footer shows the new tab's actions
        self._poll_peers()  # rates as they are now, not as when the tab was last shown

    def action_tab(self, tab: str) -> None:
        self.tabs.active = tab
        target = self.events_log if tab == "events" else self.table(tab)
        target.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_refresh(self) -> None:
        if self.connected:
            self.run_worker(self._refresh(), group="refresh", exclusive=True)

    def action_fetch(self) -> None:
        name = self.table("datasets").selected_key
        if name is None:
            self.notify("select a dataset on the Datasets tab first", severity="warning")
            return
        self.open_fetch(name)

    def open_fetch(self, name: str, version: str | None = None, include: str = "") -> None:
        # Into the folder that already holds the dataset here: a fetch there updates it in place.
        dest = existing_folder(name, self.local, self.fetched, self.subscriptions.values()) or str(Path.cwd() / name)
        dialog = FetchDialog(name, dest, include=include, version=version)
        self.push_screen(dialog, self._send("fetch"))

    def action_browse(self) -> None:
        name = self.table("datasets").selected_key
        if name is None:
            self.notify("select a dataset on the Datasets tab first", severity="warning")
            return
        self.open_browse(name)

    def open_browse(self, name: str, version: str | None = None) -> None:
        """List the files of a version of `name` (None: the latest), local or remote, without fetching it."""
        self.push_screen(BrowseScreen(name, self.client.call, self.open_fetch, version=version))

    def action_trust(self) -> None:
        peer = self._selected_peer()
        if peer is not None:
            self.push_screen(TrustDialog(peer), self._send("trust"))

    def action_untrust(self) -> None:
        peer = self._selected_peer()
        if peer is None:
            return
        if not peer.get("trusted"):
            self.notify("that peer is not trusted", severity="warning")
            return
        self.push_screen(UntrustDialog(peer), self._send("untrust"))

    def action_share(self) -> None:
        self.push_screen(ShareDialog(), self._send("share"))

    def action_watch(self) -> None:
        self.push_screen(WatchDialog(), self._send("watch"))

    def action_subscribe(self) -> None:
        """Subscribe; on the Datasets tab the selected dataset is the one offered."""
        name = (self.table("datasets").selected_key if self.tabs.active == "datasets" else None) or ""
        self.push_screen(SubscribeDialog(name, str(Path.cwd() / name) if name else ""), self._send("subscription.add"))

    def action_unwatch(self) -> None:
        name = self.table("watches").selected_key
        if name is None:
            self.notify("no watch to remove", severity="warning")
            return
        path = self.watches[name].get("path", "the folder")
        question = ConfirmDialog(f"Stop watching [b]{name}[/b]?", f"{path} and the versions shared from it stay.",
                                 "Unwatch", "Keep watching", {"name": name})
        self.push_screen(question, self._send("unwatch"))

    def action_unsubscribe(self) -> None:
        name = self.table("subscriptions").selected_key
        if name is None:
            self.notify("no subscription to remove", severity="warning")
            return
        dest = self.subscriptions[name].get("dest", "")
        # With its folder, so a subscription re-made elsewhere meanwhile is not the one removed.
        question = ConfirmDialog(f"Unsubscribe [b]{name}[/b]?", f"{dest} keeps its files; a running update stops.",
                                 "Unsubscribe", "Keep following", {"name": name, "dest": dest})
        self.push_screen(question, self._send("subscription.remove"))

    def action_pause_transfer(self) -> None:
        selected = self._selected_transfer()
        if selected is not None:
            key, transfer_id, tracker = selected
            method = "transfer.resume" if tracker.paused else "transfer.pause"
            self.run_worker(self._control_transfer(method, key, {"id": transfer_id}), group="transfer-control")

    def action_cancel_transfer(self) -> None:
        selected = self._selected_transfer()
        if selected is None:
            return
        key, transfer_id, tracker = selected

        def confirmed(params: Params | None) -> None:
            if params is not None:
                self.run_worker(self._control_transfer("transfer.cancel", key, params), group="transfer-control")

        self.push_screen(CancelTransferDialog(transfer_id, tracker.name), confirmed)

    def _selected_transfer(self) -> tuple[str, int, TransferTracker] | None:
        """(key, id, tracker) of the transfer under the cursor of the Transfers tab, if the daemon still runs it."""
        key = self.table("transfers").selected_key
        tracker = self.transfers.get(key) if key is not None else None
        if key is None or tracker is None or tracker.id is None:
            self.notify("select a transfer on the Transfers tab first", severity="warning")
            return None
        if not tracker.running:
            self.notify(f"the fetch of {tracker.name} has ended", severity="warning")
            return None
        return key, tracker.id, tracker

    async def _control_transfer(self, method: str, key: str, params: Params) -> None:
        """Send a transfer.* request; its result shows at once, the daemon's events confirm it."""
        tracker = self.transfers[key]
        verb = method.removeprefix("transfer.")
        try:
            result = await self.client.call(method, params)
        except (DaemonError, DaemonNotRunning) as exc:
            message = f"{verb} of {tracker.name} failed: {exc}"
            self.events_log.note(message)
            self.notify(message, severity="error", timeout=8)
            return
        if method != "transfer.cancel" and tracker.running:
            # A cancel shows when the fetch's failed event arrives.
            tracker.update_state(result.get("transfer") or {})
            self.table("transfers").upsert(key, tracker.row(self._peer_label))

    def _selected_peer(self) -> dict[str, Any] | None:
        key = self.table("peers").selected_key
        if key is None:
            self.notify("select a peer on the Peers tab first", severity="warning")
            return None
        return self.peers[key]

    def _send(self, method: str) -> Callable[[Params | None], None]:
        """A dialog callback that sends the dialog's parameters as `method` in the background."""

        def send(params: Params | None) -> None:
            if params is not None:
                self.run_worker(self._call(method, params), group=method)

        return send

    async def _call(self, method: str, params: Params) -> None:
        try:
            await self.client.call(method, params)
        except (DaemonError, DaemonNotRunning) as exc:
            self.notify(f"{method} failed: {exc}", severity="error", timeout=8)
            return
        # The tables follow from the events the daemon publishes for the change.
        self.notify(f"{method} done")

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "datasets-table" or event.row_key.value is None:
            return
        name = str(event.row_key.value)
        try:
            log = await self.client.call("log", {"name": name})
        except (DaemonError, DaemonNotRunning) as exc:
            self.notify(f"no versions to show: {exc}", severity="warning")
            return
        await self.push_screen(VersionsScreen(name, log["versions"], self.open_browse))


def make_app(client: Client) -> ShoalApp:
    return ShoalApp(client)


def run_tui(home: Path) -> int:
    """Run the TUI against the daemon at `home` until the user quits; the exit status."""
    app = make_app(ControlClient(socket_path(home)))
    app.run()
    return app.return_code or 0
