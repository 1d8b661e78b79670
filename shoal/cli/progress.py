"""Progress of long requests (share, fetch): a live bar on a terminal, periodic lines otherwise.

Both views read the progress maps the daemon sends: files_done, bytes_done,
files_total, bytes_total (None until known) and path. A fetch's maps add the
daemon's measured rate and ETA (of bytes from peers, not of files already here)
and `waiting`: while it is set nothing moves for want of a peer, and the views
show it instead of a rate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from shoal.client.fmt import format_duration, format_rate, format_size

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing adds milliseconds to every `shoal` start; annotations do not need it at run time.
    from typing import Any, TextIO

#: Seconds between two plain progress lines, so logs stay readable.
PLAIN_INTERVAL = 2.0


def open_progress(label: str, *, stream: TextIO | None = None) -> PlainProgress | RichProgress:
    """A bar when `stream` (stderr by default) is a terminal, plain lines otherwise."""
    out = stream or sys.stderr
    if out.isatty():
        return RichProgress(label, out)
    return PlainProgress(label, out)


class PlainProgress:
    """One line every PLAIN_INTERVAL seconds: counts, bytes, average rate and ETA."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        interval: float = PLAIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._waiting: str | None = None

    def update(self, data: dict[str, Any]) -> None:
        now = self._clock()
        waiting = data.get("waiting")
        if waiting:
            # Said once, when it changes: a wait repeated every interval reads like progress. Not
            # in the first interval, where a fetch that fails at once should print its error alone.
            if waiting != self._waiting and now - self._started >= self._interval:
                self._write(waiting)
                self._waiting = waiting
            self._last_line = now
            return
        if now - self._last_line < self._interval:
            return
        # A wait is said again only once progress has been shown since: a blip between two
        # reports of the same wait (a peer redialled and lost again) is no news.
        self._waiting = None
        self._last_line = now
        self._write(f"{self._label}: {describe(data, now - self._started)}")

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Nothing to tidy: every line is already complete."""


class RichProgress:
    """A transient rich bar with bytes, rate, ETA and file counts; while a fetch waits, no rate, and
    what it waits for printed once above the bar (a bar's column would cut it short)."""

    def __init__(self, label: str, stream: TextIO) -> None:
        # rich costs tens of milliseconds to import; only terminals showing a bar pay it.
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self._started = time.monotonic()
        self._waiting: str | None = None
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=False),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[files]}"),
            console=Console(file=stream),
            transient=True,
        )
        self._task = self._progress.add_task(label, total=None, files="", speed="")
        self._progress.start()

    def update(self, data: dict[str, Any]) -> None:
        waiting = data.get("waiting")
        elapsed = time.monotonic() - self._started
        if waiting != self._waiting and (not waiting or elapsed >= PLAIN_INTERVAL):
            if waiting:
                self._progress.console.print(waiting, markup=False, highlight=False)
            self._waiting = waiting
        speed = ", ".join(rate_and_eta(data, elapsed))
        self._progress.update(
            self._task, completed=data["bytes_done"], total=data.get("bytes_total") or None, files=_files(data),
            speed=speed,
        )

    def close(self) -> None:
        self._progress.stop()


def describe(data: dict[str, Any], elapsed: float) -> str:
    """"1,200/5,000 files, 1.2 GB of 4.0 GB, 150.0 MB/s, ETA 19s" from one progress map."""
    bytes_total = data.get("bytes_total")
    bytes_done = data["bytes_done"]
    amount = f"{format_size(bytes_done)} of {format_size(bytes_total)}" if bytes_total else format_size(bytes_done)
    return ", ".join([_files(data), amount, *rate_and_eta(data, elapsed)])


def rate_and_eta(data: dict[str, Any], elapsed: float) -> list[str]:
    """The rate and ETA worth showing: a fetch's as the daemon measured them (none while it
    waits for a peer), else the average over `elapsed`."""
    if "rate" in data:
        if data.get("waiting") or not data["rate"]:
            return []
        eta = data.get("eta")
        return [format_rate(data["rate"])] + ([f"ETA {format_duration(eta)}"] if eta is not None else [])
    bytes_total, bytes_done = data.get("bytes_total"), data["bytes_done"]
    rate = bytes_done / elapsed if elapsed > 0 else 0.0
    if rate <= 0:
        return []
    eta = [f"ETA {format_duration((bytes_total - bytes_done) / rate)}"] if bytes_total and bytes_total >= bytes_done else []
    return [format_rate(rate), *eta]


def _files(data: dict[str, Any]) -> str:
    files_total = data.get("files_total")
    return f"{data['files_done']:,}/{files_total:,} files" if files_total else f"{data['files_done']:,} files"
