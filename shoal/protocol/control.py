"""Control-socket messages: msgpack maps inside length-prefixed frames.

Pure and loop-agnostic: the CLI (blocking sockets), the daemon (trio) and the
TUI (asyncio) all encode with `encode_message` and decode with `MessageDecoder`.
Every message is a map with a "type" key; unknown extra keys are ignored so a
newer peer can add fields without breaking an older one.
"""

from __future__ import annotations

import re
from collections import namedtuple
from enum import IntEnum

import msgpack

from shoal.errors import (
    ConfigError,
    DaemonNotRunning,
    ShareError,
    ShoalError,
    TimedOut,
    UnknownDataset,
    UnknownPeer,
    UsageError,
)
from shoal.protocol.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol.wire.framing import FrameDecoder, encode_frame

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every `shoal` start; annotations do not need it.
    from typing import Any


#: Request ids are positive and fit a JavaScript number; 0 marks replies that
#: concern the connection rather than one request.
MAX_REQUEST_ID = 2**53 - 1
CONNECTION_ID = 0

#: Pattern strings, compiled (and cached by re) on first use rather than at every import.
_NAME = r"[a-z][a-z0-9_.-]{0,63}"
_CODE = r"[a-z][a-z0-9-]{0,63}"


class ExitCode(IntEnum):
    """Process exit codes of the `shoal` command; an ErrorReply may carry one."""

    OK = 0
    ERROR = 1
    USAGE = 2
    UNREACHABLE = 3
    NOT_FOUND = 4
    VERIFY_FAILED = 5
    TIMEOUT = 6
    INTERRUPTED = 130


_ERROR_CODES: tuple[tuple[type[ShoalError], str, ExitCode], ...] = (
    (ConfigError, "bad-config", ExitCode.USAGE),
    (UsageError, "usage", ExitCode.USAGE),
    (UnknownDataset, "not-found", ExitCode.NOT_FOUND),
    (UnknownPeer, "not-found", ExitCode.NOT_FOUND),
    (ShareError, "share-failed", ExitCode.ERROR),
    (TimedOut, "timeout", ExitCode.TIMEOUT),
    (DaemonNotRunning, "daemon-unreachable", ExitCode.UNREACHABLE),
)


def classify_error(exc: ShoalError) -> tuple[str, int]:
    """The stable error code and exit code of a deliberate error.

    An exception class may set its own `code` and `exit_code` attributes; otherwise
    the first matching base class in the table above decides.
    """
    code, exit_code = "error", ExitCode.ERROR
    for cls, cls_code, cls_exit in _ERROR_CODES:
        if isinstance(exc, cls):
            code, exit_code = cls_code, cls_exit
            break
    return getattr(exc, "code", code), int(getattr(exc, "exit_code", exit_code))


class ControlProtocolError(RemoteProtocolError):
    """Bytes on the control socket that are not a valid control message."""

    code = "bad-message"


# Immutable named tuples rather than dataclasses or typing.NamedTuple: the
# `shoal` command must start nearly as fast as Python itself, and those two
# imports alone cost it several milliseconds.


class Request(namedtuple("Request", "id method params")):
    """A call of `method` (text) with `params` (map); answered by Progress* then one Response or ErrorReply."""

    __slots__ = ()


class Response(namedtuple("Response", "id result")):
    """The successful end of request `id`, with its `result` map."""

    __slots__ = ()


class Progress(namedtuple("Progress", "id data")):
    """An intermediate report (`data` map) of a long request; zero or more precede its reply."""

    __slots__ = ()


class ErrorReply(namedtuple("ErrorReply", "id code message exit_code", defaults=(None,))):
    """The failed end of request `id` (or of the connection, when id is 0); `exit_code` may be None."""

    __slots__ = ()


class Event(namedtuple("Event", "topic data seq", defaults=(None,))):
    """A published fact (`data` map) on `topic`, sent to connections that subscribed to it.

    `seq` numbers the daemon's events from 1 since it started, so a client can tell
    a live event from the same one in the `events` history.
    """

    __slots__ = ()


Message = Request | Response | Progress | ErrorReply | Event

