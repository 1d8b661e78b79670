"""The spec's test vectors, checked two ways.

The vectors are the ```shoal-vectors blocks of SPEC.md. They must equal, line for
line, both what shoal's code computes and what a second implementation written
from the spec's text computes: a minimal msgpack encoder, the byte-wise gear
chunker with the gear table and masks read from the spec, and the paging rule.
So an edited vector, an edited table or a change to the code all fail here.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import msgpack
import pyfastcdc.py.constants as fastcdc_constants
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal.protocol.errors import ObjectFormatError
from shoal.protocol.format import objects
from shoal.protocol.format.chunking import DEFAULT_PARAMS, ChunkingParams, make_chunker
from shoal.protocol.format.hashing import CONTEXTS, Kind, chunk_id, object_id
from shoal.protocol.format.manifest import FileBuilder, TreeBuilder, check_version_signature, sign_version, walk_tree
from shoal.protocol.format.objects import (
    DirEntry,
    EntryType,
    FileEntry,
    SymlinkEntry,
    VersionRecord,
    decode,
    encode_with_id,
)

REPO = Path(__file__).resolve().parents[2]
VECTORS = "shoal-vectors"

# --- the inputs, as the spec's "Test vectors" section describes them ---------

PARAMS = (64, 256, 1024)
DEFAULT = (16384, 65536, 262144)
KEY_SEED = bytes(range(32))
NAME = "vectors"
TIME = 1767225600
MESSAGES = ("first version", "second version: many/ removed")
MANY = 1025
#: Files whose whole chunk list, and encoded FILE object, the spec lists.
LISTED_CHUNKS = 32
SHOWN_OBJECTS = ("README.txt", "empty", "run.sh")


def xof(label: str, length: int) -> bytes:
    return blake3.blake3(f"shoal test vector {label}".encode()).digest(length=length)


def vector_tree() -> dict[str, tuple[bytes, bool] | str]:
    """path -> (content, executable) for a file, or the target text for a symlink."""
    tree: dict[str, tuple[bytes, bool] | str] = {
        "README.txt": (b"shoal test vectors\n", False),
        "data/big.bin": (xof("data/big.bin", 400_000), False),
        "data/random.bin": (xof("data/random.bin", 5000), False),
        "data/up": "../README.txt",
        "donn\u00e9es.csv": (b"a,b\n1,2\n", False),
        "empty": (b"", False),
        "link": "data/random.bin",
        "run.sh": (b"#!/bin/sh\necho shoal\n", True),
    }
    for i in range(MANY):
        tree[f"many/{i:04d}"] = (f"{i:04d}\n".encode(), False)
    return tree


# --- reading the spec ----------------------------------------------------------


def spec_text() -> str:
    return (REPO / "SPEC.md").read_text(encoding="utf-8")


def blocks(text: str, info: str) -> list[str]:
    found = re.findall(rf"^```{re.escape(info)}\n(.*?)^```\s*$", text, flags=re.M | re.S)
    assert found, f"no ```{info} block in the spec"
    return found


def labelled(text: str, info: str) -> dict[str, str]:
    """`label = value` lines; an indented line continues the previous value."""
    pairs: dict[str, str] = {}
    last = None
    for block in blocks(text, info):
        for line in block.splitlines():
            if not line.strip():
                continue
            if line[0].isspace():
                assert last is not None, f"continuation line with nothing to continue: {line!r}"
                pairs[last] += line.strip()
                continue
            label, sep, value = line.partition(" = ")
            assert sep, f"not a `label = value` line: {line!r}"
            assert label not in pairs, f"label {label!r} appears twice"
            pairs[label] = value.strip()
            last = label
    return pairs


@dataclass(frozen=True)
class SpecConstants:
    contexts: dict[Kind, str]
    signature_domain: bytes
    fanout: int
    gear: list[int]
    masks: dict[int, int]


def spec_constants(text: str) -> SpecConstants:
    consts = labelled(text, "shoal-constants")
    gear = [int(word, 16) for block in blocks(text, "shoal-gear") for word in block.split()]
    masks = {}
    for line in blocks(text, "shoal-masks")[0].splitlines():
        bits, mask = line.split()
        masks[int(bits)] = int(mask, 16)
    return SpecConstants(
        contexts={kind: consts[f"context {kind.name}"] for kind in Kind},
        signature_domain=bytes.fromhex(consts["signature domain"]),
        fanout=int(consts["fanout"]),
        gear=gear,
        masks=masks,
    )


# --- turning either implementation's results into labelled vectors -----------


@dataclass
class Built:
    """What an implementation produced for the vector tree."""

    chunks: dict[str, list[tuple[int, int, bytes]]]
    files: dict[str, bytes]
    default_files: dict[str, bytes]
    trees: dict[str, bytes]
    #: every object it encoded: id -> bytes
    store: dict[bytes, bytes]
    public_key: bytes
    versions: list[tuple[bytes, bytes, bytes]]  # (id, encoded, signed bytes)


def labels(b: Built) -> dict[str, str]:
    out = {
        "params": " ".join(map(str, PARAMS)),
        "private key seed": KEY_SEED.hex(),
        "public key": b.public_key.hex(),
    }
    for path, chunks in b.chunks.items():
        if path.startswith("many/"):
            continue  # their files are listed through many/'s tree pages
        shown = list(enumerate(chunks))
        if len(chunks) > LISTED_CHUNKS:
            out[f"chunk count {path}"] = str(len(chunks))
            shown = shown[:2] + shown[-1:]
        for i, (offset, length, cid) in shown:
            out[f"chunk {path}[{i}]"] = f"{offset} {length} {cid.hex()}"
    for path, fid in b.files.items():
        if path.startswith("many/"):
            continue
        out[f"file {path}"] = fid.hex()
        if path in SHOWN_OBJECTS:
            out[f"file object {path}"] = b.store[fid].hex()
        out.update(_pages(b.store, f"page {path}", b.store[fid], 3, 4))
    for path, fid in b.default_files.items():
        out[f"file (default params) {path}"] = fid.hex()
    for path, tid in b.trees.items():
        out[f"tree {path or '/'}"] = tid.hex()
        if path in ("", "data"):
            out[f"tree object {path or '/'}"] = b.store[tid].hex()
        out.update(_pages(b.store, f"page {path or '/'}", b.store[tid], 1, 2))
    for n, (vid, data, signed) in enumerate(b.versions, 1):
        out[f"version {n} signed bytes"] = signed.hex()
        out[f"version {n} object"] = data.hex()
        out[f"version {n} id"] = vid.hex()
    return out


def _pages(store: dict[bytes, bytes], label: str, data: bytes, level_at: int, entries_at: int) -> dict[str, str]:
    """Label the pages below a paged object, depth first, as `level size id`."""
    out: dict[str, str] = {}

    def walk(level: int, entries: list) -> None:
        if level == 0:
            return
        for size, pid in entries:
            out[f"{label}[{len(out)}]"] = f"{level - 1} {size} {pid.hex()}"
            page = msgpack.unpackb(store[pid])
            walk(page[1], page[2])

    fields = msgpack.unpackb(data)
    walk(fields[level_at], fields[entries_at])
    return out


def _dirs(tree: dict) -> list[str]:
    """Every directory of the tree, deepest first, the root ("") last."""
    found = {""}
    for path in tree:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(found, key=lambda d: -(d.count("/") + 1) if d else 0)


def _children(tree: dict, d: str) -> list[str]:
    prefix = f"{d}/" if d else ""
    names = {p[len(prefix) :].split("/")[0] for p in tree if p.startswith(prefix)}
    return sorted(names, key=lambda n: n.encode("utf-8"))


def _join(d: str, name: str) -> str:
    return f"{d}/{name}" if d else name


def build(tree: dict, chunk: Callable, file_object: Callable, tree_object: Callable, sign: Callable, public: bytes) -> Built:
    """Build the vector tree with one implementation's primitives, the same way for both."""
    b = Built({}, {}, {}, {}, {}, public, [])
    sizes: dict[str, int] = {}
    for path, item in tree.items():
        if isinstance(item, tuple):
            b.chunks[path] = chunk(item[0], PARAMS)
            b.files[path] = file_object(PARAMS, b.chunks[path], b.store)
            if path in SHOWN_OBJECTS:
                b.default_files[path] = file_object(DEFAULT, chunk(item[0], DEFAULT), b.store)

    def entries_of(d: str, skip: tuple[str, ...] = ()) -> list[list]:
        rows = []
        for name in _children(tree, d):
            path = _join(d, name)
            if path in skip:
                continue
            item = tree.get(path)
            if isinstance(item, str):
                rows.append([name, 2, False, len(item.encode("utf-8")), item])
            elif isinstance(item, tuple):
                rows.append([name, 0, item[1], len(item[0]), b.files[path]])
            else:
                rows.append([name, 1, False, sizes[path], b.trees[path]])
        return rows

    for d in _dirs(tree):
        rows = entries_of(d)
        b.trees[d] = tree_object(rows, b.store)
        sizes[d] = sum(r[3] for r in rows)
    files = sum(isinstance(item, tuple) for item in tree.values())

    # Version 2 records the tree with many/ removed.
    rows2 = entries_of("", skip=("many",))
    root2 = tree_object(rows2, b.store)
    roots = [(b.trees[""], sizes[""], files), (root2, sum(r[3] for r in rows2), files - MANY)]
    parents: list[bytes] = []
    for seq, ((root, size, count), message) in enumerate(zip(roots, MESSAGES), 1):
        fields = [4, NAME, seq, root, parents, size, count, public, TIME, message]
        b.versions.append(sign(fields))
        parents = [b.versions[-1][0]]
    return b


