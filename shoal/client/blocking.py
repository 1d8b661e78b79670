"""A blocking client of the daemon's control socket.

Deliberately tiny in its imports (no trio, textual or cryptography): `shoal status`
must start about as fast as Python itself.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from shoal.errors import DaemonError, DaemonNotRunning, TimedOut
from shoal.protocol.control import (
    CONNECTION_ID,
    ErrorReply,
    Event,
    Message,
    MessageDecoder,
    Progress,
    Request,
    Response,
    encode_message,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing adds milliseconds to every `shoal` start; annotations do not need it at run time.
    from typing import Any

RECEIVE_SIZE = 65536
CONNECT_TIMEOUT = 5.0


class ControlClient:
    """One connection to the daemon; requests are answered one at a time, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._decoder = MessageDecoder()
        self._next_id = 1
        self._events: deque[Event] = deque()

    @classmethod
    def connect(cls, path: Path, *, timeout: float = CONNECT_TIMEOUT) -> ControlClient:
        """Connect to the socket at `path`; DaemonNotRunning if nothing answers there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise DaemonNotRunning(
                f"the daemon is not running (nothing at {path}); start it with `shoal daemon start`"
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonNotRunning(f"cannot reach the daemon at {path}: {exc.strerror or exc}; check the --home") from None
        return cls(sock)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the daemon cancels whatever this client still had running."""
        self._sock.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one request and wait for its result; DaemonError if the daemon refuses it.

        Progress reports go to `on_progress`; events that arrive meanwhile are kept
        for `events()`. `timeout` bounds the whole call (None waits for ever).
        """
        request_id = self._next_id
        self._next_id += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        self._send(encode_message(Request(request_id, method, params or {})), deadline, method)
        while True:
            message = self._receive(deadline, method)
            if isinstance(message, Event):
                self._events.append(message)
            elif isinstance(message, ErrorReply) and message.id in (request_id, CONNECTION_ID):
                raise DaemonError(message.message, code=message.code, exit_code=message.exit_code or 1)
            elif isinstance(message, Progress) and message.id == request_id:
                if on_progress is not None:
                    on_progress(message.data)
            elif isinstance(message, Response) and message.id == request_id:
                return message.result

    def subscribe(self, topics: list[str] | None = None) -> list[str]:
        """Ask for events on `topics` (all when None); returns the topics now subscribed."""
        result = self.call("subscribe", {} if topics is None else {"topics": topics}, timeout=CONNECT_TIMEOUT)
        return list(result["topics"])

    def events(self, *, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they arrive; stops after `timeout` seconds without one.

        DaemonNotRunning when the daemon closes the connection (it stopped, or dropped
        a subscriber that fell too far behind).
        """
        while True:
            while self._events:
                yield self._events.popleft()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                message = self._receive(deadline, "subscribe")
            except TimedOut:
                return
            if isinstance(message, Event):
                yield message

    def _send(self, frame: bytes, deadline: float | None, method: str) -> None:
        self._sock.settimeout(_remaining(deadline, method))
        try:
            self._sock.sendall(frame)
        except TimeoutError:
            raise _timed_out(method) from None
        except OSError as exc:
            self._raise_parting_error()
            raise _lost(exc) from None

    def _raise_parting_error(self) -> None:
        """A daemon that refuses a connection says why, then closes: report its reason if it is there."""
        try:
            message = self._receive(time.monotonic() + CONNECT_TIMEOUT, "connect")
        except (DaemonNotRunning, TimedOut):
            return
        if isinstance(message, ErrorReply):
            raise DaemonError(message.message, code=message.code, exit_code=message.exit_code or 1)

    def _receive(self, deadline: float | None, method: str) -> Message:
        while True:
            message = self._decoder.next_message()
            if message is not None:
                return message
            self._sock.settimeout(_remaining(deadline, method))
            try:
                data = self._sock.recv(RECEIVE_SIZE)
            except TimeoutError:
                raise _timed_out(method) from None
            except OSError as exc:
                raise _lost(exc) from None
            if not data:
                raise _lost(None)
            self._decoder.feed(data)


def _remaining(deadline: float | None, method: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(method)
    return left


def _timed_out(method: str) -> TimedOut:
    return TimedOut(f"the daemon did not finish {method!r} in time; check `shoal daemon status` and its log")


def _lost(exc: OSError | None) -> DaemonNotRunning:
    why = f" ({exc.strerror or exc})" if exc is not None else ""
    return DaemonNotRunning(f"the daemon closed the connection{why}; check `shoal daemon status` and its log")
