"""The control-socket message codec the CLI, daemon and TUI share."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ConfigError, ShoalError, UnknownDataset, UnknownPeer, UsageError
from shoal.protocol.control import (
    ControlProtocolError,
    ErrorReply,
    Event,
    ExitCode,
    MessageDecoder,
    Progress,
    Request,
    Response,
    classify_error,
    decode_message,
    encode_message,
)
from shoal.protocol.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from shoal.protocol.wire.framing import HEADER_SIZE

pytestmark = pytest.mark.slow


MESSAGES = [
    Request(1, "share", {"path": "/data/x", "name": None}),
    Request(7, "id", {}),
    Response(1, {"version": {"seq": 3}, "warnings": []}),
    Progress(1, {"bytes_done": 10, "bytes_total": None}),
    ErrorReply(1, "not-found", "no dataset named 'x'; see `shoal ls`", 4),
    ErrorReply(0, "bad-message", "bad"),
    Event("datasets", {"name": "x"}),
    Event("datasets", {"name": "x"}, 7),
]


def payload(message) -> bytes:
    return encode_message(message)[HEADER_SIZE:]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_kind_round_trips(message):
    assert decode_message(payload(message)) == message


def test_the_wire_form_is_a_typed_msgpack_map():
    body = msgpack.unpackb(payload(Request(5, "log", {"name": "imagenet"})))
    assert body == {"type": "request", "id": 5, "method": "log", "params": {"name": "imagenet"}}
    error = msgpack.unpackb(payload(ErrorReply(5, "usage", "bad")))
    assert "exit_code" not in error, "absent optional fields are left out, not sent as nil"


def test_the_decoder_reassembles_messages_fed_a_byte_at_a_time():
    stream = b"".join(encode_message(message) for message in MESSAGES)
    decoder = MessageDecoder()
    out = []
    for byte in stream:
        decoder.feed(bytes([byte]))
        while (message := decoder.next_message()) is not None:
            out.append(message)
    assert out == MESSAGES
    assert decoder.buffered == 0


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    raw = msgpack.packb({"type": "response", "id": 3, "result": {}, "trace": "abc"})
    assert decode_message(raw) == Response(3, {})


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"type": "shout", "id": 1}, "unknown control message type"),
        ({"type": "request", "id": 1}, "'method'"),
        ({"type": "request", "id": 0, "method": "id", "params": {}}, "bad control message id"),
        ({"type": "request", "id": True, "method": "id", "params": {}}, "bad control message id"),
        ({"type": "request", "id": 2**53, "method": "id", "params": {}}, "bad control message id"),
        ({"type": "request", "id": 1, "method": "Share!", "params": {}}, "bad control method"),
        ({"type": "request", "id": 1, "method": "id", "params": [1]}, "must be a map"),
        ({"type": "response", "id": 1, "result": "ok"}, "must be a map"),
        ({"type": "error", "id": 1, "code": "Bad Code", "message": "x"}, "bad error code"),
        ({"type": "error", "id": 1, "code": "x", "message": "x", "exit_code": 300}, "bad exit code"),
        ({"type": "event", "topic": "", "data": {}}, "bad control topic"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(body, fragment):
    with pytest.raises(ControlProtocolError, match=fragment):
        decode_message(msgpack.packb(body))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({1: 2}),
        msgpack.packb({"type": "request"}) + b"\x00",
        msgpack.packb({"type": "event", "topic": "x", "data": {"t": msgpack.ExtType(1, b"x")}}),
        b"\xa3\xff\xfe\xfd",
    ],
)
def test_bytes_that_are_not_a_message_map_are_refused(raw):
    with pytest.raises(ControlProtocolError):
        decode_message(raw)


def test_an_oversized_frame_is_refused_before_it_is_buffered():
    decoder = MessageDecoder()
    decoder.feed((1 << 31).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_encoding_refuses_what_the_receiver_would_refuse():
    with pytest.raises(LocalProtocolError):
        encode_message(Request(0, "id", {}))
    with pytest.raises(LocalProtocolError):
        encode_message(Response(1, {"path": object()}))
    with pytest.raises(LocalProtocolError):
        encode_message(Event("datasets", {1: "not a text key"}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    request_id=st.integers(1, 2**53 - 1),
    method=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    params=st.dictionaries(st.text(), json_values, max_size=5),
)
def test_any_valid_request_round_trips(request_id, method, params):
    request = Request(request_id, method, params)
    assert decode_message(payload(request)) == request


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_a_protocol_error(data):
    decoder = MessageDecoder()
    decoder.feed(data)
    try:
        while decoder.next_message() is not None:
            pass
    except RemoteProtocolError:
        pass


@pytest.mark.parametrize(
    "error, expected",
    [
        (UsageError("x"), ("usage", ExitCode.USAGE)),
        (ConfigError("x"), ("bad-config", ExitCode.USAGE)),
        (UnknownDataset("x"), ("not-found", ExitCode.NOT_FOUND)),
        (UnknownPeer("x"), ("not-found", ExitCode.NOT_FOUND)),
        (ShoalError("x"), ("error", ExitCode.ERROR)),
    ],
)
def test_errors_map_to_stable_codes_and_exit_codes(error, expected):
    assert classify_error(error) == expected
