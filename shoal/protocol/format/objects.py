"""The objects of a dataset version and their canonical msgpack encoding.

A version is a Merkle DAG: VERSION → TREE → (TREE | FILE) → CHUNKS → chunk.
Each manifest object encodes as one msgpack array whose first element is its kind
tag; its id is `hashing.object_id(kind, encoded_bytes)`. Encoding is canonical
(msgpack's shortest forms, arrays only, str for text, bin for bytes): a decoder
re-encodes what it parsed and refuses any input that differs, so one object has
exactly one byte string and one id.

Long lists (a file's chunks, a directory's entries) are paged: an object holds at
most FANOUT entries; at level 0 they are the items themselves, at level L > 0 they
are `Ref(size, id)` of level L-1 nodes. See `paged.py` for how pages are cut.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, cast

import msgpack

from shoal.protocol.errors import IntegrityError, ObjectFormatError, ProtocolError
from shoal.protocol.format.chunking import MAX_CHUNK_SIZE, ChunkingParams
from shoal.protocol.format.hashing import ID_SIZE, Kind, object_id
from shoal.protocol.format.paths import check_dataset_name, check_name

#: Most entries in one object; a bigger list is split into pages.
FANOUT = 1024
#: Largest encoded manifest object (a full tree page of 255-byte names fits).
MAX_OBJECT_SIZE = 1024 * 1024
#: Deepest paging level: FANOUT**8 entries is far past any real file or directory.
MAX_LEVEL = 8
MAX_PARENTS = 16
MAX_MESSAGE = 4096
#: Sizes are unsigned 64-bit on the wire.
MAX_SIZE = 2**63 - 1
#: Subsets per version, patterns per subset, and bytes per pattern.
MAX_SUBSETS = 64
MAX_PATTERNS = 256
MAX_PATTERN = 1024
#: A subset's sample is in parts per million; this keeps every file.
SAMPLE_ALL = 1_000_000
#: How a sample is drawn (SPEC.md, "Subsets"): each file on its own, the rule of
#: records written before the exact draw existed, encoded without a `draw` field...
DRAW_PER_FILE = 0
#: ...or exactly round(sample × files) files, those with the smallest keys.
DRAW_EXACT = 1
_SUBSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class EntryType(IntEnum):
    """What a tree entry names."""

    FILE = 0
    DIR = 1
    SYMLINK = 2


@dataclass(frozen=True, slots=True)
class Ref:
    """A sized reference: a chunk (length, chunk id) or a child page (total size, id)."""

    size: int
    id: bytes


#: The permission bits of a file whose TREE entry carries no mode: they follow `executable`.
DEFAULT_FILE_MODE = 0o644
DEFAULT_EXECUTABLE_MODE = 0o755
_PERMISSION_BITS = 0o777


def default_mode(executable: bool) -> int:
    return DEFAULT_EXECUTABLE_MODE if executable else DEFAULT_FILE_MODE


def file_mode_fields(bits: int) -> tuple[bool, int | None]:
    """(executable, mode) of a TREE entry for a file with permission bits `bits`.

    The mode is recorded only when it is not what `executable` implies, so a
    tree of ordinarily permitted files encodes as it always did.
    """
    bits &= _PERMISSION_BITS
    executable = bool(bits & 0o100)
    return executable, None if bits == default_mode(executable) else bits


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A regular file in a directory: its FILE object's id and how it is permitted."""

    type: ClassVar[Literal[EntryType.FILE]] = EntryType.FILE
    name: str
    size: int
    id: bytes
    executable: bool = False
    #: The permission bits when they are not `default_mode(executable)`, else None.
    mode: int | None = None

    def permissions(self) -> int:
        """The permission bits a file written from this entry gets (before the umask)."""
        return self.mode if self.mode is not None else default_mode(self.executable)


@dataclass(frozen=True, slots=True)
class DirEntry:
    """A subdirectory: its TREE object's id and the total size of the files below it."""

    type: ClassVar[Literal[EntryType.DIR]] = EntryType.DIR
    name: str
    size: int
    id: bytes


