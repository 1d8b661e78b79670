"""The peer wire messages and their msgpack encoding.

Every frame payload is one msgpack array `[type, field, ...]`. Constructors
validate their fields, so a message object that exists is a message that may be
sent; `decode_message` turns any violation in received bytes into a
RemoteProtocolError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias, cast

import msgpack

from shoal.protocol.errors import IntegrityError, LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION = 4
#: The highest lane number: a side opens at most this many lanes beside its main session (SPEC "Lanes").
MAX_LANE = 15
ID_SIZE = 32
MAX_AGENT_BYTES = 128
MAX_NAME_BYTES = 255
MAX_CATALOG_ENTRIES = 100_000
MAX_FULL_VERSIONS = 1024
MAX_OBJECT_IDS = 1024
MAX_CHUNK_IDS = 256
#: GET_RUNS: runs per request, chunk ids in all its runs together.
MAX_RUNS = 256
MAX_RUN_CHUNKS = 1024
MAX_DATA_SIZE = 16 * 1024 * 1024
MAX_CODE_BYTES = 64
MAX_TEXT_BYTES = 1024
MAX_REQUEST_ID = 2**32 - 1
_U64 = 2**64 - 1
_I64 = 2**63


class MessageType(IntEnum):
    AUTH = 1
    HELLO = 2
    CATALOG = 3
    GET_OBJECTS = 4
    GET_CHUNKS = 5
    DATA = 6
    END = 7
    CANCEL = 8
    PING = 9
    PONG = 10
    ERROR = 11
    BYE = 12
    GET_RUNS = 13
    DATA_RUNS = 14
    LIMIT = 15


class InvalidMessage(LocalProtocolError):
    """A message was built with a field the protocol forbids."""

    code = "bad-message"


class MalformedMessage(RemoteProtocolError):
    """Received bytes that are not a well-formed message."""

    code = "bad-message"


class UnknownMessage(RemoteProtocolError):
    """Received a message type this version does not define."""

    code = "unknown-message"


def _fail(owner: str, field: str, problem: str) -> InvalidMessage:
    return InvalidMessage(f"{owner}.{field} {problem}")


def _check_int(owner: str, field: str, value: Any, low: int, high: int) -> None:
    # bool is an int subclass and msgpack decodes true/false to it; neither is a number here.
    if type(value) is not int:
        raise _fail(owner, field, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(owner, field, f"must be in {low}..{high}, not {value}")


def _check_bytes(owner: str, field: str, value: Any, size: int) -> None:
    if type(value) is not bytes:
        raise _fail(owner, field, f"must be bytes, not {type(value).__name__}")
    if len(value) != size:
        raise _fail(owner, field, f"must be exactly {size} bytes, not {len(value)}")


def _check_data(req: Any, oid: Any, data: Any, *types: type) -> None:
    _check_int("DATA", "req", req, 0, MAX_REQUEST_ID)
    _check_bytes("DATA", "id", oid, ID_SIZE)
    _check_payload("DATA", data, *types)


def _check_payload(owner: str, data: Any, *types: type) -> None:
    if type(data) not in types:
        raise _fail(owner, "data", f"must be {' or '.join(t.__name__ for t in types)}, not {type(data).__name__}")
    if len(data) > MAX_DATA_SIZE:
        raise _fail(owner, "data", f"is {len(data)} bytes; at most {MAX_DATA_SIZE} allowed")


def _check_sizes(owner: str, field: str, value: Any, count: int) -> None:
    if type(value) is not tuple or len(value) != count:
        raise _fail(owner, field, f"must be a tuple of {count} sizes")
    for size in value:
        _check_int(owner, field, size, 1, MAX_DATA_SIZE)
    if sum(value) > MAX_DATA_SIZE:
        raise _fail(owner, field, f"add up to {sum(value)} bytes; a run holds at most {MAX_DATA_SIZE}")


def _check_ids(owner: str, field: str, value: Any, limit: int, *, allow_empty: bool) -> None:
    if type(value) is not tuple:
        raise _fail(owner, field, f"must be a tuple of ids, not {type(value).__name__}")
    low = 0 if allow_empty else 1
    if not low <= len(value) <= limit:
        raise _fail(owner, field, f"holds {len(value)} ids; {low}..{limit} allowed")
    for item in value:
        _check_bytes(owner, field, item, ID_SIZE)
    if len(set(value)) != len(value):
        raise _fail(owner, field, "repeats an id")


def _check_text(owner: str, field: str, value: Any, max_bytes: int, *, name_like: bool = False) -> None:
    if type(value) is not str:
        raise _fail(owner, field, f"must be a string, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _fail(owner, field, "is not valid Unicode text") from None
    if size > max_bytes:
        raise _fail(owner, field, f"is {size} bytes of UTF-8; at most {max_bytes} allowed")
    if name_like and (not value or any(_is_control(c) for c in value)):
        # Names and agents are shown in terminals; control characters could rewrite the screen.
        raise _fail(owner, field, "must be non-empty and free of control characters")


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0


@dataclass(frozen=True, slots=True)
class Auth:
    """Proof of identity: a signature over the channel's handshake hash."""

    TYPE: ClassVar[MessageType] = MessageType.AUTH
    public_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("AUTH", "public_key", self.public_key, 32)
        _check_bytes("AUTH", "signature", self.signature, 64)


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message after authentication, from each side.

    `version` is the protocol version the sender speaks (PROTOCOL_VERSION);
    `listen_port` is where it accepts connections, if it does; `lane` is 0 on a
    main session and 1..MAX_LANE on a lane, where only the initiator's HELLO
    carries it (encoded only when it is not 0).
    """

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    version: int
    agent: str
    listen_port: int | None
    lane: int = 0

    def __post_init__(self) -> None:
        _check_int("HELLO", "version", self.version, 1, _U64)
        _check_text("HELLO", "agent", self.agent, MAX_AGENT_BYTES, name_like=True)
        if self.listen_port is not None:
            _check_int("HELLO", "listen_port", self.listen_port, 1, 65535)
        _check_int("HELLO", "lane", self.lane, 0, MAX_LANE)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One dataset as a peer announces it.

    `head` is the newest version's id and `seq` its sequence number; `size`,
    `files` and `time` (Unix seconds) describe that version; `full` lists the
    version ids this peer can serve completely.
    """

    name: str
    head: bytes
    seq: int
    size: int
    files: int
    time: int
    full: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_text("CATALOG", "name", self.name, MAX_NAME_BYTES, name_like=True)
        _check_bytes("CATALOG", "head", self.head, ID_SIZE)
        _check_int("CATALOG", "seq", self.seq, 1, _U64)
        _check_int("CATALOG", "size", self.size, 0, _U64)
        _check_int("CATALOG", "files", self.files, 0, _U64)
        _check_int("CATALOG", "time", self.time, -_I64, _I64 - 1)
        _check_ids("CATALOG", "full", self.full, MAX_FULL_VERSIONS, allow_empty=True)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every dataset the sender shares; sent after HELLO and whenever it changes."""

    TYPE: ClassVar[MessageType] = MessageType.CATALOG
    datasets: tuple[CatalogEntry, ...]

    def __post_init__(self) -> None:
        if type(self.datasets) is not tuple or not all(type(e) is CatalogEntry for e in self.datasets):
            raise _fail("CATALOG", "datasets", "must be a tuple of CatalogEntry")
        if len(self.datasets) > MAX_CATALOG_ENTRIES:
            raise _fail("CATALOG", "datasets", f"holds {len(self.datasets)} entries; at most {MAX_CATALOG_ENTRIES} allowed")
        if len({e.name for e in self.datasets}) != len(self.datasets):
            raise _fail("CATALOG", "datasets", "names a dataset twice")


@dataclass(frozen=True, slots=True)
class GetObjects:
    """Ask for objects (manifests, trees, versions) by id."""

    TYPE: ClassVar[MessageType] = MessageType.GET_OBJECTS
    req: int
    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_int("GET_OBJECTS", "req", self.req, 0, MAX_REQUEST_ID)
        _check_ids("GET_OBJECTS", "ids", self.ids, MAX_OBJECT_IDS, allow_empty=False)


@dataclass(frozen=True, slots=True)
class GetChunks:
    """Ask for file chunks by id."""

    TYPE: ClassVar[MessageType] = MessageType.GET_CHUNKS
    req: int
    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_int("GET_CHUNKS", "req", self.req, 0, MAX_REQUEST_ID)
        _check_ids("GET_CHUNKS", "ids", self.ids, MAX_CHUNK_IDS, allow_empty=False)


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive chunks of one file, as a GET_RUNS asks for them: their ids and sizes in order.

    `ids[0]` names the run in DATA_RUNS and END; an id may repeat inside a run."""

    ids: tuple[bytes, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if type(self.ids) is not tuple or not 1 <= len(self.ids) <= MAX_RUN_CHUNKS:
            raise _fail("GET_RUNS", "ids", f"must be a tuple of 1..{MAX_RUN_CHUNKS} ids")
        for item in self.ids:
            _check_bytes("GET_RUNS", "ids", item, ID_SIZE)
        _check_sizes("GET_RUNS", "sizes", self.sizes, len(self.ids))

    @property
    def total(self) -> int:
        """The run's bytes: its share of a DATA_RUNS's data."""
        return sum(self.sizes)


@dataclass(frozen=True, slots=True)
class GetRuns:
    """Ask for runs of consecutive chunks, answered by DATA_RUNS carrying one or more each."""

    TYPE: ClassVar[MessageType] = MessageType.GET_RUNS
    req: int
    runs: tuple[Run, ...]

    def __post_init__(self) -> None:
        _check_int("GET_RUNS", "req", self.req, 0, MAX_REQUEST_ID)
        if type(self.runs) is not tuple or not all(type(r) is Run for r in self.runs):
            raise _fail("GET_RUNS", "runs", "must be a tuple of Run")
        if not 1 <= len(self.runs) <= MAX_RUNS:
            raise _fail("GET_RUNS", "runs", f"holds {len(self.runs)} runs; 1..{MAX_RUNS} allowed")
        if sum(len(r.ids) for r in self.runs) > MAX_RUN_CHUNKS:
            raise _fail("GET_RUNS", "runs", f"name more than {MAX_RUN_CHUNKS} chunks in all")
        if len({r.ids[0] for r in self.runs}) != len(self.runs):
            raise _fail("GET_RUNS", "runs", "start two runs with the same id")

    @property
    def ids(self) -> tuple[bytes, ...]:
        """The runs' names (their first ids): what DATA_RUNS and END refer to."""
        return tuple(r.ids[0] for r in self.runs)


@dataclass(frozen=True, slots=True)
class DataRuns:
    """The bytes of requested runs back to back, in the order of `ids` (the runs' first ids):
    each run's share is the sum of its sizes in the request. Many small runs in one
    message cost one frame, not one each.

    Received, `data` is a view of the frame's own buffer (`decode_owned`)."""

    TYPE: ClassVar[MessageType] = MessageType.DATA_RUNS
    req: int
    ids: tuple[bytes, ...]
    data: bytes | memoryview

    def __post_init__(self) -> None:
        _check_int("DATA_RUNS", "req", self.req, 0, MAX_REQUEST_ID)
        _check_ids("DATA_RUNS", "ids", self.ids, MAX_RUNS, allow_empty=False)
        _check_payload("DATA_RUNS", self.data, bytes, memoryview)


def split_runs(message: DataRuns, totals: list[int]) -> list[memoryview]:
    """Each run's bytes in `message`, given the runs' sizes (each the sum of its sizes in the
    request, in the order of `message.ids`); IntegrityError if they do not add up to the data."""
    if sum(totals) != len(message.data):
        raise IntegrityError(
            f"DATA_RUNS of {len(message.data)} bytes for {len(totals)} runs of {sum(totals)} bytes in all"
        )
    views = []
    pos = 0
    with memoryview(message.data) as data:
        for total in totals:
            views.append(data[pos : pos + total])
            pos += total
    return views


@dataclass(frozen=True, slots=True)
class Data:
    """The bytes of one requested object or chunk."""

    TYPE: ClassVar[MessageType] = MessageType.DATA
    req: int
    id: bytes
    data: bytes

    def __post_init__(self) -> None:
        _check_data(self.req, self.id, self.data, bytes)


@dataclass(frozen=True, slots=True)
class End:
    """A request is answered: DATA went out for every id except `missing`."""

    TYPE: ClassVar[MessageType] = MessageType.END
    req: int
    missing: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_int("END", "req", self.req, 0, MAX_REQUEST_ID)
        _check_ids("END", "missing", self.missing, MAX_OBJECT_IDS, allow_empty=True)


@dataclass(frozen=True, slots=True)
class Cancel:
    """The requester no longer wants the rest of a request."""

    TYPE: ClassVar[MessageType] = MessageType.CANCEL
    req: int

    def __post_init__(self) -> None:
        _check_int("CANCEL", "req", self.req, 0, MAX_REQUEST_ID)


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; answered with a PONG carrying the same nonce."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    nonce: int

    def __post_init__(self) -> None:
        _check_int("PING", "nonce", self.nonce, 0, _U64)


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a PING."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    nonce: int

    def __post_init__(self) -> None:
        _check_int("PONG", "nonce", self.nonce, 0, _U64)


@dataclass(frozen=True, slots=True)
class Error:
    """The ERROR message (not an exception): a violation report sent before closing."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: str
    message: str

    def __post_init__(self) -> None:
        _check_text("ERROR", "code", self.code, MAX_CODE_BYTES, name_like=True)
        _check_text("ERROR", "message", self.message, MAX_TEXT_BYTES)


@dataclass(frozen=True, slots=True)
class Bye:
    """An orderly close."""

    TYPE: ClassVar[MessageType] = MessageType.BYE
    reason: str

    def __post_init__(self) -> None:
        _check_text("BYE", "reason", self.reason, MAX_TEXT_BYTES)


@dataclass(frozen=True, slots=True)
class Limit:
    """The most bytes per second the sender sends to the receiver (its bandwidth caps; 0: none).

    Advisory: it lets a receiver say that the sender's cap, not the network, limits a transfer.
    """

    TYPE: ClassVar[MessageType] = MessageType.LIMIT
    rate: int

    def __post_init__(self) -> None:
        _check_int("LIMIT", "rate", self.rate, 0, _U64)


Message: TypeAlias = (
    Auth | Hello | Catalog | GetObjects | GetChunks | Data | End | Cancel | Ping | Pong | Error | Bye | GetRuns | DataRuns
    | Limit
)

_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Auth, Hello, Catalog, GetObjects, GetChunks, Data, End, Cancel, Ping, Pong, Error, Bye, GetRuns, DataRuns, Limit
    )
}
#: The field counts each type's array may hold after its type: a main session's HELLO leaves its lane out.
_ARITIES = {code: (len(fields(cls)),) for code, cls in _CLASSES.items()} | {MessageType.HELLO: (3, 4)}
_ENTRY_ARITY = len(fields(CatalogEntry))
_RUN_ARITY = len(fields(Run))
#: Each encodable class's field names in order: `fields()` builds its tuple anew at every
#: call (a GET_RUNS of 64 one-chunk runs encoded in 76 µs with it, 43 µs with these).
_FIELD_NAMES = {cls: tuple(f.name for f in fields(cls)) for cls in (*_CLASSES.values(), CatalogEntry, Run)}


def _field_values(obj: Any) -> list[Any]:
    return [getattr(obj, name) for name in _FIELD_NAMES[type(obj)]]


def _pack_default(obj: Any) -> list[Any]:
    if type(obj) in (CatalogEntry, Run):
        return _field_values(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode_message(message: Message) -> bytes:
    """The frame payload of `message`."""
    return b"".join(encode_message_parts(message))


def encode_message_parts(message: Message) -> tuple[bytes | memoryview, ...]:
    """The frame payload of `message` in pieces, so DATA's bytes need not be copied to join them."""
    if isinstance(message, Data):
        return _data_header(message.req, message.id, len(message.data)), message.data
    if isinstance(message, DataRuns):
        return _data_runs_header(message.req, message.ids, len(message.data)), message.data
    values = _field_values(message)
    if isinstance(message, Hello) and not message.lane:
        values.pop()  # a main session's HELLO leaves the lane out: one encoding per message
    return (msgpack.packb([message.TYPE.value, *values], use_bin_type=True, default=_pack_default),)


_DATA_START = bytes([0x94, MessageType.DATA.value])  # fixarray of 4, positive fixint type
_DATA_RUNS_START = bytes([0x94, MessageType.DATA_RUNS.value])
_ID_HEADER = bytes([0xC4, ID_SIZE])  # bin 8 of 32 bytes


def data_parts(req: int, oid: bytes, data: bytes | bytearray) -> tuple[bytes, bytes | bytearray]:
    """The frame payload of DATA in pieces, for bytes held in a bytearray: a sender that
    reads chunks into buffers of its own need not copy each into bytes first. Validated
    as Data is; the caller must not change `data` until the pieces are queued."""
    _check_data(req, oid, data, bytes, bytearray)
    return _data_header(req, oid, len(data)), data


def data_runs_parts(
    req: int, ids: tuple[bytes, ...], data: bytearray | memoryview
) -> tuple[bytes, bytearray | memoryview]:
    """The frame payload of DATA_RUNS in pieces, for runs read back to back into a reusable
    buffer: the caller must not change `data` until the pieces are queued."""
    _check_int("DATA_RUNS", "req", req, 0, MAX_REQUEST_ID)
    _check_ids("DATA_RUNS", "ids", ids, MAX_RUNS, allow_empty=False)
    _check_payload("DATA_RUNS", data, bytearray, memoryview)
    return _data_runs_header(req, ids, len(data)), data


def starts_as_data(payload: bytes | bytearray | memoryview) -> bool:
    """Whether `payload` begins as DATA or DATA_RUNS encoded the shortest way (`94 06`,
    `94 0e`), the forms the receive hot path needs to tell apart without decoding."""
    return bytes(payload[:2]) in (_DATA_START, _DATA_RUNS_START)


_UINT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4}
_BIN_WIDTHS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def decode_owned(payload: memoryview) -> Message:
    """`decode_message` for a payload the caller owns: a DATA_RUNS's data stays where it
    is, as a view of `payload`. (Only the encoding `encode_message` writes takes
    that path; any other goes through `decode_message`.)"""
    try:
        if bytes(payload[:2]) != _DATA_RUNS_START:
            raise ValueError
        pos, req = _read_uint(payload, 2, _UINT_WIDTHS)
        pos, count = _read_array_header(payload, pos)
        ids = []
        for _ in range(count):
            if bytes(payload[pos : pos + 2]) != _ID_HEADER:
                raise ValueError
            ids.append(bytes(payload[pos + 2 : pos + 2 + ID_SIZE]))
            pos += 2 + ID_SIZE
        pos, size = _read_uint(payload, pos, _BIN_WIDTHS, fixint=False)
        if len(payload) - pos != size:
            raise ValueError
    except (ValueError, IndexError, KeyError):
        return decode_message(payload)
    try:
        return DataRuns(req, tuple(ids), payload[pos:])
    except InvalidMessage as exc:
        raise MalformedMessage(str(exc)) from None


