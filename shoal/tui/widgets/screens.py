"""Full screens pushed over the main view: help, and one dataset's versions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, Static

from shoal.errors import DaemonError, DaemonNotRunning
from shoal.tui.rows import BROWSE_COLUMNS, VERSION_COLUMNS, browse_row, version_row

#: Sends one control request (the app's client.call).
Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
#: Opens the fetch dialog: (dataset, version or None for the latest, include glob or "").
OpenFetch = Callable[[str, str | None, str], None]
#: Opens the browse screen: (dataset, version or None for the latest).
OpenBrowse = Callable[[str, str | None], None]
#: How long the daemon may wait for a peer holding a remote version (the request's `timeout`).
BROWSE_TIMEOUT = 15
UP = ".."

HELP = """\
[b]shoal tui[/b] — live view of this daemon's peers, datasets, transfers, syncs

  [b]1–6[/b]     tabs: peers, datasets, transfers, events, watches, subscriptions
  [b]↑ ↓[/b]     move the selection
  [b]enter[/b]   on a dataset: show its versions
  [b]b[/b]       browse the selected dataset's files (in versions: that version)
  [b]f[/b]       fetch the selected dataset
  [b]t[/b] / [b]u[/b]   trust / untrust the selected peer (shows its full id)
  [b]s[/b]       share a folder as a dataset
  [b]p[/b]       on transfers: pause / resume the selected transfer
  [b]c[/b]       on transfers: cancel the selected transfer (asks first)
  [b]w[/b]       on watches: watch a folder (share it again whenever it changes)
  [b]S[/b]       subscribe: keep a folder at a dataset's newest version
  [b]x[/b]       unwatch / unsubscribe the selected watch / subscription
  [b]r[/b]       refresh everything from the daemon
  [b]?[/b]       this help
  [b]q[/b]       quit (the daemon keeps running)

Press escape or ? to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help"):
            yield Static(HELP)


class VersionsScreen(Screen[None]):
    """The `log` of one dataset, newest first."""

    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back"), Binding("b", "browse", "Browse")]

    def __init__(self, name: str, versions: list[dict[str, Any]], browse: OpenBrowse | None = None) -> None:
        super().__init__()
        self._dataset = name
        self._versions = versions
        self._browse = browse

    def action_browse(self) -> None:
        """Browse the version under the cursor."""
        row = self.query_one(DataTable).cursor_row
        if self._browse is not None and 0 <= row < len(self._versions):
            self._browse(self._dataset, self._versions[row]["id"])

    def compose(self) -> ComposeResult:
        yield Label(f"[b]{self._dataset}[/b] — {len(self._versions)} versions, newest first", id="versions-title")
        table: DataTable[object] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*VERSION_COLUMNS)
        table.add_rows(version_row(version) for version in self._versions)
        yield table
        yield Footer()


def include_glob(path: str) -> str:
    """The fetch `include` pattern for everything under the directory `path` ("" for the root: all)."""
    if not path:
        return ""
    return re.sub(r"([*?\[\]\\])", r"\\\1", path) + "/**"


class BrowseScreen(Screen[None]):
    """One directory of a version, listed with `browse`: enter descends, backspace goes up, f fetches it."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("backspace", "up", "Up"),
        Binding("f", "fetch_here", "Fetch this folder"),
    ]

    def __init__(self, name: str, call: Call, fetch: OpenFetch, *, version: str | None = None) -> None:
        super().__init__()
        self._dataset = name
        self._call = call
        self._fetch = fetch
        #: The version asked for (None: the latest); the listing's own version once known.
        self.version = version
        self.shown: dict[str, Any] | None = None
        self.path = ""
        self.entries: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self.loading = False

    def compose(self) -> ComposeResult:
        yield Label(f"[b]{self._dataset}[/b]", id="browse-title")
        yield Static("", id="browse-error")
        table: DataTable[object] = DataTable(cursor_type="row", zebra_stripes=True, id="browse-table")
        table.add_columns(*BROWSE_COLUMNS)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#browse-error", Static).display = False
        self.load("")

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#browse-table", DataTable)

    def load(self, path: str) -> None:
        self.loading = True
        self._show_title(path, loading=True)
        self.run_worker(self._load(path), group="browse", exclusive=True)

    async def _load(self, path: str) -> None:
        params: dict[str, Any] = {"name": self._dataset, "timeout": BROWSE_TIMEOUT}
        if self.version is not None:
            params["version"] = self.version
        if path:
            params["path"] = path
        try:
            result = await self._call("browse", params)
        except (DaemonError, DaemonNotRunning) as exc:
            code = getattr(exc, "code", None)
            self._show_error(f"cannot list /{path}: {exc}" + (f" ({code})" if code else ""))
            self.loading = False
            self._show_title(self.path)
            return
        self.loading = False
        self._show_error(None)
        self.shown = result.get("version") or self.shown
        if self.version is None and self.shown is not None:
            # Pin what is shown: descending and fetching then stay on this version when a new one appears.
            self.version = self.shown.get("id")
        self.path = str(result.get("path", path)).strip("/")
        entries = list(result.get("entries", []))
        self.entries = {entry["name"]: entry for entry in entries}
        table = self.table
        table.clear()
        if self.path:
            table.add_row(UP, "parent", "", "", key=UP)
        for entry in entries:
            table.add_row(*browse_row(entry), key=entry["name"])
        table.move_cursor(row=0)
        total = int(result.get("total", len(entries)))
        self._show_title(self.path, count=len(entries), total=total)

    def _show_title(self, path: str, *, loading: bool = False, count: int | None = None, total: int = 0) -> None:
        version = ""
        if self.shown is not None:
            version = f" @{self.shown.get('seq', '?')} ({str(self.shown.get('id', ''))[:12]})"
        elif self.version is not None:
            version = f" version {self.version[:12]}"
        line = f"[b]{self._dataset}[/b]{version} — /{path}"
        if loading:
            line += "  [dim]loading…[/dim]"
        elif count is not None:
            line += f"  [dim]{count:,} entries" + (f" of {total:,}" if total > count else "") + "[/dim]"
        self.query_one("#browse-title", Label).update(line)

    def _show_error(self, message: str | None) -> None:
        self.error = message
        error = self.query_one("#browse-error", Static)
        error.update(message or "")
        error.display = message is not None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        if key == UP:
            self.action_up()
            return
        entry = self.entries.get(str(key))
        if entry is not None and entry.get("type") == "dir" and not self.loading:
            self.load(f"{self.path}/{entry['name']}" if self.path else entry["name"])

    def action_up(self) -> None:
        if self.path and not self.loading:
            self.load(self.path.rpartition("/")[0])

    def action_fetch_here(self) -> None:
        self._fetch(self._dataset, self.version, include_glob(self.path))
