"""Manifest objects: round trips, canonical encoding, hostile input, signatures."""

from dataclasses import replace

import blake3
import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.protocol.errors import IntegrityError, LocalProtocolError, ObjectFormatError, ProtocolError
from shoal.protocol.format.chunking import DEFAULT_PARAMS, ChunkingParams
from shoal.protocol.format.hashing import ID_SIZE, Kind, chunk_id, object_id
from shoal.protocol.format.manifest import check_version_signature, sign_version
from shoal.protocol.format.objects import (
    FANOUT,
    MAX_OBJECT_SIZE,
    ChunkListNode,
    DirEntry,
    EntryType,
    FileEntry,
    FileObject,
    Ref,
    SymlinkEntry,
    TreeNode,
    VersionRecord,
    decode,
    decode_chunks,
    decode_file,
    decode_stored,
    decode_tree,
    decode_version,
    encode,
    encode_with_id,
    kind_of,
    stored_chunks,
    stored_file,
    stored_tree,
)

ID = bytes(range(32))
ID2 = bytes(range(1, 33))
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
AUTHOR = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
MIB = 1024 * 1024


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def version(**changes: object) -> VersionRecord:
    fields: dict = {
        "name": "imagenet-mini", "seq": 2, "root": ID, "parents": (ID2,), "size": 123456, "files": 7,
        "author": AUTHOR, "time": 1767225600, "message": "re-crop val/",
    }
    fields.update(changes)
    return sign_version(VersionRecord(**fields), KEY)


