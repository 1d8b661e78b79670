"""The Events tab: the daemon's recent history when the app connects, then its live events, each once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from textual.widgets import Log

from shoal.tui.rows import event_line

#: Lines kept on screen; the oldest go first.
MAX_LINES = 5000


class EventLog(Log):
    """A log of event lines, each stamped with the time the daemon published it.

    The daemon numbers its events (`seq`, per run of the daemon). An event published
    between the app's `subscribe` and its `events` call comes twice, live and in the
    history; its number tells the copies apart.
    """

    def __init__(self, name_of: Callable[[str], str], **kwargs: Any) -> None:
        """`name_of` names a peer by its id, as the peers table does."""
        super().__init__(max_lines=MAX_LINES, **kwargs)
        self._name_of = name_of
        self._run: str | None = None
        self._last_seq = 0

    def history(self, run: str, entries: Iterable[dict[str, Any]]) -> None:
        """Show the events of `events`'s result not shown yet; all of them after a restart of the daemon."""
        if run != self._run:
            self._run, self._last_seq = run, 0
        for entry in entries:
            self.event(entry["topic"], entry["data"], entry.get("seq"), entry.get("time"))

    def forget_order(self) -> None:
        """No history to go by (the call failed): show every live event from now on."""
        self._run, self._last_seq = None, 0

    def event(self, topic: str, data: dict[str, Any], seq: int | None = None, when: float | None = None) -> None:
        """Show one event, unless it was shown already or is not worth a line (a progress tick)."""
        if seq is not None:
            if seq <= self._last_seq:
                return
            self._last_seq = seq
        line = event_line(topic, data, self._name_of)
        if line is not None:
            self.note(line, when)

    def note(self, line: str, when: float | None = None) -> None:
        """Add a line of the app's own (e.g. a refused request), stamped `when` (default: now)."""
        stamp = time.strftime("%H:%M:%S", time.localtime(time.time() if when is None else when))
        self.write_line(f"{stamp}  {line}")