# --- implementation 1: shoal's code ---------------------------------------------


def shoal_chunks(data: bytes, params: tuple[int, int, int]) -> list[tuple[int, int, bytes]]:
    return [(c.offset, c.length, chunk_id(c.data)) for c in make_chunker(ChunkingParams(*params)).cut_buf(data)]


def shoal_file(params: tuple[int, int, int], chunks: list, store: dict) -> bytes:
    builder = FileBuilder(ChunkingParams(*params), store.__setitem__)
    for _, length, cid in chunks:
        builder.add_chunk(cid, length)
    return builder.finish()[0]


def shoal_tree(rows: list[list], store: dict) -> bytes:
    builder = TreeBuilder(store.__setitem__)
    for name, type_, executable, size, ref in rows:
        if type_ == EntryType.SYMLINK:
            assert not executable and size == len(ref.encode("utf-8"))
            builder.add(SymlinkEntry(name, ref))
        elif type_ == EntryType.DIR:
            assert not executable
            builder.add(DirEntry(name, size, ref))
        else:
            builder.add(FileEntry(name, size, ref, executable))
    return builder.finish()


def shoal_build() -> Built:
    key = Ed25519PrivateKey.from_private_bytes(KEY_SEED)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    store: dict[bytes, bytes] = {}

    def sign(fields: list) -> tuple[bytes, bytes, bytes]:
        _, name, seq, root, parents, size, files, author, time, message = fields
        record = VersionRecord(name, seq, root, tuple(parents), size, files, author, time, message)
        signed = sign_version(record, key)
        vid, data = encode_with_id(signed)
        store[vid] = data
        return vid, data, record.signed_bytes()

    built = build(vector_tree(), shoal_chunks, shoal_file, shoal_tree, sign, public)
    built.store.update(store)
    return built


