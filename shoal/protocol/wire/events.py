"""What a Connection tells its application: its states, events and session errors.

A session goes HANDSHAKE → AUTHENTICATING → AWAIT_HELLO → OPEN, and from any
live state to CLOSED (a polite end) or ERROR (a violation). `next_event()`
hands out the events below; a violation by the peer becomes a
ConnectionClosed whose `error_code` is the error's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from shoal.protocol.errors import ProtocolError, RemoteProtocolError
from shoal.protocol.format.identity import PeerId
from shoal.protocol.wire.messages import Hello, Message, decode_message


class State(Enum):
    HANDSHAKE = "handshake"
    AUTHENTICATING = "authenticating"
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class Step(Enum):
    SECURED = "secured"
    ACCEPTED = "accepted"
    HELLO_RECEIVED = "hello-received"
    CLOSE = "close"
    FAIL = "fail"


_LIVE = (State.HANDSHAKE, State.AUTHENTICATING, State.AWAIT_HELLO, State.OPEN)
TRANSITIONS: dict[tuple[State, Step], State] = {
    (State.HANDSHAKE, Step.SECURED): State.AUTHENTICATING,
    (State.AUTHENTICATING, Step.ACCEPTED): State.AWAIT_HELLO,
    (State.AWAIT_HELLO, Step.HELLO_RECEIVED): State.OPEN,
    **{(state, Step.CLOSE): State.CLOSED for state in _LIVE},
    **{(state, Step.FAIL): State.ERROR for state in _LIVE},
}


# --- errors -------------------------------------------------------------------------


class AuthenticationFailed(RemoteProtocolError):
    """The peer's AUTH does not prove a key for this channel."""

    code = "bad-auth"


class SelfConnection(RemoteProtocolError):
    """The peer proved our own key: we dialled ourselves, or the key file was copied."""

    code = "self-connection"


class UnexpectedMessage(RemoteProtocolError):
    """A message arrived in a state where it is not allowed."""

    code = "unexpected-message"


class UnsupportedVersion(RemoteProtocolError):
    """The peer's HELLO names a protocol version we do not speak."""

    code = "unsupported-version"


class DuplicateSession(ProtocolError):
    """A session with this peer is already open; the newer one is refused (not a violation)."""

    code = "duplicate-session"


class NoSession(ProtocolError):
    """A lane from a peer that has no main session open here; refused (not a violation)."""

    code = "no-session"


class MisplacedLane(RemoteProtocolError):
    """A lane number in the responder's HELLO: only the side that dialled opens lanes."""

    code = "bad-message"


class RequestViolation(RemoteProtocolError):
    """The peer broke the request rules (ids, limits, DATA or END that do not match)."""

    code = "bad-request"


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerAuthenticated:
    """The peer proved its key; call accept() or reject() next."""

    peer_id: PeerId
    public_key: bytes


@dataclass(frozen=True, slots=True)
class HelloReceived:
    hello: Hello


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Any message after HELLO that the application handles (PING is answered here)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The session is over; `error_code` is set when it ended on a violation."""

    reason: str
    error_code: str | None
    by_peer: bool


@dataclass(frozen=True, slots=True)
class LargeFrame:
    """A frame that is costly to decode (a big CATALOG), handed out undecoded.

    Call `decode()` wherever it may take its time (it is pure, so a worker
    thread will do), then give its result to `Connection.receive_decoded`
    before reading on.
    """

    payload: bytes

    def decode(self) -> Message | RemoteProtocolError:
        """The message, or the violation that the payload is."""
        try:
            return decode_message(self.payload)
        except RemoteProtocolError as exc:
            return exc


class NeedData(Enum):
    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA
Event: TypeAlias = PeerAuthenticated | HelloReceived | MessageReceived | ConnectionClosed | LargeFrame
