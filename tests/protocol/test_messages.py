"""Wire messages: spec vectors, round trips, and refusal of every kind of bad payload."""

import dataclasses
import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.protocol.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from shoal.protocol.wire.messages import (
    MAX_CHUNK_IDS,
    MAX_DATA_SIZE,
    MAX_REQUEST_ID,
    MAX_RUNS,
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
    MessageType,
    Ping,
    Pong,
    Run,
    data_parts,
    data_runs_parts,
    decode_message,
    decode_owned,
    encode_message,
    encode_message_parts,
    split_runs,
)
from tests.protocol.spec_vectors import spec_vectors

CLASSES = {
    cls.TYPE.name: cls
    for cls in (
        Auth, Hello, Catalog, GetObjects, GetChunks, Data, End, Cancel, Ping, Pong, Error, Bye, GetRuns, DataRuns, Limit
    )
}
A, B, C = bytes([0xAA]) * 32, bytes([0xBB]) * 32, bytes([0xCC]) * 32


def from_json(cls: type, values: dict[str, Any]) -> Any:
    """Build a message or entry from the spec's JSON, where bytes are hex."""
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values and field.default is not dataclasses.MISSING:
            continue  # a field the encoding leaves out at its default (HELLO's lane)
        value = values[field.name]
        if field.type in ("bytes", "bytes | memoryview"):
            value = bytes.fromhex(value)
        elif field.type == "tuple[bytes, ...]":
            value = tuple(bytes.fromhex(v) for v in value)
        elif field.type == "tuple[CatalogEntry, ...]":
            value = tuple(from_json(CatalogEntry, v) for v in value)
        elif field.type == "tuple[Run, ...]":
            value = tuple(from_json(Run, v) for v in value)
        elif field.type == "tuple[int, ...]":
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def frame_of(message: Message) -> bytes:
    payload = encode_message(message)
    return len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("vector", spec_vectors("message"), ids=lambda v: v["kind"])
def test_spec_message_vectors(vector: dict[str, str]) -> None:
    message = from_json(CLASSES[vector["kind"]], json.loads(vector["fields"]))
    frame = bytes.fromhex(vector["frame"])
    assert frame_of(message).hex() == frame.hex()
    assert decode_message(frame[4:]) == message


def test_spec_has_a_vector_for_every_message_kind() -> None:
    assert {v["kind"] for v in spec_vectors("message")} == {t.name for t in MessageType}