@dataclass(frozen=True, slots=True)
class SymlinkEntry:
    """A symbolic link and the text it points to; its size is that text's UTF-8 length."""

    type: ClassVar[Literal[EntryType.SYMLINK]] = EntryType.SYMLINK
    name: str
    target: str

    @property
    def size(self) -> int:
        return len(self.target.encode("utf-8"))


#: One name in a directory. `entry.type == EntryType.FILE` (or DIR, SYMLINK)
#: narrows it to that kind, whose fields are then typed: `id` for a file or a
#: directory, `target` for a symlink.
TreeEntry: TypeAlias = FileEntry | DirEntry | SymlinkEntry


@dataclass(frozen=True, slots=True)
class ChunkListNode:
    """A page of a file's chunk list that did not fit in the file object."""

    level: int
    entries: tuple[Ref, ...]


@dataclass(frozen=True, slots=True)
class FileObject:
    """A regular file's content: its size, how it was chunked, and its chunk list's top page."""

    size: int
    params: ChunkingParams
    level: int
    entries: tuple[Ref, ...]


@dataclass(frozen=True, slots=True)
class TreeNode:
    """A directory, or a page of one: entries sorted by the UTF-8 bytes of their names."""

    level: int
    entries: tuple[TreeEntry | Ref, ...]


