"""One peer session, h11-style: bytes in, events out, messages in, bytes out.

The Connection owns the secure channel, proves our identity, checks the peer's,
enforces message order and request bookkeeping, and turns every violation by
the peer into a ConnectionClosed event (after queueing an ERROR for it). It does
no I/O: the caller feeds `receive_data`, drains `next_event` until NEED_DATA,
and writes `data_to_send()` to the socket.

This module is the session's front: the states, events and errors it hands
out are defined in `events.py`, the request rules of an open session in
`requests.py`, and all of them can be imported from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from shoal.protocol.format.identity import PeerId, public_key_bytes, sign, verify
from shoal.protocol.wire.channel import (
    MAX_RECORD_PLAINTEXT,
    RecordHandOff,
    Role,
    SealJob,
    SecureChannel,
    auth_transcript,
)
from shoal.protocol.wire.events import (
    NEED_DATA,
    TRANSITIONS,
    AuthenticationFailed,
    ConnectionClosed,
    DuplicateSession,
    Event,
    HelloReceived,
    LargeFrame,
    MessageReceived,
    MisplacedLane,
    NeedData,
    NoSession,
    PeerAuthenticated,
    RequestViolation,
    SelfConnection,
    State,
    Step,
    UnexpectedMessage,
    UnsupportedVersion,
)
from shoal.protocol.wire.framing import HEADER_SIZE, MAX_FRAME_SIZE, FrameDecoder
from shoal.protocol.wire.messages import (
    MAX_TEXT_BYTES,
    PROTOCOL_VERSION,
    Auth,
    Bye,
    Cancel,
    Catalog,
    Data,
    DataRuns,
    End,
    Error,
    GetChunks,
    GetObjects,
    GetRuns,
    Hello,
    Limit,
    Message,
    Ping,
    Pong,
    data_parts,
    data_runs_parts,
    decode_message,
    decode_owned,
    encode_message_parts,
    starts_as_data,
)
from shoal.protocol.wire.requests import MAX_OUTSTANDING_REQUESTS, Requests, RequestTable

__all__ = [
    "DEFER_DECODE_SIZE", "MAX_OUTSTANDING_REQUESTS", "NEED_DATA", "PRE_OPEN_FRAME_LIMIT", "TRANSITIONS", "UNTRUSTED",
    "AuthenticationFailed", "Connection", "ConnectionClosed", "DuplicateSession", "Event", "HelloReceived",
    "LargeFrame", "MessageReceived", "MisplacedLane", "NeedData", "NoSession", "PeerAuthenticated", "RequestTable",
    "RequestViolation",
    "SelfConnection", "State", "Step", "UnexpectedMessage", "UnsupportedVersion",
]

#: AUTH, HELLO, ERROR and BYE are small; an unauthenticated peer gets no more.
PRE_OPEN_FRAME_LIMIT = 4096
#: Frames larger than this, DATA aside, are handed out undecoded (LargeFrame): a
#: CATALOG near the frame limit takes about a second to decode, too long for an
#: event loop. DATA and DATA_RUNS decode in a copy whatever their size.
DEFER_DECODE_SIZE = 64 * 1024
UNTRUSTED = "untrusted"


class Connection:
    """The protocol state of one peer session (either side)."""

    def __init__(self, role: Role, private_key: Ed25519PrivateKey) -> None:
        self.role = role
        self._private_key = private_key
        self.local_public_key = public_key_bytes(private_key)
        self.local_peer_id = PeerId.from_public_key(self.local_public_key)
        self._requests = Requests()
        #: Our requests open at the peer, and the peer's open at us (read-only for the application).
        self.sent_requests = self._requests.sent
        self.received_requests = self._requests.received
        self.peer_hello: Hello | None = None
        #: The lane this connection is (0: a main session), known once the initiator's HELLO is sent or received.
        self.lane = 0
        self._channel = SecureChannel(role)
        # Until the peer's HELLO only small frames are allowed, and the limit is
        # applied to the declared length, before any of the payload is buffered.
        self._frames = FrameDecoder(max_size=PRE_OPEN_FRAME_LIMIT)
        self._state = State.HANDSHAKE
        self._peer: PeerAuthenticated | None = None
        self._decision_pending = False
        self._decode_pending = False
        #: The event of a LargeFrame decoded elsewhere, returned by the next next_event().
        self._decoded: Event | None = None
        self._hello_sent = False
        self._eof = False
        self._closed: ConnectionClosed | None = None
        #: The large frame's room lent with the channel's records (hand_off_records).
        self._lent: memoryview | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def peer_id(self) -> PeerId | None:
        """The peer's proven id, once its AUTH has verified."""
        return self._peer.peer_id if self._peer else None

    @property
    def peer_public_key(self) -> bytes | None:
        return self._peer.public_key if self._peer else None

    @property
    def inside_frame(self) -> bool:
        """Whether part of a record or frame has arrived and the rest has not.

        Meaningful once next_event() has returned NEED_DATA; the keepalive rule
        (shoal.protocol.wire.liveness) gives a peer less time to finish a frame than
        to say something new.
        """
        return bool(self._frames.buffered or self._channel.buffered)

    def trim(self) -> None:
        """Give back the buffers kept for large frames and sealed runs; for a quiet connection."""
        self._frames.spares.clear()
        self._channel.sealed.clear()

    def start(self) -> None:
        """Queue the initiator's first handshake message."""
        if self.role is not Role.INITIATOR:
            raise LocalProtocolError("only the initiator starts a connection")
        self._channel.start()

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the socket; b"" means the peer closed its side."""
        if self._closed is not None:
            return
        if self._eof:
            raise LocalProtocolError("received data after end of input")
        if self._lent is not None:
            raise LocalProtocolError("take the handed-off records back before feeding more bytes")
        if not data:
            self._eof = True
            return
        self._channel.receive_data(data)

    def next_event(self) -> Event | NeedData:
        """The next event, NEED_DATA when more bytes are needed, or the closing event for good."""
        if self._closed is not None:
            return self._closed
        if self._decision_pending:
            raise LocalProtocolError("accept() or reject() the authenticated peer before reading on")
        if self._decode_pending:
            raise LocalProtocolError("give the LargeFrame's decode() to receive_decoded() before reading on")
        if self._lent is not None:
            raise LocalProtocolError("take the handed-off records back before reading on")
        if self._decoded is not None:
            event, self._decoded = self._decoded, None
            return event
        try:
            return self._next_event()
        except ProtocolError as exc:
            return self._fail(exc)

    def receive_decoded(self, decoded: Message | RemoteProtocolError) -> None:
        """Hand back the result of the last LargeFrame's decode(); next_event() goes on from there."""
        if self._closed is not None:
            return  # closed (e.g. by close()) while the frame was being decoded
        if not self._decode_pending:
            raise LocalProtocolError("receive_decoded() is only valid right after a LargeFrame")
        self._decode_pending = False
        try:
            if isinstance(decoded, RemoteProtocolError):
                raise decoded
            self._decoded = self._handle_message(decoded)
        except ProtocolError as exc:
            self._fail(exc)

    def hand_off_records(self, wire: bytearray) -> tuple[memoryview, RecordHandOff] | None:
        """Lend the opening of the next records to other code while they all belong to a
        large frame, or None (read on with next_event). Call after NEED_DATA.

        The borrower opens whole records in order into the room returned (what the frame
        still lacks), stops before one that does not fit, and gives back with
        `take_back_records`; the received bytes not yet opened move to the head of `wire`.
        """
        if self._closed is not None or self._eof or self._state is not State.OPEN or self._lent is not None:
            return None
        if self._decoded is not None or self._decode_pending:
            return None
        room = self._frames.own_room()
        if room < MAX_RECORD_PLAINTEXT:
            return None
        handoff = self._channel.hand_off(wire)
        self._lent = self._frames.reserve(room)
        return self._lent, handoff

    def take_back_records(self, records: int, written: int, left: bytes | bytearray | memoryview) -> None:
        """End a hand-off: `records` were opened, `written` plaintext bytes put in the room, and
        `left` received bytes are still to open (a record the borrower failed to open among
        them: next_event fails on it)."""
        if self._lent is None:
            raise LocalProtocolError("no records are handed off")
        if written > len(self._lent):
            raise LocalProtocolError(f"{written} bytes written into a room of {len(self._lent)}")
        self._lent.release()
        self._lent = None
        self._frames.commit(written)
        self._channel.take_back(records, left)

    def accept(self) -> None:
        """Trust the authenticated peer; a responder now proves its own identity."""
        self._end_decision("accept")
        self._advance(Step.ACCEPTED)
        if self.role is Role.RESPONDER:
            self._write(self._auth_message())

    def reject(self, reason: str = "this daemon does not trust your peer id") -> None:
        """Refuse the authenticated peer; a responder reveals nothing about itself."""
        self._end_decision("reject")
        self._write(Error(UNTRUSTED, _clip(reason, MAX_TEXT_BYTES)))
        self._finish(Step.CLOSE, ConnectionClosed(reason, UNTRUSTED, by_peer=False))

    def send(self, message: Message) -> None:
        """Queue `message`; LocalProtocolError if the protocol does not allow it now."""
        self._check_open()
        if isinstance(message, (Auth, Error, Bye)):
            raise LocalProtocolError(f"{message.TYPE.name} is sent by accept(), fail() or close(), not send()")
        if isinstance(message, Hello):
            self._mark_hello_sent(message)
        else:
            self._check_hello_sent(message.TYPE.name)
        if self.lane and isinstance(message, _MAIN_SESSION_ONLY):
            raise LocalProtocolError(f"{message.TYPE.name} is not sent on a lane")
        if self._requests.track(message):
            self._write(message)

    def send_data(self, req: int, oid: bytes, data: bytes | bytearray) -> None:
        """Queue DATA for `data` held in bytes or a bytearray (copied before this returns);
        otherwise as send(Data(req, oid, data))."""
        parts = data_parts(req, oid, data)
        self._check_open()
        self._check_hello_sent("DATA")
        self._requests.settle(req, oid)
        self._write_parts("DATA", parts)

    def send_data_runs(self, req: int, firsts: tuple[bytes, ...], data: bytearray | memoryview) -> None:
        """Queue DATA_RUNS for the runs named `firsts` of the peer's GET_RUNS `req`, their bytes
        back to back in `data` (a reusable buffer's), which is copied before this returns, or,
        where seals are deferred, when the jobs `take_seal_jobs` hands out have run."""
        parts = data_runs_parts(req, firsts, data)
        self._check_open()
        self._check_hello_sent("DATA_RUNS")
        self._requests.settle(req, *firsts, runs=True)
        self._write_parts("DATA_RUNS", parts)

    def defer_seals(self) -> None:
        """From now on, leave sealing the records of large pieces (runs' bytes) to whoever runs
        the jobs of `take_seal_jobs` (off the event loop); `data_to_send` runs those not taken."""
        self._channel.defer_seals = True

    def take_seal_jobs(self) -> list[SealJob]:
        """The deferred seals: run them all before the bytes now queued are sent."""
        return self._channel.take_seal_jobs()

    def send_end(self, req: int) -> None:
        """Queue END for the peer's request `req`, listing as missing every id not sent.

        This is how a request ends whether it was answered in full, in part, or
        cancelled: SPEC ("Cancelling") asks for END after CANCEL too, since only
        END frees the request id on both sides.
        """
        self._check_open()
        if req not in self.received_requests:
            raise LocalProtocolError(f"request {req} is not open")
        self.send(End(req, self.received_requests.pending_in_order(req)))

    def _check_open(self) -> None:
        if self._closed is not None:
            raise LocalProtocolError("the connection is closed")

    def _check_hello_sent(self, name: str) -> None:
        if not self._hello_sent:
            raise LocalProtocolError(f"{name} before our HELLO")

    def close(self, reason: str = "closing") -> None:
        """End the session politely with BYE (if the channel is up)."""
        if self._closed is not None:
            return
        if self._channel.established:
            self._write(Bye(_clip(reason, MAX_TEXT_BYTES)))
        self._finish(Step.CLOSE, ConnectionClosed(reason, None, by_peer=False))

    def fail(self, error: ProtocolError) -> None:
        """End the session on a violation the application found (e.g. DATA with a wrong hash)."""
        self._fail(error)

    def data_to_send(self) -> bytes | bytearray:
        """Every byte queued for the peer, encrypted; send it all in one write."""
        return self._channel.data_to_send()

    def data_to_send_parts(self) -> list[bytes | bytearray | memoryview]:
        """The same bytes as `data_to_send`, uncopied: buffers to send in this order."""
        return self._channel.data_to_send_parts()

    def new_request_id(self) -> int:
        """A request id not open on our side."""
        return self._requests.new_id()

    def _next_event(self) -> Event | NeedData:
        while True:
            frame = self._frames.next_view()
            if frame is not None:
                with frame:
                    if self._state is State.OPEN and len(frame) > DEFER_DECODE_SIZE and not starts_as_data(frame):
                        self._decode_pending = True
                        return LargeFrame(bytes(frame))
                    event = self._handle_frame(frame)
                if event is not None:
                    return event
            elif not self._pull():
                return self._end_of_input() if self._eof else NEED_DATA

    def _pull(self) -> bool:
        """Move decrypted plaintext into the frame decoder; whether anything progressed."""
        progressed = self._channel.read_into(self._frames)
        secured = self._state is State.HANDSHAKE and self._channel.established
        if secured:
            self._advance(Step.SECURED)
            if self.role is Role.INITIATOR:
                self._write(self._auth_message())
        return secured or progressed

    def _end_of_input(self) -> ConnectionClosed:
        if self._frames.buffered or self._channel.buffered:
            raise RemoteProtocolError("the connection ended inside a frame", code="truncated")
        return self._finish(Step.CLOSE, ConnectionClosed("the peer closed the connection", None, by_peer=True))

    def _handle_frame(self, payload: memoryview) -> Event | None:
        if self._frames.owns(payload):
            return self._handle_message(decode_message(payload))
        # A large frame in a buffer of its own: a DATA_RUNS's bytes go on from there uncopied.
        return self._handle_message(decode_owned(payload))

    def _handle_message(self, message: Message) -> Event | None:
        if isinstance(message, Bye):
            return self._finish(Step.CLOSE, ConnectionClosed(message.reason, None, by_peer=True))
        if isinstance(message, Error):
            return self._finish(Step.FAIL, ConnectionClosed(message.message, message.code, by_peer=True))
        if self._state is State.AUTHENTICATING:
            return self._on_auth(message)
        if self._state is State.AWAIT_HELLO:
            return self._on_hello(message)
        handler = _RECEIVE_HANDLERS.get(type(message))
        if handler is None:
            raise UnexpectedMessage(f"{message.TYPE.name} after HELLO")
        return handler(self, message)

    def _on_auth(self, message: Message) -> PeerAuthenticated:
        if not isinstance(message, Auth):
            raise UnexpectedMessage(f"{message.TYPE.name} before authentication")
        peer_role = Role.RESPONDER if self.role is Role.INITIATOR else Role.INITIATOR
        transcript = auth_transcript(peer_role, self._channel.handshake_hash)
        if not verify(message.public_key, transcript, message.signature):
            raise AuthenticationFailed("the peer's AUTH signature does not match this channel")
        if message.public_key == self.local_public_key:
            raise SelfConnection("the peer holds our own identity key")
        self._peer = PeerAuthenticated(PeerId.from_public_key(message.public_key), message.public_key)
        self._decision_pending = True
        return self._peer

    def _on_hello(self, message: Message) -> HelloReceived:
        if not isinstance(message, Hello):
            raise UnexpectedMessage(f"{message.TYPE.name} before HELLO")
        if message.version != PROTOCOL_VERSION:
            raise UnsupportedVersion(
                f"peer speaks shoal protocol version {message.version}, this daemon speaks {PROTOCOL_VERSION}"
                " (version 3 had no lanes): upgrade shoal on the machine with the older version"
            )
        if message.lane and self.role is Role.INITIATOR:
            raise MisplacedLane(f"the responder's HELLO names lane {message.lane}; only the side that dialled opens lanes")
        self.peer_hello = message
        if self.role is Role.RESPONDER:
            self.lane = message.lane
        self._advance(Step.HELLO_RECEIVED)
        self._frames.max_size = MAX_FRAME_SIZE
        return HelloReceived(message)

    def _on_request(self, message: GetObjects | GetChunks | GetRuns | Data | DataRuns | End | Cancel) -> MessageReceived | None:
        return MessageReceived(message) if self._requests.receive(message) else None

    def _on_ping(self, message: Ping) -> None:
        self._write(Pong(message.nonce))

    def _surface(self, message: Message) -> MessageReceived:
        return MessageReceived(message)

    def _surface_on_main(self, message: Catalog | Limit) -> MessageReceived:
        # A lane carries requests and answers only: what a peer offers is its main session's business.
        if self.lane:
            raise UnexpectedMessage(f"{message.TYPE.name} on lane {self.lane}")
        return MessageReceived(message)

    def _mark_hello_sent(self, message: Hello) -> None:
        if self._state not in (State.AWAIT_HELLO, State.OPEN):
            raise LocalProtocolError("HELLO is sent after accept()")
        if self._hello_sent:
            raise LocalProtocolError("HELLO is sent once")
        if message.version != PROTOCOL_VERSION:
            raise LocalProtocolError(f"this implementation speaks protocol version {PROTOCOL_VERSION}")
        if message.lane and self.role is Role.RESPONDER:
            raise LocalProtocolError("only the initiator's HELLO names a lane")
        self._hello_sent = True
        if self.role is Role.INITIATOR:
            self.lane = message.lane

    def _auth_message(self) -> Auth:
        transcript = auth_transcript(self.role, self._channel.handshake_hash)
        return Auth(self.local_public_key, sign(self._private_key, transcript))

    def _end_decision(self, action: str) -> None:
        if not self._decision_pending:
            raise LocalProtocolError(f"{action}() is only valid right after PeerAuthenticated")
        self._decision_pending = False

    def _write(self, message: Message) -> None:
        self._write_parts(message.TYPE.name, encode_message_parts(message))

    def _write_parts(self, name: str, parts: tuple[bytes | bytearray | memoryview, ...]) -> None:
        size = sum(map(len, parts))
        if size > MAX_FRAME_SIZE:
            raise LocalProtocolError(f"{name} of {size} bytes exceeds the {MAX_FRAME_SIZE}-byte frame limit")
        self._channel.write(size.to_bytes(HEADER_SIZE, "big"), *parts)

    def _fail(self, error: ProtocolError) -> ConnectionClosed:
        if self._closed is not None:
            return self._closed
        if self._channel.established:
            self._write(Error(error.code, _clip(str(error), MAX_TEXT_BYTES)))
        return self._finish(Step.FAIL, ConnectionClosed(str(error), error.code, by_peer=False))

    def _finish(self, step: Step, event: ConnectionClosed) -> ConnectionClosed:
        self._decision_pending = False
        self._decode_pending = False
        self._advance(step)
        self._closed = event
        return event

    def _advance(self, step: Step) -> None:
        try:
            self._state = TRANSITIONS[self._state, step]
        except KeyError:
            raise LocalProtocolError(f"{step.value} is not possible in state {self._state.value}") from None


_RECEIVE_HANDLERS: dict[type, Callable[[Connection, Any], Event | None]] = {
    GetObjects: Connection._on_request,
    GetChunks: Connection._on_request,
    GetRuns: Connection._on_request,
    Data: Connection._on_request,
    DataRuns: Connection._on_request,
    End: Connection._on_request,
    Cancel: Connection._on_request,
    Ping: Connection._on_ping,
    Pong: Connection._surface,
    Catalog: Connection._surface_on_main,
    Limit: Connection._surface_on_main,
}
#: What only a main session carries (SPEC "Lanes").
_MAIN_SESSION_ONLY = (Catalog, Limit)


def _clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 without splitting a character."""
    return text.encode("utf-8", "replace")[:max_bytes].decode("utf-8", "ignore")