EXAMPLES: list[Message] = [
    Auth(bytes(range(32)), bytes(range(64))),
    Hello(2, "shoal/0.1.0 (linux)", 22000),
    Hello(2, "ünïcode agent", None),
    Hello(4, "worker", None, 1),
    Hello(4, "worker", 22000, 15),
    Catalog(()),
    Catalog(
        (
            CatalogEntry("imagenet", A, 1, 0, 0, -5, ()),
            CatalogEntry("weights/ß", B, 2**64 - 1, 2**64 - 1, 7, 2**63 - 1, (A, B)),
        )
    ),
    GetObjects(0, (A, B, C)),
    GetObjects(MAX_REQUEST_ID, tuple(i.to_bytes(32, "big") for i in range(1024))),
    GetChunks(7, (C,)),
    Data(7, C, b""),
    Data(7, C, bytes(range(256)) * 300),
    End(7, ()),
    End(8, (A, B)),
    Cancel(3),
    Ping(0),
    Pong(2**64 - 1),
    Error("bad-request", "a" * 1024),
    Bye(""),
    GetRuns(4, (Run((A, A, B), (1, 1, MAX_DATA_SIZE - 2)), Run((C,), (7,)))),
    GetRuns(5, tuple(Run((i.to_bytes(32, "big"),) * 4, (1,) * 4) for i in range(256))),
    DataRuns(4, (A,), bytes(range(256)) * 300),
    DataRuns(4, tuple(i.to_bytes(32, "big") for i in range(256)), bytes(range(256)) * 300),
    Limit(0),
    Limit(2**64 - 1),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    payload = encode_message(message)
    assert decode_message(payload) == message
    assert msgpack.unpackb(payload)[0] == message.TYPE


@pytest.mark.parametrize("size", [0, 255, 256, 65535, 65536, 80 * 1024])
def test_data_fast_path_is_canonical_msgpack(size: int) -> None:
    message = Data(MAX_REQUEST_ID, A, bytes([size % 251]) * size)
    expected = msgpack.packb([MessageType.DATA, message.req, message.id, message.data], use_bin_type=True)
    assert encode_message(message) == expected
    head, body = encode_message_parts(message)
    assert body is message.data
    assert len(head) <= 48
    buffer = bytearray(message.data)
    head, body = data_parts(message.req, message.id, buffer)
    assert body is buffer and head + body == expected


@pytest.mark.parametrize(("runs", "size"), [(1, 0), (15, 255), (16, 65536), (MAX_RUNS, 80 * 1024)])
def test_data_runs_fast_path_is_canonical_msgpack(runs: int, size: int) -> None:
    ids = tuple(i.to_bytes(32, "big") for i in range(runs))
    message = DataRuns(MAX_REQUEST_ID, ids, bytes([size % 251]) * size)
    expected = msgpack.packb([MessageType.DATA_RUNS, message.req, list(ids), message.data], use_bin_type=True)
    assert encode_message(message) == expected
    buffer = bytearray(message.data)
    head, body = data_runs_parts(message.req, ids, buffer)
    assert body is buffer and head + body == expected


def test_a_data_runs_is_cut_into_its_runs_by_their_sizes() -> None:
    message = DataRuns(3, (A, B, C), b"aaabbbbbc")
    assert [bytes(view) for view in split_runs(message, [3, 5, 1])] == [b"aaa", b"bbbbb", b"c"]
    for wrong in ([3, 5], [3, 5, 2], [9, 1, 1]):
        with pytest.raises(IntegrityError) as caught:
            split_runs(message, wrong)
        assert caught.value.code == "bad-hash"


@given(req=st.integers(0, MAX_REQUEST_ID), data=st.binary(max_size=70000))
def test_data_round_trips(req: int, data: bytes) -> None:
    message = Data(req, B, data)
    assert decode_message(encode_message(message)) == message


def packed(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


BAD_PAYLOADS = {
    "not msgpack": b"\xc1",
    "deeply nested": packed(MessageType.CATALOG, []).replace(b"\x90", b"\x91" * 5000 + b"\x90"),
    "truncated": packed(MessageType.PING, 1)[:-1],
    "trailing bytes": packed(MessageType.PING, 1) + b"\x00",
    "not an array": msgpack.packb({"type": 9}),
    "empty array": packed(),
    "type not an int": packed("PING", 1),
    "too few fields": packed(MessageType.DATA, 1, A),
    "too many fields": packed(MessageType.PING, 1, 2),
    "bool for int": packed(MessageType.PING, True),
    "float for int": packed(MessageType.PING, 1.0),
    "negative req": packed(MessageType.CANCEL, -1),
    "req over 32 bits": packed(MessageType.CANCEL, 2**32),
    "str for bytes": msgpack.packb([MessageType.GET_CHUNKS, 1, ["x" * 32]], use_bin_type=True),
    "short id": packed(MessageType.GET_CHUNKS, 1, [bytes(31)]),
    "long id": packed(MessageType.END, 1, [bytes(33)]),
    "bytes for str": packed(MessageType.BYE, b"bye"),
    "invalid utf-8": b"\x92\x0c\xa2\xff\xfe",
    "too many chunk ids": packed(MessageType.GET_CHUNKS, 1, [i.to_bytes(32, "big") for i in range(MAX_CHUNK_IDS + 1)]),
    "no ids": packed(MessageType.GET_OBJECTS, 1, []),
    "repeated id": packed(MessageType.GET_OBJECTS, 1, [A, A]),
    "map field": packed(MessageType.CATALOG, {"a": 1}),
    "ext type": packed(MessageType.PING, msgpack.ExtType(5, b"x")),
    "timestamp": packed(MessageType.PING, msgpack.Timestamp(1)),
    "agent too long": packed(MessageType.HELLO, 1, "a" * 129, None),
    "agent with escape": packed(MessageType.HELLO, 1, "\x1b[2J", None),
    "port zero": packed(MessageType.HELLO, 1, "x", 0),
    "version zero": packed(MessageType.HELLO, 0, "x", None),
    "hello too short": packed(MessageType.HELLO, 4, "x"),
    "hello too long": packed(MessageType.HELLO, 4, "x", None, 1, 1),
    "lane zero spelled out": packed(MessageType.HELLO, 4, "x", None, 0),
    "lane 16": packed(MessageType.HELLO, 4, "x", None, 16),
    "lane negative": packed(MessageType.HELLO, 4, "x", None, -1),
    "lane bool": packed(MessageType.HELLO, 4, "x", None, True),
    "lane nil": packed(MessageType.HELLO, 4, "x", None, None),
    "entry wrong arity": packed(MessageType.CATALOG, [["name", A, 1, 0, 0, 0]]),
    "entry seq zero": packed(MessageType.CATALOG, [["name", A, 0, 0, 0, 0, []]]),
    "entry empty name": packed(MessageType.CATALOG, [["", A, 1, 0, 0, 0, []]]),
    "duplicate names": packed(MessageType.CATALOG, [["n", A, 1, 0, 0, 0, []], ["n", B, 1, 0, 0, 0, []]]),
    "catalog over 100000": b"\x92\x03\xdd" + (100_001).to_bytes(4, "big") + b"\xc0" * 100_001,
    "error code empty": packed(MessageType.ERROR, "", "message"),
    "error message too long": packed(MessageType.ERROR, "code", "m" * 1025),
    "data over 16 MiB": b"\x94\x06\x01\xc4\x20" + A + b"\xc6" + (MAX_DATA_SIZE + 1).to_bytes(4, "big") + bytes(MAX_DATA_SIZE + 1),
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_bad_payloads_are_refused_as_bad_message(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_message(payload)
    assert caught.value.code == "bad-message"


def test_a_main_sessions_hello_leaves_the_lane_out_and_a_lanes_carries_it() -> None:
    assert msgpack.unpackb(encode_message(Hello(4, "x", None))) == [MessageType.HELLO, 4, "x", None]
    assert msgpack.unpackb(encode_message(Hello(4, "x", None, 3))) == [MessageType.HELLO, 4, "x", None, 3]
    assert decode_message(packed(MessageType.HELLO, 4, "x", None)).lane == 0
    assert any(v["kind"] == "HELLO" and "lane" in json.loads(v["fields"]) for v in spec_vectors("message"))


def test_unknown_type_is_refused_with_its_own_code() -> None:
    for code in (0, 16, 200):
        with pytest.raises(RemoteProtocolError) as caught:
            decode_message(packed(code, 1))
        assert caught.value.code == "unknown-message"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Data(1, A, bytearray(3)),
        lambda: Data(1, A[:31], b""),
        lambda: Data(-1, A, b""),
        lambda: GetChunks(1, [A]),
        lambda: GetChunks(1, tuple(i.to_bytes(32, "big") for i in range(MAX_CHUNK_IDS + 1))),
        lambda: Hello(2, "agent", 70000),
        lambda: Hello(4, "agent", None, 16),
        lambda: Hello(4, "agent", None, -1),
        lambda: Hello(4, "agent", None, True),
        lambda: Error("code", "\udc80"),
        lambda: Catalog([]),
        lambda: Catalog(({"name": "x"},)),
        lambda: CatalogEntry("x", A, 1, 0, 0, 2**63, ()),
        lambda: Ping(True),
        lambda: Run((A, B), (1,)),
        lambda: Run((A,), (0,)),
        lambda: Run((A, B), (MAX_DATA_SIZE, 1)),
        lambda: Run((), ()),
        lambda: GetRuns(1, ()),
        lambda: GetRuns(1, (Run((A,), (1,)), Run((A, B), (1, 1)))),
        lambda: GetRuns(1, tuple(Run((i.to_bytes(32, "big"),) * 4, (1,) * 4) for i in range(257))),
        lambda: GetRuns(1, tuple(Run((i.to_bytes(32, "big"),) * 5, (1,) * 5) for i in range(205))),
        lambda: DataRuns(1, (A,), bytes(MAX_DATA_SIZE + 1)),
        lambda: DataRuns(1, (), b""),
        lambda: DataRuns(1, (A, A), b"ab"),
        lambda: DataRuns(1, A, b"ab"),
        lambda: DataRuns(1, tuple(i.to_bytes(32, "big") for i in range(MAX_RUNS + 1)), b"x"),
        lambda: Limit(-1),
    ],
)
def test_constructors_refuse_invalid_fields_as_local_errors(build: Any) -> None:
    with pytest.raises(InvalidMessage) as caught:
        build()
    assert isinstance(caught.value, LocalProtocolError)


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


@given(st.integers(0, 17), st.lists(MSGPACK_VALUES, max_size=5))
def test_arbitrary_msgpack_arrays_decode_or_raise_remote_errors(kind: int, fields: list[Any]) -> None:
    payload = msgpack.packb([kind, *fields], use_bin_type=True)
    try:
        message = decode_message(payload)
    except RemoteProtocolError:
        return
    assert decode_message(encode_message(message)) == message


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_remote_errors(payload: bytes) -> None:
    try:
        decode_message(payload)
    except RemoteProtocolError:
        pass


@pytest.mark.parametrize(
    "payload",
    [
        encode_message(DataRuns(5, (A,), bytes(range(256)) * 5000)),
        encode_message(DataRuns(2**32 - 1, (B,), b"")),
        encode_message(DataRuns(6, (A, B, C), bytes(range(256)) * 5000)),
        encode_message(DataRuns(7, tuple(i.to_bytes(32, "big") for i in range(256)), b"y" * 300)),
        # Wider encodings than the shortest: decoded all the same (by decode_message).
        msgpack.packb([14, 5, [A], b"x" * 300], use_bin_type=True).replace(b"\x0e\x05", b"\x0e\xcd\x00\x05", 1),
        msgpack.packb([14, 5, [A], b"x" * 300], use_bin_type=True).replace(b"\x05\x91", b"\x05\xdc\x00\x01", 1),
        encode_message(Data(5, A, b"not a run")),
    ],
)
def test_an_owned_payload_decodes_as_any_other_and_a_run_stays_in_place(payload: bytes) -> None:
    buffer = bytearray(payload)
    message = decode_owned(memoryview(buffer))
    assert message == decode_message(payload)
    if isinstance(message, DataRuns) and 0xCD not in payload[2:4] and payload[3] != 0xDC:
        assert isinstance(message.data, memoryview) and message.data.obj is buffer


@pytest.mark.parametrize(
    "payload",
    [
        encode_message(DataRuns(5, (A,), b"abc")) + b"\x00",  # trailing bytes
        encode_message(DataRuns(5, (A, B), b"abc"))[:-1],  # short data
        bytes([0x94, 0x0E, 0xCF]) + (2**40).to_bytes(8, "big") + bytes([0x91, 0xC4, 0x20]) + A + b"\xc4\x00",  # req too large
        bytes([0x94, 0x0E, 0x05, 0x92, 0xC4, 0x20]) + A + bytes([0xC4, 0x20]) + A + b"\xc4\x00",  # a run twice
        bytes([0x94, 0x0E, 0x05, 0x90, 0xC4, 0x00]),  # no run
    ],
)
def test_an_owned_payload_that_is_not_a_valid_run_is_refused(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_owned(memoryview(bytearray(payload)))
