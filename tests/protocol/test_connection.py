"""Peer sessions end to end in memory: authentication, order rules, requests, closing."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.protocol.errors import IntegrityError, LocalProtocolError
from shoal.protocol.format.identity import PeerId, public_key_bytes, sign
from shoal.protocol.wire.channel import Role, SecureChannel, auth_transcript
from shoal.protocol.wire.connection import (
    DEFER_DECODE_SIZE,
    MAX_OUTSTANDING_REQUESTS,
    NEED_DATA,
    PRE_OPEN_FRAME_LIMIT,
    TRANSITIONS,
    Connection,
    ConnectionClosed,
    Event,
    HelloReceived,
    LargeFrame,
    MessageReceived,
    PeerAuthenticated,
    State,
)
from shoal.protocol.wire.framing import MAX_FRAME_SIZE, FrameDecoder, encode_frame
from shoal.protocol.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    Bye,
    Cancel,
    Catalog,
    CatalogEntry,
    Data,
    DataRuns,
    End,
    Error,
    GetChunks,
    GetObjects,
    GetRuns,
    Hello,
    InvalidMessage,
    Limit,
    Message,
    Ping,
    Pong,
    Run,
    decode_message,
    encode_message,
)

A, B, C = bytes([0xAA]) * 32, bytes([0xBB]) * 32, bytes([0xCC]) * 32


def drain(conn: Connection) -> list[Event]:
    """Events until NEED_DATA, stopping where the caller must act (decision, decoding or close)."""
    events: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, (PeerAuthenticated, LargeFrame, ConnectionClosed)):
            break
    return events


def deliver(src: Connection, dst: Connection) -> list[Event]:
    dst.receive_data(src.data_to_send())
    return drain(dst)


def open_pair() -> tuple[Connection, Connection]:
    """(initiator, responder) after handshake, mutual authentication and HELLO."""
    initiator = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    responder = Connection(Role.RESPONDER, Ed25519PrivateKey.generate())
    initiator.start()
    assert deliver(initiator, responder) == []
    assert deliver(responder, initiator) == []
    assert deliver(initiator, responder) == [PeerAuthenticated(initiator.local_peer_id, initiator.local_public_key)]
    responder.accept()
    responder.send(Hello(PROTOCOL_VERSION, "responder", 22000))
    assert deliver(responder, initiator) == [PeerAuthenticated(responder.local_peer_id, responder.local_public_key)]
    initiator.accept()
    assert drain(initiator) == [HelloReceived(Hello(PROTOCOL_VERSION, "responder", 22000))]
    initiator.send(Hello(PROTOCOL_VERSION, "initiator", None))
    assert deliver(initiator, responder) == [HelloReceived(Hello(PROTOCOL_VERSION, "initiator", None))]
    return initiator, responder


class RawPeer:
    """A hand-driven peer with a real channel and key that sends whatever a test asks."""

    def __init__(self, role: Role, key: Ed25519PrivateKey | None = None) -> None:
        self.role = role
        self.key = key or Ed25519PrivateKey.generate()
        self.channel = SecureChannel(role)
        self.frames = FrameDecoder()

    def auth(self) -> Auth:
        transcript = auth_transcript(self.role, self.channel.handshake_hash)
        return Auth(public_key_bytes(self.key), sign(self.key, transcript))

    def send(self, *messages: Message) -> None:
        for message in messages:
            self.channel.write(encode_frame(encode_message(message)))

    def to(self, conn: Connection) -> list[Event]:
        conn.receive_data(self.channel.data_to_send())
        return drain(conn)

    def receive(self, conn: Connection) -> list[Message]:
        self.channel.receive_data(conn.data_to_send())
        for plaintext in self.channel.read():
            self.frames.feed(plaintext)
        messages = []
        while (frame := self.frames.next_frame()) is not None:
            messages.append(decode_message(frame))
        return messages


def raw_initiator_secured(responder: Connection) -> RawPeer:
    raw = RawPeer(Role.INITIATOR)
    raw.channel.start()
    raw.to(responder)
    raw.receive(responder)
    assert raw.channel.established
    return raw


def raw_initiator_open(responder: Connection) -> RawPeer:
    """A raw initiator that completed authentication and HELLO with a real responder."""
    raw = raw_initiator_secured(responder)
    raw.send(raw.auth())
    assert isinstance(raw.to(responder)[0], PeerAuthenticated)
    responder.accept()
    responder.send(Hello(PROTOCOL_VERSION, "real", None))
    assert [type(m) for m in raw.receive(responder)] == [Auth, Hello]
    raw.send(Hello(PROTOCOL_VERSION, "raw", None))
    assert raw.to(responder) == [HelloReceived(Hello(PROTOCOL_VERSION, "raw", None))]
    return raw


def responder() -> Connection:
    return Connection(Role.RESPONDER, Ed25519PrivateKey.generate())


def assert_violation(events: list[Event], conn: Connection, raw: RawPeer, code: str) -> None:
    """The connection closed on `code` and told the peer so with an ERROR."""
    assert len(events) >= 1 and isinstance(events[-1], ConnectionClosed)
    closed = events[-1]
    assert (closed.error_code, closed.by_peer) == (code, False)
    assert conn.state is State.ERROR
    assert conn.next_event() == closed
    sent = raw.receive(conn)
    assert isinstance(sent[-1], Error) and sent[-1].code == code


def test_transition_table_reaches_open_only_in_order() -> None:
    path = [State.HANDSHAKE]
    for step in ("secured", "accepted", "hello-received"):
        path.append(next(new for (old, s), new in TRANSITIONS.items() if old is path[-1] and s.value == step))
    assert path == [State.HANDSHAKE, State.AUTHENTICATING, State.AWAIT_HELLO, State.OPEN]
    assert not any(old in (State.CLOSED, State.ERROR) for old, _ in TRANSITIONS)


def test_full_session_with_a_chunk_request() -> None:
    initiator, responder = open_pair()
    assert initiator.state is responder.state is State.OPEN
    assert initiator.peer_id == responder.local_peer_id and responder.peer_id == initiator.local_peer_id
    assert initiator.peer_hello == Hello(PROTOCOL_VERSION, "responder", 22000)

    req = initiator.new_request_id()
    initiator.send(GetChunks(req, (A, B, C)))
    assert list(initiator.sent_requests) == [req]
    assert deliver(initiator, responder) == [MessageReceived(GetChunks(req, (A, B, C)))]
    assert responder.received_requests.pending(req) == {A, B, C}

    responder.send(Data(req, B, b"bee"))
    responder.send(Data(req, A, b"ay"))
    responder.send(End(req, (C,)))
    assert list(responder.received_requests) == []
    events = deliver(responder, initiator)
    assert [e.message for e in events if isinstance(e, MessageReceived)] == [
        Data(req, B, b"bee"),
        Data(req, A, b"ay"),
        End(req, (C,)),
    ]
    assert list(initiator.sent_requests) == []


def test_large_data_crosses_many_records() -> None:
    initiator, responder = open_pair()
    payload = os.urandom(5 * 65536 + 123)
    initiator.send(GetObjects(9, (A,)))
    deliver(initiator, responder)
    responder.send(Data(9, A, payload))
    responder.send(End(9, ()))
    events = deliver(responder, initiator)
    assert events == [MessageReceived(Data(9, A, payload)), MessageReceived(End(9, ()))]


def test_data_from_a_bytearray_goes_out_as_data_from_bytes() -> None:
    initiator, responder = open_pair()
    payload = bytearray(os.urandom(2 * 65536 + 7))
    sent = bytes(payload)
    initiator.send(GetChunks(4, (A, B)))
    deliver(initiator, responder)
    responder.send_data(4, A, payload)
    payload[:] = bytes(len(payload))  # the sender may reuse its buffer at once
    responder.send_data(4, B, b"bee")
    responder.send(End(4, ()))
    events = deliver(responder, initiator)
    assert events == [
        MessageReceived(Data(4, A, sent)), MessageReceived(Data(4, B, b"bee")), MessageReceived(End(4, ()))
    ]


def test_data_from_a_buffer_is_checked_as_data_is() -> None:
    initiator, responder = open_pair()
    initiator.send(GetChunks(4, (A,)))
    deliver(initiator, responder)
    with pytest.raises(LocalProtocolError, match="does not ask for"):
        responder.send_data(4, B, bytearray(3))
    with pytest.raises(LocalProtocolError, match="not open"):
        responder.send_data(5, A, bytearray(3))
    for req, oid, data in ((4, A[:31], bytearray(3)), (-1, A, bytearray(3)), (4, A, memoryview(b"abc")), (4, A, "abc")):
        with pytest.raises(InvalidMessage):
            responder.send_data(req, oid, data)  # type: ignore[arg-type]
    assert responder.received_requests.pending(4) == {A}
    responder.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        responder.send_data(4, A, bytearray(3))
    fresh = Connection(Role.RESPONDER, Ed25519PrivateKey.generate())
    with pytest.raises(LocalProtocolError, match="before our HELLO"):
        fresh.send_data(4, A, bytearray(3))


def test_catalog_and_pong_surface_and_ping_is_answered() -> None:
    initiator, responder = open_pair()
    catalog = Catalog((CatalogEntry("mnist", A, 1, 100, 2, 1_790_000_000, (A,)),))
    responder.send(catalog)
    initiator.send(Ping(42))
    assert deliver(initiator, responder) == []
    assert deliver(responder, initiator) == [MessageReceived(catalog), MessageReceived(Pong(42))]


def big_catalog(entries: int) -> Catalog:
    return Catalog(tuple(CatalogEntry(f"ds-{i:06}", A, 1, i, 1, 1_790_000_000, (B,)) for i in range(entries)))


def test_a_large_catalog_is_handed_out_to_be_decoded_elsewhere() -> None:
    initiator, responder_conn = open_pair()
    catalog = big_catalog(2000)
    assert len(encode_message(catalog)) > DEFER_DECODE_SIZE
    responder_conn.send(catalog)
    responder_conn.send(Pong(7))
    initiator.receive_data(responder_conn.data_to_send())
    large = initiator.next_event()
    assert isinstance(large, LargeFrame)
    with pytest.raises(LocalProtocolError, match="receive_decoded"):
        initiator.next_event()
    initiator.receive_decoded(large.decode())
    assert drain(initiator) == [MessageReceived(catalog), MessageReceived(Pong(7))]


def test_a_large_frame_that_does_not_decode_is_a_violation_reported_with_error() -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.channel.write(encode_frame(b"\x92\x03\xdc" + bytes(DEFER_DECODE_SIZE)))
    events = raw.to(conn)
    assert len(events) == 1 and isinstance(events[0], LargeFrame)
    conn.receive_decoded(events[0].decode())
    assert_violation(drain(conn), conn, raw, "bad-message")


def test_large_data_and_small_frames_are_decoded_at_once() -> None:
    initiator, responder_conn = open_pair()
    initiator.send(GetChunks(1, (A,)))
    deliver(initiator, responder_conn)
    responder_conn.send(Data(1, A, bytes(4 * DEFER_DECODE_SIZE)))
    small = big_catalog(3)
    responder_conn.send(small)
    events = deliver(responder_conn, initiator)
    assert events == [MessageReceived(Data(1, A, bytes(4 * DEFER_DECODE_SIZE))), MessageReceived(small)]


def test_receive_decoded_is_only_for_a_large_frame() -> None:
    initiator, _ = open_pair()
    with pytest.raises(LocalProtocolError, match="LargeFrame"):
        initiator.receive_decoded(Pong(1))


def test_rejecting_responder_reveals_nothing_about_itself() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(raw.auth())
    assert isinstance(raw.to(conn)[0], PeerAuthenticated)
    conn.reject()
    assert conn.state is State.CLOSED
    raw.channel.receive_data(conn.data_to_send())
    sent_plaintext = b"".join(raw.channel.read())
    assert conn.local_public_key not in sent_plaintext
    assert conn.local_peer_id.raw not in sent_plaintext
    raw.frames.feed(sent_plaintext)
    assert decode_message(raw.frames.next_frame() or b"") == Error("untrusted", "this daemon does not trust your peer id")
    assert raw.frames.next_frame() is None


def test_rejected_initiator_learns_only_the_refusal() -> None:
    initiator, responder_conn = Connection(Role.INITIATOR, Ed25519PrivateKey.generate()), responder()
    initiator.start()
    deliver(initiator, responder_conn)
    deliver(responder_conn, initiator)
    deliver(initiator, responder_conn)
    responder_conn.reject()
    events = deliver(responder_conn, initiator)
    assert events == [ConnectionClosed("this daemon does not trust your peer id", "untrusted", by_peer=True)]
    assert initiator.peer_id is None


def test_initiator_may_reject_the_responder() -> None:
    initiator = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    responder_conn = responder()
    initiator.start()
    deliver(initiator, responder_conn)
    deliver(responder_conn, initiator)
    deliver(initiator, responder_conn)
    responder_conn.accept()
    assert isinstance(deliver(responder_conn, initiator)[0], PeerAuthenticated)
    initiator.reject("not the peer I dialled")
    assert deliver(initiator, responder_conn) == [ConnectionClosed("not the peer I dialled", "untrusted", by_peer=True)]


def raw_responder_secured() -> tuple[Connection, RawPeer]:
    """An initiator, and a raw responder past the Noise handshake with it."""
    initiator = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    raw = RawPeer(Role.RESPONDER)
    initiator.start()
    raw.channel.receive_data(initiator.data_to_send())
    raw.channel.read()
    initiator.receive_data(raw.channel.data_to_send())
    return initiator, raw


def test_reflected_auth_is_refused() -> None:
    initiator, raw = raw_responder_secured()
    assert drain(initiator) == []
    (initiator_auth,) = raw.receive(initiator)
    assert isinstance(initiator_auth, Auth)
    raw.send(initiator_auth)
    events = raw.to(initiator)
    assert events == [ConnectionClosed(events[0].reason, "bad-auth", by_peer=False)]
    assert initiator.peer_id is None


def test_auth_replayed_from_another_session_is_refused() -> None:
    first = responder()
    raw = raw_initiator_secured(first)
    old_auth = raw.auth()
    conn = responder()
    replayer = raw_initiator_secured(conn)
    replayer.send(old_auth)
    assert_violation(replayer.to(conn), conn, replayer, "bad-auth")


def test_malformed_auth_is_reported_with_error() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.channel.write(encode_frame(b"\x93\x01\xc4\x1f" + bytes(31) + b"\xc4\x40" + bytes(64)))  # a 31-byte key
    assert_violation(raw.to(conn), conn, raw, "bad-message")


def test_initiator_reports_a_bad_responder_auth_with_error() -> None:
    """The ERROR goes out once the channel has keys, whichever side finds the violation."""
    initiator, raw = raw_responder_secured()
    drain(initiator)
    raw.receive(initiator)
    raw.send(Auth(public_key_bytes(raw.key), bytes(64)))
    assert_violation(raw.to(initiator), initiator, raw, "bad-auth")


def test_connecting_to_ourselves_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    conn = Connection(Role.RESPONDER, key)
    raw = RawPeer(Role.INITIATOR, key)
    raw.channel.start()
    raw.to(conn)
    raw.receive(conn)
    raw.send(raw.auth())
    assert_violation(raw.to(conn), conn, raw, "self-connection")


def test_tampered_record_closes_both_sides() -> None:
    initiator, responder_conn = open_pair()
    initiator.send(Ping(1))
    wire = bytearray(initiator.data_to_send())
    wire[-3] ^= 0x40
    responder_conn.receive_data(bytes(wire))
    (closed,) = drain(responder_conn)
    assert closed == ConnectionClosed(closed.reason, "bad-record", by_peer=False)
    assert deliver(responder_conn, initiator) == [ConnectionClosed(closed.reason, "bad-record", by_peer=True)]
    assert initiator.state is State.ERROR


def test_anything_but_auth_before_authentication_is_a_violation() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(Hello(PROTOCOL_VERSION, "eager", None))
    assert_violation(raw.to(conn), conn, raw, "unexpected-message")


def test_anything_but_hello_before_hello_is_a_violation() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(raw.auth())
    raw.to(conn)
    conn.accept()
    raw.send(Ping(1))
    assert_violation(raw.to(conn), conn, raw, "unexpected-message")


def test_second_hello_is_a_violation() -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.send(Hello(PROTOCOL_VERSION, "again", None))
    assert_violation(raw.to(conn), conn, raw, "unexpected-message")


def test_a_version_3_peer_is_refused_and_told_to_upgrade() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(raw.auth())
    raw.to(conn)
    conn.accept()
    raw.send(Hello(3, "old", None))
    events = raw.to(conn)
    assert_violation(events, conn, raw, "unsupported-version")
    closed = events[-1]
    assert isinstance(closed, ConnectionClosed)
    assert "version 3," in closed.reason and "version 3 had no lanes" in closed.reason
    assert "upgrade shoal" in closed.reason


def open_lane_pair(lane: int) -> tuple[Connection, Connection]:
    """(initiator, responder) after a HELLO exchange in which the initiator opened `lane`."""
    initiator = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    responder_conn = responder()
    initiator.start()
    deliver(initiator, responder_conn)
    deliver(responder_conn, initiator)
    deliver(initiator, responder_conn)
    responder_conn.accept()
    deliver(responder_conn, initiator)
    initiator.accept()
    initiator.send(Hello(PROTOCOL_VERSION, "worker", None, lane))
    assert deliver(initiator, responder_conn) == [HelloReceived(Hello(PROTOCOL_VERSION, "worker", None, lane))]
    responder_conn.send(Hello(PROTOCOL_VERSION, "daemon", 22000))
    assert deliver(responder_conn, initiator) == [HelloReceived(Hello(PROTOCOL_VERSION, "daemon", 22000))]
    return initiator, responder_conn


def test_both_sides_of_a_lane_know_its_number_and_a_main_session_is_lane_0() -> None:
    initiator, responder_conn = open_lane_pair(7)
    assert (initiator.lane, responder_conn.lane) == (7, 7)
    assert responder_conn.peer_hello is not None and responder_conn.peer_hello.lane == 7
    assert [c.lane for c in open_pair()] == [0, 0]


def test_requests_and_answers_work_on_a_lane() -> None:
    initiator, responder_conn = open_lane_pair(1)
    initiator.send(GetChunks(1, (A,)))
    assert deliver(initiator, responder_conn) == [MessageReceived(GetChunks(1, (A,)))]
    responder_conn.send_data(1, A, b"x")
    responder_conn.send_end(1)
    assert deliver(responder_conn, initiator) == [MessageReceived(Data(1, A, b"x")), MessageReceived(End(1, ()))]
    initiator.send(Ping(5))
    deliver(initiator, responder_conn)
    assert deliver(responder_conn, initiator) == [MessageReceived(Pong(5))]


@pytest.mark.parametrize("message", [Catalog(()), Limit(1000)], ids=lambda m: type(m).__name__)
def test_catalog_and_limit_are_not_sent_on_a_lane(message: Message) -> None:
    initiator, responder_conn = open_lane_pair(2)
    for conn in (initiator, responder_conn):
        with pytest.raises(LocalProtocolError, match="not sent on a lane"):
            conn.send(message)


@pytest.mark.parametrize("message", [Catalog(()), Limit(1000)], ids=lambda m: type(m).__name__)
def test_catalog_or_limit_received_on_a_lane_is_a_violation(message: Message) -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(raw.auth())
    raw.to(conn)
    conn.accept()
    raw.send(Hello(PROTOCOL_VERSION, "worker", None, 4), message)
    events = raw.to(conn)
    assert events[0] == HelloReceived(Hello(PROTOCOL_VERSION, "worker", None, 4))
    assert_violation(events[1:], conn, raw, "unexpected-message")


def test_a_responder_never_names_a_lane() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(raw.auth())
    raw.to(conn)
    conn.accept()
    with pytest.raises(LocalProtocolError, match="only the initiator"):
        conn.send(Hello(PROTOCOL_VERSION, "daemon", None, 1))


def test_a_lane_in_the_responders_hello_is_a_bad_message() -> None:
    initiator, raw = raw_responder_secured()
    raw.send(raw.auth())
    assert isinstance(raw.to(initiator)[0], PeerAuthenticated)
    initiator.accept()
    raw.send(Hello(PROTOCOL_VERSION, "confused", None, 1))
    events = raw.to(initiator)
    assert_violation(events, initiator, raw, "bad-message")
    closed = events[-1]
    assert isinstance(closed, ConnectionClosed) and "only the side that dialled opens lanes" in closed.reason


@pytest.mark.parametrize(
    "messages",
    [
        [Data(5, A, b"unasked")],
        [End(5, ())],
        [GetChunks(1, (A,)), GetChunks(1, (B,))],
        [GetChunks(n, (A,)) for n in range(MAX_OUTSTANDING_REQUESTS + 1)],
    ],
    ids=["data-unknown-request", "end-unknown-request", "duplicate-request-id", "too-many-requests"],
)
def test_request_violations_by_the_peer(messages: list[Message]) -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.send(*messages)
    events = raw.to(conn)
    assert sum(isinstance(e, MessageReceived) for e in events) == len(messages) - 1
    assert_violation(events, conn, raw, "bad-request")


@pytest.mark.parametrize(
    "answer",
    [
        [Data(3, C, b"not asked")],
        [Data(3, A, b"1"), Data(3, A, b"2")],
        [End(3, ())],
        [End(3, (A, B, C))],
        [End(3, (A, B)), Data(3, A, b"after end")],
    ],
    ids=["wrong-id", "repeated-id", "end-without-missing", "end-with-extra", "data-after-end"],
)
def test_answer_violations_by_the_peer(answer: list[Message]) -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    conn.send(GetObjects(3, (A, B)))
    raw.receive(conn)
    raw.send(*answer)
    assert_violation(raw.to(conn), conn, raw, "bad-request")


RUNS = GetRuns(3, (Run((A, B), (2, 3)), Run((B,), (1,)), Run((C, C), (1, 1))))


def test_runs_come_many_to_a_message_and_end_lists_the_rest() -> None:
    initiator, responder_conn = open_pair()
    initiator.send(RUNS)
    assert deliver(initiator, responder_conn) == [MessageReceived(RUNS)]
    responder_conn.send_data_runs(3, (C, A), bytearray(b"ccaabbb"))
    with pytest.raises(LocalProtocolError):
        responder_conn.send_data_runs(3, (B, A), bytearray(b"baabbb"))  # A was sent
    responder_conn.send_end(3)
    events = deliver(responder_conn, initiator)
    assert events == [MessageReceived(DataRuns(3, (C, A), b"ccaabbb")), MessageReceived(End(3, (B,)))]
    assert 3 not in initiator.sent_requests


@pytest.mark.parametrize(
    "answer",
    [
        [DataRuns(3, (A, B, C), b"x"), DataRuns(3, (B,), b"y")],
        [DataRuns(3, (A, bytes(32)), b"xx")],
        [DataRuns(3, (C,), b"cc"), End(3, (A, B, C))],
    ],
    ids=["run-repeated", "not-a-run", "end-lists-a-delivered-run"],
)
def test_run_answer_violations_by_the_peer(answer: list[Message]) -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    conn.send(RUNS)
    raw.receive(conn)
    raw.send(*answer)
    assert_violation(raw.to(conn), conn, raw, "bad-request")


@pytest.mark.parametrize(
    ("request_", "answer"),
    [(RUNS, Data(3, A, b"a run as DATA")), (GetChunks(3, (A,)), DataRuns(3, (A,), b"a chunk as runs"))],
    ids=["data-for-runs", "runs-for-chunks"],
)
def test_each_request_kind_has_its_own_answer(request_: Message, answer: Message) -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    conn.send(request_)
    raw.receive(conn)
    raw.send(answer)
    assert_violation(raw.to(conn), conn, raw, "bad-request")
    initiator, responder_conn = open_pair()
    initiator.send(request_)
    deliver(initiator, responder_conn)
    with pytest.raises(LocalProtocolError, match="is answered with"):
        if isinstance(answer, Data):
            responder_conn.send_data(3, A, answer.data)
        else:
            responder_conn.send_data_runs(3, (A,), bytearray(answer.data))


def test_cancel_is_surfaced_once_and_ignored_for_finished_requests() -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.send(GetChunks(4, (A, B)), Cancel(4), Cancel(4), Cancel(99))
    events = raw.to(conn)
    assert events == [MessageReceived(GetChunks(4, (A, B))), MessageReceived(Cancel(4))]
    assert conn.received_requests.is_cancelled(4)
    conn.send(Data(4, A, b"already read"))
    conn.send(End(4, (B,)))
    assert raw.receive(conn) == [Data(4, A, b"already read"), End(4, (B,))]
    assert 4 not in conn.received_requests


def test_cancelled_request_still_ends_with_end_listing_what_was_not_sent() -> None:
    initiator, responder_conn = open_pair()
    initiator.send(GetChunks(6, (A, B, C)))
    deliver(initiator, responder_conn)
    responder_conn.send(Data(6, B, b"bee"))
    initiator.send(Cancel(6))
    assert deliver(initiator, responder_conn) == [MessageReceived(Cancel(6))]
    responder_conn.send_end(6)
    events = deliver(responder_conn, initiator)
    assert events == [MessageReceived(Data(6, B, b"bee")), MessageReceived(End(6, (A, C)))]
    assert 6 not in initiator.sent_requests and 6 not in responder_conn.received_requests


def test_cancelling_more_requests_than_may_be_open_frees_every_id() -> None:
    """SPEC "Cancelling": END after CANCEL frees the id, so cancels never use up the 32 slots."""
    initiator, responder_conn = open_pair()
    for _ in range(MAX_OUTSTANDING_REQUESTS + 8):
        req = initiator.new_request_id()
        initiator.send(GetChunks(req, (A, B)))
        initiator.send(Cancel(req))
        deliver(initiator, responder_conn)
        responder_conn.send_end(req)
        assert deliver(responder_conn, initiator) == [MessageReceived(End(req, (A, B)))]
    assert len(initiator.sent_requests) == len(responder_conn.received_requests) == 0
    initiator.send(GetChunks(0, (C,)))
    assert deliver(initiator, responder_conn) == [MessageReceived(GetChunks(0, (C,)))]


def test_send_end_is_only_for_an_open_request() -> None:
    initiator, responder_conn = open_pair()
    with pytest.raises(LocalProtocolError, match="not open"):
        responder_conn.send_end(3)


def test_cancel_of_a_finished_request_sends_nothing() -> None:
    initiator, responder_conn = open_pair()
    initiator.send(GetChunks(1, (A,)))
    deliver(initiator, responder_conn)
    responder_conn.send(End(1, (A,)))
    deliver(responder_conn, initiator)
    initiator.send(Cancel(1))
    assert initiator.data_to_send() == b""


def test_request_ids_are_reusable_after_end_and_allocated_around_open_ones() -> None:
    initiator, responder_conn = open_pair()
    first = initiator.new_request_id()
    initiator.send(GetChunks(first, (A,)))
    second = initiator.new_request_id()
    assert second != first
    deliver(initiator, responder_conn)
    responder_conn.send(End(first, (A,)))
    deliver(responder_conn, initiator)
    initiator.send(GetChunks(first, (B,)))
    assert first in initiator.sent_requests


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.channel.write((MAX_FRAME_SIZE + 1).to_bytes(4, "big"))
    assert_violation(raw.to(conn), conn, raw, "frame-too-large")


def test_large_frames_are_refused_before_hello() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.channel.write(encode_frame(bytes(PRE_OPEN_FRAME_LIMIT + 1)))
    assert_violation(raw.to(conn), conn, raw, "frame-too-large")


def test_inside_frame_tells_a_partial_frame_or_record_from_a_quiet_stream() -> None:
    initiator, responder_conn = open_pair()
    assert not responder_conn.inside_frame
    initiator.send(Ping(1))
    wire = initiator.data_to_send()
    responder_conn.receive_data(wire[:5])  # part of a record
    assert drain(responder_conn) == [] and responder_conn.inside_frame
    responder_conn.receive_data(wire[5:])
    drain(responder_conn)
    assert not responder_conn.inside_frame
    raw_frame = encode_frame(encode_message(Ping(2)))
    initiator._channel.write(raw_frame[:6])  # a whole record holding part of a frame
    responder_conn.receive_data(initiator.data_to_send())
    assert drain(responder_conn) == [] and responder_conn.inside_frame


def test_garbage_frame_is_a_bad_message() -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.channel.write(encode_frame(b"\xc1garbage"))
    assert_violation(raw.to(conn), conn, raw, "bad-message")


def test_local_misuse_raises_local_errors() -> None:
    initiator = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    with pytest.raises(LocalProtocolError):
        initiator.send(Hello(PROTOCOL_VERSION, "too early", None))
    with pytest.raises(LocalProtocolError):
        initiator.accept()
    with pytest.raises(LocalProtocolError):
        responder().start()

    initiator, responder_conn = open_pair()
    for message in (Auth(A, bytes(64)), Bye("x"), Error("x", "y"), Hello(PROTOCOL_VERSION, "twice", None), Data(1, A, b"")):
        with pytest.raises(LocalProtocolError):
            initiator.send(message)
    with pytest.raises(LocalProtocolError):
        initiator.send(End(1, ()))
    for n in range(MAX_OUTSTANDING_REQUESTS):
        initiator.send(GetChunks(n, (A,)))
    with pytest.raises(LocalProtocolError):
        initiator.send(GetChunks(99, (A,)))
    with pytest.raises(LocalProtocolError):
        initiator.send(GetChunks(0, (A,)))


def test_hello_goes_first_on_our_side_too() -> None:
    conn = responder()
    raw = raw_initiator_secured(conn)
    raw.send(raw.auth())
    raw.to(conn)
    with pytest.raises(LocalProtocolError, match="accept"):
        conn.next_event()
    conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.send(Ping(1))


def test_bye_closes_both_sides_in_order() -> None:
    initiator, responder_conn = open_pair()
    initiator.close("shutting down")
    assert initiator.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        initiator.send(Ping(1))
    assert deliver(initiator, responder_conn) == [ConnectionClosed("shutting down", None, by_peer=True)]
    assert responder_conn.state is State.CLOSED


def test_application_found_violation_is_reported_to_the_peer() -> None:
    initiator, responder_conn = open_pair()
    initiator.fail(IntegrityError("chunk AAAA does not hash to its id"))
    assert initiator.state is State.ERROR
    assert deliver(initiator, responder_conn) == [
        ConnectionClosed("chunk AAAA does not hash to its id", "bad-hash", by_peer=True)
    ]


def test_end_of_input_between_frames_is_a_plain_close() -> None:
    initiator, responder_conn = open_pair()
    responder_conn.receive_data(b"")
    assert drain(responder_conn) == [ConnectionClosed("the peer closed the connection", None, by_peer=True)]
    assert responder_conn.state is State.CLOSED


def test_end_of_input_inside_a_record_is_truncation() -> None:
    initiator, responder_conn = open_pair()
    initiator.send(Ping(7))
    responder_conn.receive_data(initiator.data_to_send()[:-1])
    assert drain(responder_conn) == []
    responder_conn.receive_data(b"")
    (closed,) = drain(responder_conn)
    assert closed.error_code == "truncated"


def test_data_after_end_of_input_is_a_local_error() -> None:
    conn = responder()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"late")


def test_peer_ids_in_events_are_derived_from_the_proven_key() -> None:
    initiator, responder_conn = open_pair()
    assert responder_conn.peer_id == PeerId.from_public_key(initiator.local_public_key)
    assert responder_conn.peer_public_key == initiator.local_public_key


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=6))
def test_random_bytes_before_the_handshake_never_escape_as_exceptions(chunks: list[bytes]) -> None:
    conn = responder()
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in drain(conn):
            assert isinstance(event, ConnectionClosed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=5))
def test_random_plaintext_after_hello_never_escapes_as_exceptions(frames: list[bytes]) -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    for frame in frames:
        raw.channel.write(encode_frame(frame))
    for event in raw.to(conn):
        assert isinstance(event, (MessageReceived, ConnectionClosed))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_unframed_plaintext_never_escapes_as_exceptions(plaintext: bytes) -> None:
    conn = responder()
    raw = raw_initiator_open(conn)
    raw.channel.write(plaintext)
    raw.to(conn)
    conn.receive_data(b"")
    assert isinstance(drain(conn)[-1], ConnectionClosed)