@dataclass(frozen=True, slots=True)
class Subset:
    """A named part of a version: files matching `include` (all when empty), then a
    deterministic sample of `sample` parts per million of them, drawn with `seed`
    by the rule `draw` names."""

    name: str
    include: tuple[str, ...] = ()
    sample: int = SAMPLE_ALL
    seed: int = 0
    draw: int = DRAW_PER_FILE

    def fields(self) -> list[Any]:
        """The SUBSET array: `draw` only when it is not the per-file rule, so older records keep their bytes."""
        out = [self.name, list(self.include), self.sample, self.seed]
        return out + [self.draw] if self.draw != DRAW_PER_FILE else out


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A signed snapshot of a dataset. `signature` covers `signed_bytes()`."""

    name: str
    seq: int
    root: bytes
    parents: tuple[bytes, ...]
    size: int
    files: int
    author: bytes
    time: int
    message: str
    signature: bytes = b""
    #: Named subsets, sorted by name; encoded only when there are any, so records
    #: without subsets keep the encoding (and id) they always had.
    subsets: tuple[Subset, ...] = ()

    def signed_bytes(self) -> bytes:
        """The bytes the author signs: a domain prefix plus the unsigned encoding."""
        return SIGNATURE_DOMAIN + _pack(_version_fields(self))


SIGNATURE_DOMAIN = b"shoal 2026-11 version signature v1\x00"

ManifestObject: TypeAlias = ChunkListNode | FileObject | TreeNode | VersionRecord


def _pack(value: Any) -> bytes:
    return cast(bytes, msgpack.packb(value, use_bin_type=True))


def _refs(entries: tuple[Ref, ...]) -> list[list[Any]]:
    return [[r.size, r.id] for r in entries]


def _version_fields(v: VersionRecord) -> list[Any]:
    fields = [
        int(Kind.VERSION), v.name, v.seq, v.root, list(v.parents),
        v.size, v.files, v.author, v.time, v.message,
    ]
    if v.subsets:
        fields.append([s.fields() for s in v.subsets])
    return fields


def _entry_fields(entry: TreeEntry) -> list[Any]:
    if entry.type == EntryType.SYMLINK:
        return [entry.name, int(entry.type), False, entry.size, entry.target]
    if entry.type == EntryType.DIR:
        return [entry.name, int(entry.type), False, entry.size, entry.id]
    fields: list[Any] = [entry.name, int(entry.type), entry.executable, entry.size, entry.id]
    if entry.mode is not None:
        fields.append(entry.mode)
    return fields


def _tree_item_fields(item: TreeEntry | Ref) -> list[Any]:
    return [item.size, item.id] if isinstance(item, Ref) else _entry_fields(item)


def encode(obj: ManifestObject) -> bytes:
    """Return the canonical encoding of a manifest object."""
    if isinstance(obj, FileObject):
        fields: list[Any] = [int(Kind.FILE), obj.size, obj.params.as_list(), obj.level, _refs(obj.entries)]
    elif isinstance(obj, ChunkListNode):
        fields = [int(Kind.CHUNKS), obj.level, _refs(obj.entries)]
    elif isinstance(obj, TreeNode):
        fields = [int(Kind.TREE), obj.level, [_tree_item_fields(item) for item in obj.entries]]
    elif isinstance(obj, VersionRecord):
        fields = _version_fields(obj) + [obj.signature]
    else:
        raise TypeError(f"not a manifest object: {obj!r}")
    data = _pack(fields)
    if len(data) > MAX_OBJECT_SIZE:
        raise ObjectFormatError(f"encoded object of {len(data)} bytes exceeds {MAX_OBJECT_SIZE}")
    return data


def kind_of(obj: ManifestObject) -> Kind:
    """Return the kind tag of a manifest object."""
    return _KIND_OF[type(obj)]


_KIND_OF: dict[type, Kind] = {
    ChunkListNode: Kind.CHUNKS,
    FileObject: Kind.FILE,
    TreeNode: Kind.TREE,
    VersionRecord: Kind.VERSION,
}


def encode_with_id(obj: ManifestObject) -> tuple[bytes, bytes]:
    """Return (id, encoded bytes) of a manifest object."""
    data = encode(obj)
    return object_id(kind_of(obj), data), data


# --- decoding -----------------------------------------------------------------


def _fail(what: str) -> ObjectFormatError:
    return ObjectFormatError(what)


def _reject_ext(code: int, data: bytes) -> Any:
    raise _fail("msgpack extension types are not allowed")


def _int(value: Any, what: str, lo: int = 0, hi: int = MAX_SIZE) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _fail(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _oid(value: Any, what: str) -> bytes:
    if type(value) is not bytes or len(value) != ID_SIZE:
        raise _fail(f"{what} must be {ID_SIZE} bytes")
    return value


def _list(value: Any, what: str, max_len: int) -> list[Any]:
    if type(value) is not list or len(value) > max_len:
        raise _fail(f"{what} must be a list of at most {max_len} items")
    return value


def _ref(value: Any, max_size: int) -> Ref:
    pair = _list(value, "reference", 2)
    if len(pair) != 2:
        raise _fail("reference must be [size, id]")
    return Ref(_int(pair[0], "reference size", 0, max_size), _oid(pair[1], "reference id"))


def _refs_from(value: Any, level: int) -> tuple[Ref, ...]:
    items = _list(value, "entries", FANOUT)
    max_size = MAX_CHUNK_SIZE if level == 0 else MAX_SIZE
    refs = tuple(_ref(item, max_size) for item in items)
    if level > 0 and not refs:
        raise _fail("a paged level above 0 must reference at least one page")
    return refs


def _tree_entry(value: Any) -> TreeEntry:
    item = _list(value, "tree entry", 6)
    if len(item) not in (5, 6):
        raise _fail("tree entry must be [name, type, executable, size, ref] or [name, type, executable, size, ref, mode]")
    name, type_, executable, size, ref = item[:5]
    try:
        check_name(name)
    except ProtocolError as e:
        raise _fail(str(e)) from None
    kind = EntryType(_int(type_, "entry type", 0, 2))
    if type(executable) is not bool or (executable and kind != EntryType.FILE):
        raise _fail(f"entry {name!r}: executable must be a bool, true only for files")
    size = _int(size, "entry size")
    if kind == EntryType.SYMLINK:
        if type(ref) is not str or len(ref.encode("utf-8")) != size:
            raise _fail(f"symlink {name!r}: target must be text of the declared size")
    else:
        _oid(ref, f"entry {name!r} id")
    mode = _mode(name, kind, executable, item[5]) if len(item) == 6 else None
    if kind == EntryType.SYMLINK:
        return SymlinkEntry(name, ref)
    if kind == EntryType.DIR:
        return DirEntry(name, size, ref)
    return FileEntry(name, size, ref, executable, mode)


def _mode(name: str, kind: EntryType, executable: bool, value: Any) -> int:
    """A file entry's explicit mode: permission bits that agree with `executable` and are not its default."""
    mode = _int(value, f"entry {name!r} mode", 0, _PERMISSION_BITS)
    if kind != EntryType.FILE:
        raise _fail(f"entry {name!r}: only a file carries a mode")
    if bool(mode & 0o100) != executable:
        raise _fail(f"entry {name!r}: mode {mode:o} disagrees with executable")
    if mode == default_mode(executable):
        raise _fail(f"entry {name!r}: the default mode {mode:o} must be left out")
    return mode