SAMPLES = [
    ChunkListNode(0, (Ref(70000, ID), Ref(1, ID2))),
    ChunkListNode(2, (Ref(2**40, ID),)),
    FileObject(0, DEFAULT_PARAMS, 0, ()),
    FileObject(70001, DEFAULT_PARAMS, 0, (Ref(70000, ID), Ref(1, ID2))),
    FileObject(2**40 + 5, ChunkingParams(64, 256, 1024), 1, (Ref(2**40, ID), Ref(5, ID2))),
    TreeNode(0, ()),
    TreeNode(
        0,
        (
            FileEntry("Z", 10, ID, executable=True),
            DirEntry("a", 2**33, ID2),
            SymlinkEntry("l", "a/é"),
            FileEntry("m", 5, ID, mode=0o600),
            FileEntry("\u00e9t\u00e9", 0, ID),
        ),
    ),
    TreeNode(1, (Ref(3, ID), Ref(0, ID2))),
    version(),
    version(seq=1, parents=(), message=""),
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trip_and_id(obj) -> None:
    oid, data = encode_with_id(obj)
    assert data == encode(obj)
    # The id is BLAKE3 derive-key over the encoding with the kind's context, computed independently here.
    contexts = {
        1: "shoal 2026-11 chunk-list v1", 2: "shoal 2026-11 file v1", 3: "shoal 2026-11 tree v1", 4: "shoal 2026-11 version v1",
    }
    assert oid == blake3.blake3(data, derive_key_context=contexts[data[1]]).digest()
    assert decode(kind_of(obj), data, oid) == obj


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_typed_decoders_return_their_kind_and_refuse_others(obj) -> None:
    oid, data = encode_with_id(obj)
    typed = {Kind.CHUNKS: decode_chunks, Kind.FILE: decode_file, Kind.TREE: decode_tree, Kind.VERSION: decode_version}
    for kind, decoder in typed.items():
        if kind == kind_of(obj):
            assert decoder(data, oid) == obj and type(decoder(data)) is type(obj)
        else:
            with pytest.raises(ObjectFormatError, match=f"not a {kind.name.lower()} object"):
                decoder(data)


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_stored_bytes_decode_to_what_the_full_decoder_gives(obj) -> None:
    oid, data = encode_with_id(obj)
    kind = kind_of(obj)
    stored = decode_stored(kind, data, oid)
    assert stored == obj and type(stored) is type(obj)
    typed = {Kind.CHUNKS: stored_chunks, Kind.FILE: stored_file, Kind.TREE: stored_tree}
    if kind in typed:
        assert typed[kind](data, oid) == obj
    # The id is what makes skipping the format checks sound: other bytes are refused.
    with pytest.raises(IntegrityError):
        decode_stored(kind, data, ID)
    other = next(k for k in (Kind.CHUNKS, Kind.FILE, Kind.TREE) if k != kind)
    with pytest.raises(ObjectFormatError, match=f"not a {other.name.lower()} object"):
        decode_stored(other, data, object_id(other, data))


def test_entry_kinds_carry_their_own_fields() -> None:
    link = SymlinkEntry("l", "a/é")
    assert link.type == EntryType.SYMLINK and link.size == 4 and not hasattr(link, "id")
    assert DirEntry("d", 7, ID2).type == EntryType.DIR and not hasattr(DirEntry("d", 7, ID2), "target")
    f = FileEntry("f", 1, ID)
    assert f.type == EntryType.FILE and not f.executable and f.mode is None and f.permissions() == 0o644
    # The kind is a class attribute: it is not a field, so it neither takes part in
    # construction nor in equality beyond the class itself.
    assert FileEntry("f", 1, ID) == f and FileEntry("f", 1, ID, executable=True).permissions() == 0o755


def test_ids_are_separated_by_kind() -> None:
    data = encode(FileObject(0, DEFAULT_PARAMS, 0, ()))
    ids = {object_id(kind, data) for kind in Kind}
    assert len(ids) == len(Kind) and all(len(i) == ID_SIZE for i in ids)
    assert chunk_id(data) == object_id(Kind.CHUNK, data)


def test_known_encoding_of_a_file_object() -> None:
    # [2, 70001, [16384, 65536, 262144], 0, [[70001, ID]]], written out by hand from the spec's table.
    expected = bytes.fromhex("9502" "ce00011171" "93cd4000ce00010000ce00040000" "00" "9192ce00011171c420") + ID
    assert encode(FileObject(70001, DEFAULT_PARAMS, 0, (Ref(70001, ID),))) == expected


def test_wrong_id_is_an_integrity_error() -> None:
    data = encode(SAMPLES[3])
    with pytest.raises(IntegrityError):
        decode(Kind.FILE, data, ID)
    # The same bytes under another kind's id are not accepted either.
    with pytest.raises(IntegrityError):
        decode(Kind.FILE, data, object_id(Kind.TREE, data))


# --- non-canonical encodings ----------------------------------------------------

EMPTY_FILE = bytes.fromhex("9502009340cd0100cd04000090")  # [2, 0, [64, 256, 1024], 0, []]
TREE_ONE = pack([3, 0, [["a", 0, False, 1, ID]]])


@pytest.mark.parametrize(
    "kind, data",
    [
        (Kind.FILE, bytes.fromhex("9502cc009340cd0100cd04000090")),  # size 0 as uint8
        (Kind.FILE, bytes.fromhex("9502009340cd0100ce000004000090")),  # 1024 as uint32
        (Kind.FILE, bytes.fromhex("95020093cd0040cd0100cd04000090")),  # 64 as uint16
        (Kind.FILE, bytes.fromhex("9502009340cd0100cd0400cc0090")),  # level 0 as uint8
        (Kind.FILE, bytes.fromhex("9502009340cd0100cd040000dc0000")),  # empty list as array16
        (Kind.FILE, bytes.fromhex("dc0005") + EMPTY_FILE[1:]),  # array16 header for 5 items
        (Kind.FILE, EMPTY_FILE + b"\x00"),  # trailing byte
        (Kind.FILE, EMPTY_FILE + EMPTY_FILE),  # two objects
        (Kind.FILE, pack({"kind": 2, "size": 0})),  # a map
        (Kind.FILE, pack([2, 0, {64: 256}, 0, []])),  # a map inside
        (Kind.FILE, pack([2, 0.0, [64, 256, 1024], 0, []])),  # a float
        (Kind.FILE, pack([2, None, [64, 256, 1024], 0, []])),  # nil
        (Kind.FILE, pack([2, 0, [64, 256, 1024], False, []])),  # a bool for the level
        (Kind.FILE, b"\x95\x02\xd0\x00" + EMPTY_FILE[3:]),  # size as int8
        (Kind.FILE, pack([2, 0, [64, 256, 1024], 0, [], 0])),  # extra field
        (Kind.FILE, pack([2, 0, [64, 256, 1024], 0])),  # missing field
        (Kind.FILE, pack([2, 0, [64, 256, 1024], 0, msgpack.ExtType(1, b"x")])),  # extension type
        (Kind.TREE, TREE_ONE.replace(b"\xa1a", b"\xd9\x01a")),  # str8 for a 1-byte name
        (Kind.TREE, pack([3, 0, [[b"a", 0, False, 1, ID]]])),  # name as binary
        (Kind.TREE, pack([3, 0, [["a", 0, False, 1, ID.hex()]]])),  # id as text
        (Kind.TREE, TREE_ONE[:-34] + b"\xc5\x00\x20" + ID),  # bin16 for a 32-byte id
        (Kind.TREE, EMPTY_FILE),  # a FILE where a TREE belongs
        (Kind.CHUNKS, b""),
        (Kind.VERSION, encode(version())[:-1]),  # truncated
    ],
)
def test_non_canonical_or_malformed_rejected(kind: Kind, data: bytes) -> None:
    with pytest.raises(ObjectFormatError):
        decode(kind, data)


def test_canonical_samples_above_still_decode() -> None:
    # Guards the table above: the unmodified bytes it was derived from are valid.
    assert decode(Kind.FILE, EMPTY_FILE) == FileObject(0, ChunkingParams(64, 256, 1024), 0, ())
    entry = decode_tree(TREE_ONE).entries[0]
    assert isinstance(entry, FileEntry) and entry.name == "a"


def test_oversized_object_rejected_before_parsing() -> None:
    data = pack([3, 0, []]) + b"\x00" * MAX_OBJECT_SIZE
    with pytest.raises(ObjectFormatError, match="exceeds"):
        decode(Kind.TREE, data)


# --- field rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, fields",
    [
        (Kind.FILE, [2, 5, [64, 256, 1024], 0, [[3, ID]]]),  # size is not the sum of its chunks
        (Kind.FILE, [2, 3, [64, 256, 1024], 0, [[3, ID], [0, ID2]]]),  # an empty chunk
        (Kind.FILE, [2, 0, [64, 256, 1024], 1, []]),  # a paged level with no pages
        (Kind.FILE, [2, 0, [32, 256, 1024], 0, []]),  # min below 64
        (Kind.FILE, [2, 0, [512, 256, 1024], 0, []]),  # min above avg
        (Kind.FILE, [2, 0, [64, 256], 0, []]),  # two params
        (Kind.FILE, [2, 0, [64, 256, 1024], 9, [[0, ID]]]),  # level above 8
        (Kind.FILE, [2, 17 * MIB, [64, 256, 1024], 0, [[17 * MIB, ID]]]),  # a chunk above 16 MiB
        (Kind.FILE, [2, 1025, [64, 256, 1024], 0, [[1, ID]] * 1025]),  # more than FANOUT refs
        (Kind.FILE, [2, 1, [64, 256, 1024], 0, [[1, ID[:31]]]]),  # a 31-byte id
        (Kind.FILE, [2, 2**63, [64, 256, 1024], 1, [[2**63, ID]]]),  # size above 2**63 - 1
        (Kind.CHUNKS, [1, 0, []]),  # an empty page
        (Kind.CHUNKS, [1, 0, [[1, ID, 0]]]),  # a ref of three fields
        (Kind.CHUNKS, [2, 0, [[1, ID]]]),  # wrong kind tag
        (Kind.TREE, [3, 1, []]),  # a paged directory with no pages
        (Kind.VERSION, [4, "x", 0, ID, [], 0, 0, AUTHOR, 0, "", b"\x00" * 64]),  # seq 0
        (Kind.VERSION, [4, "-x", 1, ID, [], 0, 0, AUTHOR, 0, "", b"\x00" * 64]),  # bad dataset name
        (Kind.VERSION, [4, "x", 1, ID, [ID] * 17, 0, 0, AUTHOR, 0, "", b"\x00" * 64]),  # 17 parents
        (Kind.VERSION, [4, "x", 1, ID, [], 0, 0, AUTHOR, 0, "m" * 4097, b"\x00" * 64]),  # long message
        (Kind.VERSION, [4, "x", 1, ID, [], 0, 0, AUTHOR[:31], 0, "", b"\x00" * 64]),  # short author
        (Kind.VERSION, [4, "x", 1, ID, [], 0, 0, AUTHOR, 0, "", b"\x00" * 63]),  # short signature
        (Kind.VERSION, [4, "x", 1, ID, [], 0, 0, AUTHOR, 0, ""]),  # unsigned form
    ],
)
def test_field_rules(kind: Kind, fields: list) -> None:
    with pytest.raises(ObjectFormatError):
        decode(kind, pack(fields))


