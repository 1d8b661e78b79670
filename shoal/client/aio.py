"""An asyncio client of the daemon's control socket, for the TUI.

The CLI's client blocks, which would freeze the UI; this one shares only the
sans-I/O message layer with it. `signals()` owns the connection: it connects,
subscribes to every topic, yields the events, and on any loss reconnects with
exponential backoff, so the UI only has to show what it is told.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.errors import DaemonError, DaemonNotRunning
from shoal.protocol.control import (
    CONNECTION_ID,
    ErrorReply,
    Event,
    MessageDecoder,
    Progress,
    Request,
    Response,
    encode_message,
)
from shoal.protocol.errors import RemoteProtocolError

RECEIVE_SIZE = 65536
MIN_BACKOFF = 0.25
MAX_BACKOFF = 5.0

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection is up and subscribed; state fetched before now is stale."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """No daemon to talk to; another attempt follows after `retry_in` seconds."""

    reason: str
    retry_in: float


Signal = Connected | Disconnected | Event


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    on_progress: ProgressFn | None


class _Lost(Exception):
    """The read loop ended; carries why, for the Disconnected signal."""


class ControlClient:
    """Requests by id over one connection, many in flight at once, plus the event stream."""

    def __init__(self, path: Path, *, min_backoff: float = MIN_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        self._path = path
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._writer: asyncio.StreamWriter | None = None

    async def call(
        self, method: str, params: dict[str, Any] | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its result; DaemonError if refused, DaemonNotRunning if offline."""
        writer = self._writer
        if writer is None:
            raise DaemonNotRunning("the daemon is not running")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(future, on_progress)
        try:
            writer.write(encode_message(Request(request_id, method, params or {})))
            await writer.drain()
            return await future
        except ConnectionError as exc:
            raise DaemonNotRunning(f"lost the daemon: {exc}") from None
        finally:
            self._pending.pop(request_id, None)

    async def signals(self) -> AsyncIterator[Signal]:
        """Connection state changes and events, for as long as the caller iterates."""
        delay = self._min_backoff
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._path))
            except OSError as exc:
                yield Disconnected(f"cannot reach {self._path}: {exc.strerror or exc}", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            events: asyncio.Queue[Event | _Lost] = asyncio.Queue()
            self._writer = writer
            reading = asyncio.create_task(self._read(reader, events))
            try:
                # No topic list: the daemon then sends every topic it has, so a daemon
                # without transfers yet still serves peers and datasets.
                await self.call("subscribe")
                delay = self._min_backoff
                yield Connected()
                while not isinstance(item := await events.get(), _Lost):
                    yield item
                reason = str(item)
            except (DaemonError, DaemonNotRunning) as exc:
                reason = str(exc)
            finally:
                self._writer = None
                reading.cancel()
                writer.close()
                self._fail_pending()
            yield Disconnected(reason, 0.0)

    async def _read(self, reader: asyncio.StreamReader, events: asyncio.Queue[Event | _Lost]) -> None:
        decoder = MessageDecoder()
        try:
            while data := await reader.read(RECEIVE_SIZE):
                decoder.feed(data)
                while (message := decoder.next_message()) is not None:
                    if isinstance(message, Event):
                        events.put_nowait(message)
                    elif isinstance(message, ErrorReply) and message.id == CONNECTION_ID:
                        raise _Lost(message.message)
                    else:
                        self._deliver(message)
            raise _Lost("the daemon closed the connection")
        except _Lost as lost:
            events.put_nowait(lost)
        except (OSError, RemoteProtocolError) as exc:
            events.put_nowait(_Lost(f"connection failed: {exc}"))
        finally:
            self._fail_pending()

    def _deliver(self, message: Response | Progress | ErrorReply | Request) -> None:
        pending = self._pending.get(getattr(message, "id", -1))
        if pending is None or pending.future.done():
            return
        if isinstance(message, Progress):
            if pending.on_progress is not None:
                pending.on_progress(message.data)
        elif isinstance(message, Response):
            pending.future.set_result(message.result)
        elif isinstance(message, ErrorReply):
            pending.future.set_exception(DaemonError(message.message, code=message.code, exit_code=message.exit_code or 1))

    def _fail_pending(self) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(DaemonNotRunning("lost the connection to the daemon"))