def _read_uint(payload: memoryview, pos: int, widths: dict[int, int], *, fixint: bool = True) -> tuple[int, int]:
    """The msgpack unsigned int (or bin length) at `pos`: (the position after it, its value)."""
    marker = payload[pos]
    if fixint and marker < 0x80:
        return pos + 1, marker
    width = widths[marker]
    return pos + 1 + width, int.from_bytes(payload[pos + 1 : pos + 1 + width], "big")


def _read_array_header(payload: memoryview, pos: int) -> tuple[int, int]:
    """The msgpack array length at `pos`, a fixarray or array 16 header: (the position after it, the length)."""
    marker = payload[pos]
    if 0x90 <= marker <= 0x9F:
        return pos + 1, marker & 0x0F
    if marker == 0xDC:
        return pos + 3, int.from_bytes(payload[pos + 1 : pos + 3], "big")
    raise ValueError


def _bin_header(size: int) -> bytes:
    if size < 0x100:
        return struct.pack(">BB", 0xC4, size)
    if size < 0x10000:
        return struct.pack(">BH", 0xC5, size)
    return struct.pack(">BI", 0xC6, size)


def _data_header(req: int, oid: bytes, size: int) -> bytes:
    """Everything of a DATA array but the payload bytes, so they are copied once."""
    return _DATA_START + cast(bytes, msgpack.packb(req)) + _ID_HEADER + oid + _bin_header(size)