def test_chunk_page_with_an_empty_chunk_rejected() -> None:
    # A FILE refuses an empty chunk in its inline list; a level-0 CHUNKS page lists the same
    # kind of refs and must refuse it too (SPEC "Objects": chunk length 1 to 16 MiB).
    with pytest.raises(ObjectFormatError):
        decode(Kind.CHUNKS, pack([1, 0, [[0, ID], [1, ID2]]]))


def entry(name: object, type_: int = 0, executable: bool = False, size: int = 1, ref: object = ID) -> list:
    return [name, type_, executable, size, ref]


@pytest.mark.parametrize(
    "entries",
    [
        [entry("b"), entry("a")],  # unsorted
        [entry("a"), entry("a")],  # duplicate
        [entry("a"), entry("Z")],  # bytewise, "Z" (5a) comes before "a" (61)
        [entry("..")],
        [entry(".")],
        [entry("")],
        [entry("a/b")],
        [entry("/etc")],
        [entry("a\x00b")],
        [entry("x" * 256)],
        [entry(7)],
        [entry("d", 1, True)],  # executable directory
        [entry("l", 2, True, 1, "a")],  # executable symlink
        [entry("l", 2, False, 2, "a")],  # symlink size is not the target's length
        [entry("l", 2, False, 3, b"abc")],  # symlink target as bytes
        [entry("d", 1, False, 0, "a")],  # directory ref as text
        [entry("f", 3)],  # unknown type
        [entry("f", 0, 1)],  # executable as an int
        [["f", 0, False, 1]],  # four fields
    ],
)
def test_hostile_tree_entries_rejected(entries: list) -> None:
    with pytest.raises(ObjectFormatError):
        decode(Kind.TREE, pack([3, 0, entries]))