# --- implementation 2: from the spec's text alone ------------------------------------


def pack(value: object) -> bytes:
    """The spec's canonical msgpack subset: unsigned ints, bools, str, bin and arrays, shortest form."""
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        assert 0 <= value < 2**64
        if value < 0x80:
            return bytes([value])
        for tag, width in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if value < 1 << (8 * width):
                return bytes([tag]) + value.to_bytes(width, "big")
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _header(len(raw), 0xA0, 32, (0xD9, 0xDA, 0xDB)) + raw
    if isinstance(value, bytes):
        return _header(len(value), None, 0, (0xC4, 0xC5, 0xC6)) + value
    assert isinstance(value, list)
    return _header(len(value), 0x90, 16, (None, 0xDC, 0xDD)) + b"".join(pack(v) for v in value)


def _header(n: int, fix: int | None, fix_limit: int, tags: tuple) -> bytes:
    if n < fix_limit:
        return bytes([fix | n])  # type: ignore[operator]
    for tag, width in zip(tags, (1, 2, 4)):
        if tag is not None and n < 1 << (8 * width):
            return bytes([tag]) + n.to_bytes(width, "big")
    raise AssertionError("too long")


def _ref_size(ref: list) -> int:
    return ref[0]


class FromSpec:
    """A second implementation: every rule and constant comes from the spec text."""

    def __init__(self, consts: SpecConstants) -> None:
        self.c = consts

    def object_id(self, kind: Kind, data: bytes) -> bytes:
        return blake3.blake3(data, derive_key_context=self.c.contexts[kind]).digest()

    def chunks(self, data: bytes, params: tuple[int, int, int]) -> list[tuple[int, int, bytes]]:
        out, offset = [], 0
        while offset < len(data):
            length = self.cut(data, offset, params)
            out.append((offset, length, self.object_id(Kind.CHUNK, data[offset : offset + length])))
            offset += length
        return out

    def cut(self, data: bytes, start: int, params: tuple[int, int, int]) -> int:
        """The spec's byte-wise statement of the cut-point search."""
        lo, avg, hi = params
        n = len(data) - start
        if n <= lo:
            return n
        bits = round(math.log2(avg))
        small, large = self.c.masks[bits + 1], self.c.masks[bits - 1]
        end = min(n, hi)
        center = min(avg, n)
        h = 0
        for p in range(lo - lo % 2, end - end % 2):
            h = (2 * h + self.c.gear[data[start + p]]) % 2**64
            if h & (small if p < center - center % 2 else large) == 0:
                return p
        return end

    def paged(self, kind: Kind, items: list, size_of: Callable[[list], int], store: dict) -> tuple[int, list]:
        """Cut runs of FANOUT into pages, level by level, until one run is left: (level, top run)."""
        level = 0
        while len(items) > self.c.fanout:
            refs = []
            for i in range(0, len(items), self.c.fanout):
                run = items[i : i + self.c.fanout]
                data = pack([int(kind), level, run])
                pid = self.object_id(kind, data)
                store[pid] = data
                refs.append([sum(map(size_of, run)), pid])
            items, level, size_of = refs, level + 1, _ref_size
        return level, items

    def file(self, params: tuple[int, int, int], chunks: list, store: dict) -> bytes:
        refs = [[length, cid] for _, length, cid in chunks]
        level, top = self.paged(Kind.CHUNKS, refs, _ref_size, store)
        data = pack([2, sum(r[0] for r in refs), list(params), level, top])
        fid = self.object_id(Kind.FILE, data)
        store[fid] = data
        return fid

    def tree(self, rows: list[list], store: dict) -> bytes:
        level, top = self.paged(Kind.TREE, rows, lambda row: row[3], store)
        data = pack([3, level, top])
        tid = self.object_id(Kind.TREE, data)
        store[tid] = data
        return tid

    def build(self) -> Built:
        key = Ed25519PrivateKey.from_private_bytes(KEY_SEED)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

        def sign(fields: list) -> tuple[bytes, bytes, bytes]:
            signed = self.c.signature_domain + pack(fields)
            data = pack(fields + [key.sign(signed)])
            return self.object_id(Kind.VERSION, data), data, signed

        return build(vector_tree(), self.chunks, self.file, self.tree, sign, public)