def _subsets(value: Any) -> tuple[Subset, ...]:
    items = _list(value, "subsets", MAX_SUBSETS)
    if not items:
        raise _fail("an empty subset list is left out, not encoded")
    out = tuple(_subset(item) for item in items)
    names = [s.name.encode("utf-8") for s in out]
    if names != sorted(set(names)):
        raise _fail("subsets must be sorted by name, each name once")
    return out


def _subset(value: Any) -> Subset:
    item = _list(value, "subset", 5)
    if len(item) not in (4, 5):
        raise _fail("subset must be [name, include, sample, seed] or [name, include, sample, seed, draw]")
    name, include, sample, seed = item[:4]
    if type(name) is not str or not _SUBSET_NAME.fullmatch(name):
        raise _fail(f"subset name {name!r} is invalid: 1-64 letters, digits, '.', '_' or '-'")
    patterns = _list(include, f"subset {name} patterns", MAX_PATTERNS)
    if not all(type(p) is str and 0 < len(p.encode("utf-8")) <= MAX_PATTERN for p in patterns):
        raise _fail(f"subset {name}: patterns must be non-empty text of at most {MAX_PATTERN} bytes")
    sample = _int(sample, "subset sample", 1, SAMPLE_ALL)
    draw = _int(item[4], "subset draw", DRAW_EXACT, DRAW_EXACT) if len(item) == 5 else DRAW_PER_FILE
    if draw != DRAW_PER_FILE and sample == SAMPLE_ALL:
        raise _fail(f"subset {name}: a sample of every file draws nothing; its draw must be left out")
    return Subset(name, tuple(patterns), sample, _int(seed, "subset seed", 0, 2**64 - 1), draw)


def check_subset(subset: Subset) -> None:
    """Raise ObjectFormatError unless `subset` may be part of a version record."""
    _subset(subset.fields())


def _check_sorted(entries: tuple[TreeEntry, ...]) -> None:
    prev: bytes | None = None
    for e in entries:
        key = e.name.encode("utf-8")
        if prev is not None and key <= prev:
            raise _fail(f"tree entries not strictly sorted at {e.name!r}")
        prev = key


def _chunks_from(fields: list[Any]) -> ChunkListNode:
    if len(fields) != 3:
        raise _fail("chunk-list node must have 3 fields")
    level = _int(fields[1], "level", 0, MAX_LEVEL)
    refs = _refs_from(fields[2], level)
    if not refs:
        raise _fail("a chunk-list node cannot be empty")
    if level == 0 and any(r.size == 0 for r in refs):
        raise _fail("a chunk cannot be empty")
    return ChunkListNode(level, refs)


def _file_from(fields: list[Any]) -> FileObject:
    if len(fields) != 5:
        raise _fail("file object must have 5 fields")
    size = _int(fields[1], "file size")
    p = _list(fields[2], "chunking params", 3)
    if len(p) != 3:
        raise _fail("chunking params must be [min, avg, max]")
    params = ChunkingParams(*p)
    level = _int(fields[3], "level", 0, MAX_LEVEL)
    refs = _refs_from(fields[4], level)
    if sum(r.size for r in refs) != size:
        raise _fail("file size differs from the sum of its chunk list")
    if level == 0 and any(r.size == 0 for r in refs):
        raise _fail("a chunk cannot be empty")
    return FileObject(size, params, level, refs)


def _tree_from(fields: list[Any]) -> TreeNode:
    if len(fields) != 3:
        raise _fail("tree object must have 3 fields")
    level = _int(fields[1], "level", 0, MAX_LEVEL)
    if level == 0:
        entries = tuple(_tree_entry(e) for e in _list(fields[2], "entries", FANOUT))
        _check_sorted(entries)
        return TreeNode(0, entries)
    return TreeNode(level, _refs_from(fields[2], level))