def test_name_of_255_utf8_bytes_accepted() -> None:
    name = "\u00e9" * 127 + "x"
    assert len(name.encode()) == 255
    node = decode(Kind.TREE, pack([3, 0, [entry(name)]]))
    assert node.entries[0].name == name  # type: ignore[union-attr]


# --- random input -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from([Kind.CHUNKS, Kind.FILE, Kind.TREE, Kind.VERSION]), data=st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_errors(kind: Kind, data: bytes) -> None:
    try:
        obj = decode(kind, data)
    except ProtocolError:
        return
    assert encode(obj) == data  # whatever is accepted is canonical


@settings(max_examples=400, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_objects_only_raise_protocol_errors(sample, edits) -> None:
    data = bytearray(encode(sample))
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        obj = decode(kind_of(sample), bytes(data))
    except ProtocolError:
        return
    assert encode(obj) == bytes(data)


def _names():
    alphabet = st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="/")
    return st.text(alphabet=alphabet, min_size=1, max_size=20).filter(lambda n: n not in (".", ".."))


@settings(max_examples=100, deadline=None)
@given(
    names=st.sets(_names(), max_size=30),
    sizes=st.lists(st.integers(0, 2**63 - 1), min_size=30, max_size=30),
    data=st.data(),
)
def test_random_valid_trees_round_trip(names, sizes, data) -> None:
    entries = []
    for name, size in zip(sorted(names, key=lambda n: n.encode()), sizes):
        kind = data.draw(st.sampled_from(EntryType))
        if kind == EntryType.SYMLINK:
            target = data.draw(_names())
            entries.append(SymlinkEntry(name, target))
        elif kind == EntryType.DIR:
            entries.append(DirEntry(name, size, ID))
        else:
            entries.append(FileEntry(name, size, ID, executable=data.draw(st.booleans())))
    node = TreeNode(0, tuple(entries))
    oid, encoded = encode_with_id(node)
    assert decode(Kind.TREE, encoded, oid) == node
    assert stored_tree(encoded, oid) == node


# --- signatures -------------------------------------------------------------------------------


def test_signed_version_verifies() -> None:
    record = version()
    check_version_signature(record)
    assert KEY.public_key().verify(record.signature, record.signed_bytes()) is None
    assert record.signed_bytes().startswith(b"shoal 2026-11 version signature v1\x00")


@pytest.mark.parametrize(
    "change",
    [{"seq": 3}, {"root": ID2}, {"parents": ()}, {"size": 1}, {"files": 8}, {"time": 0}, {"message": "x"}, {"name": "other"}],
)
def test_any_changed_field_breaks_the_signature(change: dict) -> None:
    tampered = replace(version(), **change)
    with pytest.raises(IntegrityError):
        check_version_signature(tampered)


def test_signature_by_another_key_rejected() -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
    record = version()
    forged = replace(record, signature=other.sign(record.signed_bytes()))
    with pytest.raises(IntegrityError):
        check_version_signature(forged)
    # A signature over the bare encoding, without the domain prefix, is not a version signature.
    bare = replace(record, signature=KEY.sign(record.signed_bytes()[len(b"shoal 2026-11 version signature v1\x00") :]))
    with pytest.raises(IntegrityError):
        check_version_signature(bare)


def test_signing_with_a_key_that_is_not_the_author_refused() -> None:
    with pytest.raises(LocalProtocolError):
        sign_version(VersionRecord("x", 1, ID, (), 0, 0, AUTHOR, 0, ""), Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))


def test_a_full_page_of_longest_names_fits_in_one_object() -> None:
    # FANOUT and the object size limit must agree, or a legal directory could not be encoded.
    names = sorted((f"{i:04d}" + "x" * 251 for i in range(FANOUT)), key=str.encode)
    node = TreeNode(0, tuple(SymlinkEntry(n, "a") for n in names))
    assert len(encode(node)) <= MAX_OBJECT_SIZE
    assert decode(Kind.TREE, encode(node)) == node
