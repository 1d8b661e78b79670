"""A DataTable updated in place by row key, never cleared and rebuilt.

Clearing a 10,000-row table on every event would re-measure every row and reset
the cursor; diffing against the rows already shown touches only what changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from shoal.tui.rows import Row


class KeyedTable(DataTable[object]):
    """Rows identified by a stable key (peer id, dataset name, transfer id)."""

    def __init__(self, columns: Sequence[str], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._column_names = columns
        self._shown: dict[str, Row] = {}

    def on_mount(self) -> None:
        self._column_keys = self.add_columns(*self._column_names)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if there are rows."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None
        return None if key is None else str(key)

    def upsert(self, key: str, row: Row) -> None:
        """Show `row` under `key`, changing only the cells that differ."""
        old = self._shown.get(key)
        if old is None:
            self.add_row(*row, key=key)
        elif old != row:
            for column, (before, after) in zip(self._column_keys, zip(old, row)):
                if before != after:
                    self.update_cell(key, column, after, update_width=True)
        self._shown[key] = row

    def drop(self, key: str) -> None:
        if self._shown.pop(key, None) is not None:
            self.remove_row(key)

    def sync(self, rows: Mapping[str, Row]) -> None:
        """Make the table show exactly `rows`."""
        for key in [key for key in self._shown if key not in rows]:
            self.drop(key)
        for key, row in rows.items():
            self.upsert(key, row)