def _data_runs_header(req: int, ids: tuple[bytes, ...], size: int) -> bytes:
    """Everything of a DATA_RUNS array but the runs' bytes."""
    head = cast(bytes, msgpack.packb([req, ids], use_bin_type=True))
    # `head` is a 2-array (its first byte 0x92) of req and ids: their encodings follow it.
    return _DATA_RUNS_START + head[1:] + _bin_header(size)


def _ext_hook(code: int, data: bytes) -> Any:
    raise MalformedMessage(f"msgpack extension type {code} is not allowed")


def decode_message(payload: bytes | memoryview) -> Message:
    """Parse and validate one frame payload."""
    try:
        items = msgpack.unpackb(
            payload,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_ext_hook,
            max_array_len=MAX_CATALOG_ENTRIES,
            max_map_len=0,
            max_ext_len=0,
            max_str_len=MAX_TEXT_BYTES,
            max_bin_len=MAX_DATA_SIZE,
        )
    except (ValueError, msgpack.UnpackException) as exc:
        detail = str(exc) or type(exc).__name__
        raise MalformedMessage(f"frame is not a single msgpack value within limits: {detail}") from None
    if type(items) is not tuple or not items or type(items[0]) is not int:
        raise MalformedMessage("frame is not an array starting with a message type")
    cls = _CLASSES.get(items[0])
    if cls is None:
        raise UnknownMessage(f"unknown message type {items[0]}")
    values = items[1:]
    arities = _ARITIES[cls.TYPE]
    if len(values) not in arities:
        raise MalformedMessage(f"{cls.TYPE.name} has {' or '.join(map(str, arities))} fields, not {len(values)}")
    try:
        if cls is Catalog:
            return Catalog(_decode_entries(values[0]))
        if cls is GetRuns:
            return GetRuns(values[0], _decode_runs(values[1]))
        if cls is Hello:
            return _decode_hello(values)
        return cls(*values)
    except InvalidMessage as exc:
        raise MalformedMessage(str(exc)) from None


def _decode_hello(values: tuple[Any, ...]) -> Hello:
    # A lane is present only on a lane: an explicit 0 would give a main session's HELLO a second encoding.
    if len(values) == 4 and type(values[3]) is int and values[3] == 0:
        raise MalformedMessage("HELLO.lane is left out on a main session, never 0")
    return Hello(*values)


def _decode_entries(value: Any) -> tuple[CatalogEntry, ...]:
    if type(value) is not tuple:
        raise MalformedMessage("CATALOG.datasets must be an array")
    entries = []
    for item in value:
        if type(item) is not tuple or len(item) != _ENTRY_ARITY:
            raise MalformedMessage(f"a CATALOG entry is an array of {_ENTRY_ARITY} fields")
        entries.append(CatalogEntry(*item))
    return tuple(entries)


def _decode_runs(value: Any) -> tuple[Run, ...]:
    if type(value) is not tuple:
        raise MalformedMessage("GET_RUNS.runs must be an array")
    runs = []
    for item in value:
        if type(item) is not tuple or len(item) != _RUN_ARITY:
            raise MalformedMessage(f"a GET_RUNS run is an array of {_RUN_ARITY} fields")
        runs.append(Run(*item))
    return tuple(runs)