_TYPE_OF: dict[type[Message], str] = {
    Request: "request", Response: "response", Progress: "progress", ErrorReply: "error", Event: "event",
}


def encode_message(message: Message) -> bytes:
    """Return `message` as one frame, ready to write to the socket."""
    _validate(message, LocalProtocolError)
    body: dict[str, Any] = {"type": _TYPE_OF[type(message)]}
    for name in message._fields:
        value = getattr(message, name)
        if value is not None:
            body[name] = value
    try:
        payload = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"control message is not encodable: {exc}") from exc
    return encode_frame(payload)


def decode_message(payload: bytes) -> Message:
    """Parse one frame payload; raise ControlProtocolError if it is not a valid message."""
    body = _unpack(payload)
    kind = body.get("type")
    try:
        if kind == "request":
            message: Message = Request(body["id"], body["method"], body.get("params", {}))
        elif kind == "response":
            message = Response(body["id"], body["result"])
        elif kind == "progress":
            message = Progress(body["id"], body["data"])
        elif kind == "error":
            message = ErrorReply(body["id"], body["code"], body["message"], body.get("exit_code"))
        elif kind == "event":
            message = Event(body["topic"], body["data"], body.get("seq"))
        else:
            raise ControlProtocolError(f"unknown control message type {kind!r}")
    except KeyError as exc:
        raise ControlProtocolError(f"{kind} message lacks the {exc.args[0]!r} field") from None
    _validate(message, ControlProtocolError)
    return message


class MessageDecoder:
    """Buffers received bytes and returns complete control messages one at a time."""

    def __init__(self) -> None:
        self._frames = FrameDecoder()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the socket."""
        self._frames.feed(data)

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole message."""
        return self._frames.buffered

    def next_message(self) -> Message | None:
        """Return the next message, or None until more bytes arrive."""
        payload = self._frames.next_frame()
        return None if payload is None else decode_message(payload)


def _unpack(payload: bytes) -> dict[str, Any]:
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except ControlProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ControlProtocolError(f"control frame is not valid msgpack: {exc}") from None
    if not isinstance(body, dict):
        raise ControlProtocolError("control frame is not a msgpack map")
    return body


def _refuse_ext(code: int, data: bytes) -> None:
    raise ControlProtocolError(f"control messages carry no msgpack extension types (got type {code})")


def _validate(message: Message, error: type[Exception]) -> None:
    if isinstance(message, Event):
        _check_name("topic", message.topic, error)
        _check_map("data", message.data, error)
        if message.seq is not None and not (type(message.seq) is int and 1 <= message.seq <= MAX_REQUEST_ID):
            raise error(f"bad control event seq {message.seq!r}")
        return
    _check_id(message, error)
    if isinstance(message, Request):
        _check_name("method", message.method, error)
        _check_map("params", message.params, error)
    elif isinstance(message, Response):
        _check_map("result", message.result, error)
    elif isinstance(message, Progress):
        _check_map("data", message.data, error)
    else:
        _check_error_fields(message, error)


def _check_id(message: Request | Response | Progress | ErrorReply, error: type[Exception]) -> None:
    low = CONNECTION_ID if isinstance(message, ErrorReply) else 1
    ok = type(message.id) is int and low <= message.id <= MAX_REQUEST_ID
    if not ok:
        raise error(f"bad control message id {message.id!r}")


def _check_name(what: str, value: object, error: type[Exception]) -> None:
    if not isinstance(value, str) or not re.fullmatch(_NAME, value):
        raise error(f"bad control {what} {value!r}")


def _check_map(what: str, value: object, error: type[Exception]) -> None:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise error(f"control message field {what!r} must be a map with text keys")


def _check_error_fields(message: ErrorReply, error: type[Exception]) -> None:
    if not isinstance(message.code, str) or not re.fullmatch(_CODE, message.code):
        raise error(f"bad error code {message.code!r}")
    if not isinstance(message.message, str):
        raise error("error message must be text")
    exit_code = message.exit_code
    if exit_code is not None and not (type(exit_code) is int and 0 <= exit_code <= 255):
        raise error(f"bad exit code {exit_code!r}")
