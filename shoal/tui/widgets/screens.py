"""Full screens pushed over the main view: help, and one dataset's versions."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, Static

from shoal.tui.rows import VERSION_COLUMNS, version_row

HELP = """\
[b]shoal tui[/b] — live view of this daemon's peers, datasets and transfers

  [b]1–4[/b]     switch tab: peers, datasets, transfers, events
  [b]↑ ↓[/b]     move the selection
  [b]enter[/b]   on a dataset: show its versions
  [b]f[/b]       fetch the selected dataset
  [b]t[/b] / [b]u[/b]   trust / untrust the selected peer (shows its full id)
  [b]s[/b]       share a folder as a dataset
  [b]p[/b]       pause / resume the selected transfer
  [b]c[/b]       cancel the selected transfer (asks first)
  [b]r[/b]       refresh peers and datasets from the daemon
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

    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back")]

    def __init__(self, name: str, versions: list[dict[str, Any]]) -> None:
        super().__init__()
        self._dataset = name
        self._versions = versions

    def compose(self) -> ComposeResult:
        yield Label(f"[b]{self._dataset}[/b] — {len(self._versions)} versions, newest first", id="versions-title")
        table: DataTable[object] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*VERSION_COLUMNS)
        table.add_rows(version_row(version) for version in self._versions)
        yield table
        yield Footer()