def _version_from(fields: list[Any]) -> VersionRecord:
    if len(fields) not in (11, 12):
        raise _fail("version record must have 11 or 12 fields")
    _, name, seq, root, parents, size, files, author, time, message = fields[:10]
    signature = fields[-1]
    subsets = _subsets(fields[10]) if len(fields) == 12 else ()
    try:
        check_dataset_name(name)
    except ProtocolError as e:
        raise _fail(str(e)) from None
    if type(message) is not str or len(message) > MAX_MESSAGE:
        raise _fail(f"version message must be text of at most {MAX_MESSAGE} characters")
    if type(signature) is not bytes or len(signature) != 64:
        raise _fail("version signature must be 64 bytes")
    if type(author) is not bytes or len(author) != 32:
        raise _fail("version author must be a 32-byte public key")
    return VersionRecord(
        name=name,
        seq=_int(seq, "version number", 1),
        root=_oid(root, "root tree id"),
        parents=tuple(_oid(p, "parent id") for p in _list(parents, "parents", MAX_PARENTS)),
        size=_int(size, "version size"),
        files=_int(files, "version file count"),
        author=author,
        time=_int(time, "version time"),
        message=message,
        signature=signature,
        subsets=subsets,
    )


_Obj = TypeVar("_Obj", bound=ManifestObject)

#: How the fields of each kind of manifest object become that object.
_FROM_FIELDS: dict[Kind, Callable[[list[Any]], ManifestObject]] = {
    Kind.CHUNKS: _chunks_from,
    Kind.FILE: _file_from,
    Kind.TREE: _tree_from,
    Kind.VERSION: _version_from,
}


def _decode(kind: Kind, data: bytes, expected_id: bytes | None, from_fields: Callable[[list[Any]], _Obj]) -> _Obj:
    if len(data) > MAX_OBJECT_SIZE:
        raise _fail(f"object of {len(data)} bytes exceeds {MAX_OBJECT_SIZE}")
    if expected_id is not None and object_id(kind, data) != expected_id:
        raise IntegrityError(f"{kind.name.lower()} object does not match its id {expected_id.hex()[:16]}")
    try:
        fields = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_reject_ext,
            max_bin_len=MAX_OBJECT_SIZE, max_str_len=MAX_OBJECT_SIZE,
        )
    except ObjectFormatError:
        raise
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise _fail(f"not valid msgpack: {e}") from None
    if type(fields) is not list or not fields or fields[0] != int(kind) or type(fields[0]) is not int:
        raise _fail(f"not a {kind.name.lower()} object")
    try:
        obj = from_fields(fields)
    except ValueError as e:
        raise _fail(str(e)) from None
    if encode(obj) != data:
        raise _fail(f"{kind.name.lower()} object is not canonically encoded")
    return obj


def decode(kind: Kind, data: bytes, expected_id: bytes | None = None) -> ManifestObject:
    """Decode and validate one manifest object of `kind`.

    With `expected_id`, the bytes are checked against it first, so a mismatch
    is reported as an IntegrityError before any parsing. Bytes of another kind
    (their tag is not `kind`) raise ObjectFormatError. Where the kind is known
    statically, `decode_file`, `decode_tree`, `decode_chunks` and
    `decode_version` return the object's own type.
    """
    from_fields = _FROM_FIELDS.get(kind)
    if from_fields is None:
        raise _fail(f"kind {kind!r} has no manifest encoding")
    return _decode(kind, data, expected_id, from_fields)


def decode_chunks(data: bytes, expected_id: bytes | None = None) -> ChunkListNode:
    """Decode a CHUNKS page (a part of a file's chunk list); see `decode`."""
    return _decode(Kind.CHUNKS, data, expected_id, _chunks_from)


def decode_file(data: bytes, expected_id: bytes | None = None) -> FileObject:
    """Decode a FILE object; see `decode`."""
    return _decode(Kind.FILE, data, expected_id, _file_from)