# --- the tests ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> str:
    return spec_text()


@pytest.fixture(scope="module")
def expected(spec: str) -> dict[str, str]:
    return labelled(spec, VECTORS)


def _diff(actual: dict[str, str], expected: dict[str, str]) -> list[str]:
    lines = [f"missing from the spec: {k} = {v}" for k, v in actual.items() if k not in expected]
    lines += [f"not produced: {k}" for k in expected if k not in actual]
    lines += [f"{k}:\n  spec {expected[k]}\n  got  {actual[k]}" for k in expected if k in actual and actual[k] != expected[k]]
    return lines


def test_spec_constants_are_the_codes(spec: str) -> None:
    c = spec_constants(spec)
    assert c.contexts == CONTEXTS
    assert c.signature_domain == objects.SIGNATURE_DOMAIN
    assert c.fanout == objects.FANOUT
    assert c.gear == list(fastcdc_constants.GEAR)
    assert c.masks == {bits: fastcdc_constants.MASKS[bits] for bits in range(7, 24)}
    assert labelled(spec, "shoal-constants")["default params"] == " ".join(map(str, DEFAULT_PARAMS.as_list()))


def test_code_reproduces_every_vector(expected: dict[str, str]) -> None:
    assert not _diff(labels(shoal_build()), expected), "\n".join(_diff(labels(shoal_build()), expected))


