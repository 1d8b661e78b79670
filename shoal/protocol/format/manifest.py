"""Building manifest objects from a stream of chunks or directory entries.

Builders are fed in order and hand every finished page and object to a sink,
so a 100 GB file's chunk list or a huge directory is never held whole.
"""

from collections.abc import Callable, Generator, Iterator
from dataclasses import replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal.protocol.errors import IntegrityError, LocalProtocolError, ObjectFormatError, ProtocolError
from shoal.protocol.format.chunking import ChunkingParams
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.objects import (
    ChunkListNode,
    EntryType,
    FileObject,
    Ref,
    TreeEntry,
    TreeNode,
    VersionRecord,
    encode_with_id,
    stored_chunks,
    stored_tree,
)
from shoal.protocol.format.paged import PagedListBuilder, iter_items
from shoal.protocol.format.paths import check_symlink_target

#: Receives (id, encoded bytes) of every object a builder finishes.
ObjectSink = Callable[[bytes, bytes], None]


def _chunk_page(level: int, entries: list[Ref]) -> tuple[bytes, bytes]:
    return encode_with_id(ChunkListNode(level, tuple(entries)))


def _tree_page(level: int, entries: list[TreeEntry | Ref]) -> tuple[bytes, bytes]:
    return encode_with_id(TreeNode(level, tuple(entries)))


class FileBuilder:
    """Collects a file's chunks in order and produces its FILE object."""

    def __init__(self, params: ChunkingParams, sink: ObjectSink) -> None:
        self._params = params
        self._sink = sink
        self._size = 0
        self._list: PagedListBuilder[Ref] = PagedListBuilder(_chunk_page, sink)

    def add_chunk(self, chunk_id: bytes, length: int) -> None:
        """Append the next chunk of the file."""
        self._size += length
        self._list.add(Ref(length, chunk_id))

    def finish(self) -> tuple[bytes, int]:
        """Emit the FILE object to the sink and return (file id, file size)."""
        level, entries = self._list.finish()
        file_id, data = encode_with_id(FileObject(self._size, self._params, level, tuple(entries)))
        self._sink(file_id, data)
        return file_id, self._size


class TreeBuilder:
    """Collects a directory's entries, which must arrive sorted, and produces its TREE."""

    def __init__(self, sink: ObjectSink) -> None:
        self._sink = sink
        self._prev: bytes | None = None
        self.size = 0
        self._list: PagedListBuilder[TreeEntry] = PagedListBuilder(_tree_page, sink)

    def add(self, entry: TreeEntry) -> None:
        """Append the next entry; names must strictly increase by UTF-8 bytes."""
        key = entry.name.encode("utf-8")
        if self._prev is not None and key <= self._prev:
            raise LocalProtocolError(f"tree entries out of order at {entry.name!r}")
        self._prev = key
        self.size += entry.size
        self._list.add(entry)

    def finish(self) -> bytes:
        """Emit the TREE object to the sink and return its id."""
        level, entries = self._list.finish()
        tree_id, data = encode_with_id(TreeNode(level, tuple(entries)))
        self._sink(tree_id, data)
        return tree_id


def sign_version(record: VersionRecord, key: Ed25519PrivateKey) -> VersionRecord:
    """Return `record` signed by `key`, whose public key must be the record's author."""
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if public != record.author:
        raise LocalProtocolError("the signing key is not the version's author")
    return replace(record, signature=key.sign(record.signed_bytes()))


def check_version_signature(record: VersionRecord) -> None:
    """Raise IntegrityError unless the record's signature is its author's."""
    try:
        Ed25519PublicKey.from_public_bytes(record.author).verify(record.signature, record.signed_bytes())
    except (InvalidSignature, ValueError):
        raise IntegrityError(f"version {record.name}@{record.seq} has an invalid signature") from None



#: Returns the encoded bytes of a stored object: bytes that met `decode`'s checks when they were
#: stored, or were encoded here (the walkers below check only their ids; see `decode_stored`).
ObjectLoader = Callable[[Kind, bytes], bytes]


def load_tree_page(load: ObjectLoader, level: int, ref: Ref) -> tuple[TreeEntry | Ref, ...]:
    """Load and check one page of a directory at `level`."""
    node = stored_tree(load(Kind.TREE, ref.id), ref.id)
    if node.level != level:
        raise ObjectFormatError(f"tree page {ref.id.hex()[:16]} is at level {node.level}, expected {level}")
    return node.entries


def tree_entries(load: ObjectLoader, tree_id: bytes) -> Iterator[TreeEntry]:
    """Yield a directory's entries across its pages, checking order and names."""
    node = stored_tree(load(Kind.TREE, tree_id), tree_id)
    prev: bytes | None = None
    entries: Iterator[TreeEntry] = iter_items(node.level, node.entries, lambda lvl, ref: load_tree_page(load, lvl, ref))
    for entry in entries:
        key = entry.name.encode("utf-8")
        if prev is not None and key <= prev:
            raise ObjectFormatError(f"directory entries out of order or repeated at {entry.name!r}")
        prev = key
        yield entry


def walk_tree(load: ObjectLoader, tree_id: bytes, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], TreeEntry]]:
    """Yield (path, entry) for every entry below a tree, parents before children.

    Symlink targets are checked against the depth they sit at, so a walked tree
    can be written out without any path leaving the destination; a directory's
    declared size must be what its entries add up to.
    """
    yield from _walk(load, tree_id, prefix)


def _walk(load: ObjectLoader, tree_id: bytes, prefix: tuple[str, ...]) -> Generator[tuple[tuple[str, ...], TreeEntry], None, int]:
    total = 0
    for entry in tree_entries(load, tree_id):
        path = prefix + (entry.name,)
        if entry.type == EntryType.SYMLINK:
            try:
                check_symlink_target(entry.target, len(prefix))
            except ProtocolError as e:
                raise ObjectFormatError(f"{'/'.join(path)}: {e}") from None
        yield path, entry
        if entry.type == EntryType.DIR:
            below = yield from _walk(load, entry.id, path)
            check_dir_size(path, entry, below)
        total += entry.size
    return total


def check_dir_size(path: tuple[str, ...], entry: TreeEntry, actual: int) -> None:
    """Raise unless a directory entry declares the size its tree really holds."""
    if entry.size != actual:
        raise ObjectFormatError(f"directory {'/'.join(path)} declares {entry.size} bytes but holds {actual}")


def load_chunk_page(load: ObjectLoader, level: int, ref: Ref) -> tuple[Ref, ...]:
    """Load and check one page of a file's chunk list at `level`."""
    node = stored_chunks(load(Kind.CHUNKS, ref.id), ref.id)
    if node.level != level:
        raise ObjectFormatError(f"chunk-list page {ref.id.hex()[:16]} is at level {node.level}, expected {level}")
    return node.entries


def file_chunks(load: ObjectLoader, file: FileObject) -> Iterator[Ref]:
    """Yield a file's chunks (length, id) in order, loading pages as needed."""
    return iter_items(file.level, file.entries, lambda lvl, ref: load_chunk_page(load, lvl, ref))