def decode_tree(data: bytes, expected_id: bytes | None = None) -> TreeNode:
    """Decode a TREE object (a directory or a page of one); see `decode`."""
    return _decode(Kind.TREE, data, expected_id, _tree_from)


def decode_version(data: bytes, expected_id: bytes | None = None) -> VersionRecord:
    """Decode a VERSION record (its signature is not checked here); see `decode`."""
    return _decode(Kind.VERSION, data, expected_id, _version_from)


# --- decoding stored objects ----------------------------------------------------
#
# A daemon reads its own manifest objects back many times during a fetch (the
# planner, the copier and the recorder each read every file's), and the full
# checks above, with their canonical re-encoding, cost three times the decoding.
# Bytes that passed them when stored, or were encoded here, pass them again: the
# id check below makes sure they are those very bytes.


def decode_stored(kind: Kind, data: bytes, expected_id: bytes) -> ManifestObject:
    """Decode an object from this daemon's own store: its bytes are checked against
    `expected_id` (IntegrityError), not the format rules, which they met when stored.

    Only for bytes that went through `decode` (or came from `encode`) before they were stored."""
    if object_id(kind, data) != expected_id:
        raise IntegrityError(f"stored {kind.name.lower()} object does not match its id {expected_id.hex()[:16]}")
    fields = msgpack.unpackb(data, raw=False, use_list=True)
    if type(fields) is not list or not fields or fields[0] != int(kind):
        raise _fail(f"stored object {expected_id.hex()[:16]} is not a {kind.name.lower()} object")
    build = _FROM_STORED.get(kind)
    return _FROM_FIELDS[kind](fields) if build is None else build(fields)


def stored_file(data: bytes, expected_id: bytes) -> FileObject:
    """A stored FILE object; see `decode_stored`."""
    return cast(FileObject, decode_stored(Kind.FILE, data, expected_id))


def stored_tree(data: bytes, expected_id: bytes) -> TreeNode:
    """A stored TREE object (a directory or a page of one); see `decode_stored`."""
    return cast(TreeNode, decode_stored(Kind.TREE, data, expected_id))


def stored_chunks(data: bytes, expected_id: bytes) -> ChunkListNode:
    """A stored CHUNKS page; see `decode_stored`."""
    return cast(ChunkListNode, decode_stored(Kind.CHUNKS, data, expected_id))


#: The chunking parameters seen so far: a dataset uses one or two sets, each checked once.
_PARAMS: dict[tuple[int, int, int], ChunkingParams] = {}


def _stored_params(fields: list[int]) -> ChunkingParams:
    key = (fields[0], fields[1], fields[2])
    params = _PARAMS.get(key)
    if params is None:
        params = _PARAMS.setdefault(key, ChunkingParams(*key))
    return params


def _stored_refs(items: list[list[Any]]) -> tuple[Ref, ...]:
    return tuple([Ref(size, oid) for size, oid in items])


def _stored_entry(item: list[Any]) -> TreeEntry:
    kind = item[1]
    if kind == EntryType.FILE:
        return FileEntry(item[0], item[3], item[4], item[2], item[5] if len(item) == 6 else None)
    if kind == EntryType.DIR:
        return DirEntry(item[0], item[3], item[4])
    return SymlinkEntry(item[0], item[4])


def _stored_file(fields: list[Any]) -> FileObject:
    return FileObject(fields[1], _stored_params(fields[2]), fields[3], _stored_refs(fields[4]))


def _stored_tree(fields: list[Any]) -> TreeNode:
    if fields[1] == 0:
        return TreeNode(0, tuple([_stored_entry(item) for item in fields[2]]))
    return TreeNode(fields[1], _stored_refs(fields[2]))


def _stored_chunks(fields: list[Any]) -> ChunkListNode:
    return ChunkListNode(fields[1], _stored_refs(fields[2]))


#: The fast builders; a VERSION record, read once per fetch, takes the full path.
_FROM_STORED: dict[Kind, Callable[[list[Any]], ManifestObject]] = {
    Kind.CHUNKS: _stored_chunks,
    Kind.FILE: _stored_file,
    Kind.TREE: _stored_tree,
}