def test_spec_alone_reproduces_every_vector(spec: str, expected: dict[str, str]) -> None:
    actual = labels(FromSpec(spec_constants(spec)).build())
    problems = _diff(actual, expected)
    assert not problems, "\n".join(problems)


def test_vector_objects_decode_and_walk() -> None:
    built = shoal_build()
    kinds = {}
    for oid, data in built.store.items():
        kind = Kind(msgpack.unpackb(data)[0])
        decode(kind, data, oid)  # raises unless canonical and matching its id
        kinds[oid] = kind

    def load(kind: Kind, oid: bytes) -> bytes:
        assert kinds[oid] == kind
        return built.store[oid]

    walked = {"/".join(path): entry for path, entry in walk_tree(load, built.trees[""])}
    tree = vector_tree()
    assert set(walked) == set(tree) | {"data", "many"}
    assert walked["run.sh"].executable and not walked["README.txt"].executable
    link = walked["data/up"]
    assert link.type == EntryType.SYMLINK and link.target == "../README.txt"
    for vid, data, _ in built.versions:
        record = decode(Kind.VERSION, data, vid)
        assert isinstance(record, VersionRecord)
        check_version_signature(record)


# --- file modes --------------------------------------------------------------------------

MODE_VECTORS = "shoal-mode-vectors"
#: name -> (content, permission bits) of the "modes" directory: its contents are
#: README.txt's and run.sh's, so their FILE ids are the vectors above.
MODE_TREE = {
    "notes.txt": (b"shoal test vectors\n", 0o644),
    "secret.txt": (b"shoal test vectors\n", 0o600),
    "tool.sh": (b"#!/bin/sh\necho shoal\n", 0o700),
}


def mode_labels(tree_id: bytes, data: bytes) -> dict[str, str]:
    return {"tree modes": tree_id.hex(), "tree object modes": data.hex()}


def test_mode_vectors_are_reproduced_by_the_code_and_from_the_spec(spec: str, expected: dict[str, str]) -> None:
    wanted = labelled(spec, MODE_VECTORS)
    files = {"notes.txt": "README.txt", "secret.txt": "README.txt", "tool.sh": "run.sh"}

    stored: list[tuple[bytes, bytes]] = []
    builder = TreeBuilder(lambda oid, data: stored.append((oid, data)))
    for name, (content, bits) in MODE_TREE.items():
        executable, mode = objects.file_mode_fields(bits)
        builder.add(FileEntry(name, len(content), bytes.fromhex(expected[f"file {files[name]}"]), executable, mode))
    tree_id = builder.finish()
    assert mode_labels(tree_id, dict(stored)[tree_id]) == wanted

    # From the spec's words: the mode is a sixth field, present only when it is
    # not 0o644 (0o755 for an executable file).
    from_spec = FromSpec(spec_constants(spec))
    rows = []
    for name, (content, bits) in MODE_TREE.items():
        executable = bool(bits & 0o100)
        row = [name, 0, executable, len(content), bytes.fromhex(expected[f"file {files[name]}"])]
        rows.append(row + ([bits] if bits != (0o755 if executable else 0o644) else []))
    store: dict[bytes, bytes] = {}
    spec_id = from_spec.tree(rows, store)
    assert mode_labels(spec_id, store[spec_id]) == wanted

    node = decode(Kind.TREE, store[spec_id], spec_id)
    assert [(e.name, e.permissions()) for e in node.entries] == [(n, bits) for n, (_, bits) in MODE_TREE.items()]


@pytest.mark.parametrize(
    ("mode", "why"),
    [(0o644, "default mode"), (0o755, "disagrees"), (0o1000, "mode must be an integer"), ("600", "mode must be")],
)
def test_a_mode_that_is_not_canonical_is_rejected(mode, why) -> None:
    data = msgpack.packb([3, 0, [["f", 0, False, 0, bytes(32), mode]]], use_bin_type=True)
    with pytest.raises(ObjectFormatError, match=why):
        decode(Kind.TREE, data, object_id(Kind.TREE, data))
