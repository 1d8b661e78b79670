"""Reading a shared folder: listing directories, hashing files, building trees.

These functions block on the disk and on hashing (both release the GIL); the
library calls them through `trio.to_thread`. A directory whose entries all have
the stat they had last time keeps its FILE ids without a per-file lookup, and
keeps its tree id when its subdirectories are unchanged too, so re-sharing an
unchanged folder costs little more than the stat calls.
"""

import operator
import os
import stat as statmod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import msgpack

from shoal.daemon.keys import KEY_FILE_NAME, is_identity_key
from shoal.daemon.library.ignore import IgnoreRules
from shoal.daemon.model import PARTIAL_DIR
from shoal.daemon.store.index import FileRecord, FileStat, Index
from shoal.daemon.store.loader import index_loader
from shoal.errors import ShoalError
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.chunking import ChunkingParams, make_chunker
from shoal.protocol.format.hashing import Kind, chunk_id
from shoal.protocol.format.manifest import FileBuilder, TreeBuilder, tree_entries
from shoal.protocol.format.objects import (
    DirEntry,
    EntryType,
    FileEntry,
    FileObject,
    Ref,
    SymlinkEntry,
    TreeEntry,
    encode_with_id,
    file_mode_fields,
)
from shoal.protocol.format.paths import MAX_NAME_BYTES, check_name, check_symlink_target

#: Chunks recorded per index transaction while hashing a large file.
_FLUSH_EVERY = 2048
#: Files up to this size are hashed whole before anything is written to the index.
SMALL_FILE = 32 * 1024 * 1024
_HASH_ATTEMPTS = 3
#: A larger file is read this much at a time into one reused buffer. The disk sees large requests
#: anyway (READ_AHEAD); a block that stays in the CPU's cache between the copy and the hashing was
#: faster than 8 MiB blocks (measured, cold cache, 2 files at once: 0.27 vs 0.32 s for 400 MB).
READ_BLOCK = 2 * 1024 * 1024
#: How far ahead of the reader the kernel is asked to read (posix_fadvise WILLNEED). The kernel
#: reads on its own while the chunker and BLAKE3 work, so a cold file is read and hashed at once,
#: and small files' reads are in flight together instead of each waiting its turn, as with `cat`.
READ_AHEAD = 16 * 1024 * 1024
#: Files of a batch announced to the kernel ahead of the one being hashed, at most READ_AHEAD bytes.
AHEAD_FILES = 64


class FileChanged(ShoalError):
    """A file changed while it was being read."""


class IdentityKeyFile(ShoalError):
    """A file holds a shoal identity key: it is never part of a shared version."""


def _key_warning(path: str) -> str:
    return f"left out {path}: it holds a private key, which shoal never shares; move it out of the folder"


@dataclass(slots=True)
class ScanEntry:
    """One directory entry as found on disk, and what is known of its content."""

    name: str
    type: EntryType
    #: A file's permission bits (0o777 of st_mode); 0 for anything else.
    mode: int = 0
    stat: FileStat | None = None
    target: str = ""
    ref: bytes | None = None
    size: int = 0
    files: int = 0
    changed: bool = True


#: One directory entry as listed: (name, type, permission bits, symlink target, size, mtime_ns, ctime_ns, inode).
#: The bits are in the directory's fingerprint, so a chmod alone makes a new tree.
RawEntry = tuple[str, EntryType, int, str, int, int, int, int]


@dataclass(slots=True)
class DirScan:
    """A directory's sorted entries, its stat fingerprint and what was skipped.

    `entries` holds every entry, except in a directory whose fingerprint is
    unchanged: there it holds only the subdirectories (all that needs work),
    and `materialize()` builds the rest from `raw` if a subdirectory changed.
    """

    rel: str
    depth: int
    raw: list[RawEntry]
    fingerprint: bytes
    warnings: list[str] = field(default_factory=list)
    entries: list[ScanEntry] = field(default_factory=list)
    previous_tree: bytes | None = None
    unchanged: bool = False
    #: False when an entry had to be left out: the directory is then not cached,
    #: so the next share tries that entry again and warns again.
    complete: bool = True
    #: Regular files in `raw` and the size of its entries other than directories,
    #: counted while listing (in the worker thread) for an unchanged directory.
    raw_files: int = 0
    raw_size: int = 0


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


_FILE, _DIR, _SYMLINK = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK
_S_ISREG, _S_IMODE = statmod.S_ISREG, statmod.S_IMODE
_by_name = operator.itemgetter(0)


def _classify(rel: str, depth: int, entry: os.DirEntry, dir_fd: int) -> RawEntry | str:
    """Return the entry as listed, or a warning saying why it is left out (once per file: kept lean)."""
    name = entry.name
    try:
        # The directory itself rules out "/", NUL, "." and ".."; only the encoding and length remain.
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            check_name(name)
    except (UnicodeEncodeError, ProtocolError):
        return f"skipped {join(rel, name)!r}: the name is not valid UTF-8 or is too long"
    if entry.is_symlink():
        target = os.readlink(entry.name, dir_fd=dir_fd)
        try:
            check_symlink_target(target, depth)
        except ProtocolError as e:
            return f"skipped symlink {join(rel, name)}: {e}"
        return (name, _SYMLINK, 0, target, len(target.encode("utf-8")), 0, 0, 0)
    if entry.is_dir(follow_symlinks=False):
        return (name, _DIR, 0, "", 0, 0, 0, 0)
    st = entry.stat(follow_symlinks=False)
    mode = st.st_mode
    if not statmod.S_ISREG(mode):
        return f"skipped special file {join(rel, name)} (fifo, socket or device)"
    return (name, _FILE, _permissions(mode), "", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _permissions(mode: int) -> int:
    return _S_IMODE(mode) & 0o777


def _entry(raw: RawEntry) -> ScanEntry:
    name, kind, mode, target, size, mtime_ns, ctime_ns, ino = raw
    if kind == _FILE:
        return ScanEntry(name, kind, mode, FileStat(size, mtime_ns, ctime_ns, ino), "", None, size, 1)
    return ScanEntry(name, kind, mode, None, target, None, size)


def list_dir(index: Index, root: Path, rel: str, depth: int, ignore: IgnoreRules | None = None) -> DirScan:
    """List one directory, leaving out what `ignore` names, and take what the stat cache already knows of it."""
    raw: list[RawEntry] = []
    warnings: list[str] = []
    # Listed through a descriptor: each stat then looks up one name, not the whole path.
    dir_fd = open_dir(root, rel)
    try:
        with os.scandir(dir_fd) as it:
            for entry in it:
                name = entry.name
                if depth == 0 and name == PARTIAL_DIR:
                    continue
                if ignore is not None and ignore.excludes(join(rel, name), entry.is_dir(follow_symlinks=False)):
                    continue
                if name == KEY_FILE_NAME:
                    warnings.append(_key_warning(join(rel, name)))
                    continue
                try:
                    # A regular file with a short ASCII name, the bulk of most folders, is
                    # taken inline: an unchanged re-share is little more than this loop.
                    if entry.is_file(follow_symlinks=False) and name.isascii() and len(name) <= MAX_NAME_BYTES:
                        st = entry.stat(follow_symlinks=False)
                        mode = st.st_mode
                        if _S_ISREG(mode):
                            raw.append(
                                (name, _FILE, _permissions(mode), "", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                            )
                            continue
                    found = _classify(rel, depth, entry, dir_fd)
                except OSError as e:
                    found = f"skipped {join(rel, name)}: {e.strerror}"
                if isinstance(found, str):
                    warnings.append(found)
                else:
                    raw.append(found)
    finally:
        os.close(dir_fd)
    # Code point order is UTF-8 byte order, and every name left is valid UTF-8.
    raw.sort(key=_by_name)
    fingerprint = blake3.blake3(msgpack.packb(raw, use_bin_type=True)).digest()
    scan = DirScan(rel, depth, raw, fingerprint, warnings)
    _apply_cache(index, str(root), scan)
    if scan.unchanged:
        scan.raw_files = sum(1 for r in raw if r[1] == _FILE)
        scan.raw_size = sum(r[4] for r in raw if r[1] != _DIR)
    return scan


def _apply_cache(index: Index, root: str, scan: DirScan) -> None:
    cached = index.dir_cache(root, scan.rel)
    if cached is not None:
        scan.previous_tree = cached[1]
        if cached[0] == scan.fingerprint:
            # Every entry has the stat it had: the files are what the previous tree
            # says, and only the subdirectories need looking at.
            scan.unchanged = True
            scan.entries = [ScanEntry(r[0], _DIR) for r in scan.raw if r[1] == _DIR]
            return
    scan.entries = [_entry(r) for r in scan.raw]
    files = [e for e in scan.entries if e.type == EntryType.FILE]
    if not files:
        return
    rows = index.cached_files(root, scan.rel)
    for e in files:
        row = rows.get(e.name)
        if row is not None and row.stat == e.stat and row.file_id is not None:
            e.ref = row.file_id


def file_count(scan: DirScan) -> int:
    """Regular files directly in the directory (those left out by a failed read excluded)."""
    if scan.unchanged:
        return scan.raw_files
    return sum(1 for e in scan.entries if e.type == _FILE)


@dataclass(frozen=True, slots=True)
class HashedFile:
    """A hashed file; `record` holds its index rows when they are left to the caller."""

    file_id: bytes
    size: int
    record: FileRecord | None = None


def open_dir(root: Path, rel: str) -> int:
    """A descriptor of the directory `rel` below `root`, for hashing its files by name.

    Opening each file relative to it spares the kernel a walk of the full path
    per file, which is a good part of the cost of a small one.
    """
    return os.open(os.path.join(root, rel) if rel else root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def hash_file(index: Index, root: Path, rel: str, name: str, params: ChunkingParams, dir_fd: int) -> HashedFile:
    """Chunk and hash one file of the directory open as `dir_fd` and produce its FILE object and chunk locations.

    A small file's index rows come back in `record` so that the caller can write
    many files in one transaction; a large one's are written as it is read, so
    its chunk list never sits whole in memory. Retries a file that changes while
    it is read; raises FileChanged if it keeps changing.
    """
    for _ in range(_HASH_ATTEMPTS):
        try:
            return _hash_once(index, root, rel, name, params, dir_fd)
        except FileChanged:
            continue
    raise FileChanged(f"{join(rel, name)} kept changing while being read")


def _stat_of(st: os.stat_result) -> FileStat:
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _hash_once(index: Index, root: Path, rel: str, name: str, params: ChunkingParams, dir_fd: int) -> HashedFile:
    objects: list[tuple[bytes, Kind, bytes]] = []
    locations: list[tuple[bytes, int, int]] = []
    file_row: int | None = None
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        first = os.fstat(fd)
        if first.st_size <= params.min_size:
            return _hash_tiny(fd, dir_fd, first, rel, name, params)
        before = _stat_of(first)
        builder = FileBuilder(params, lambda i, d: objects.append((i, _kind_of_page(d), d)))
        chunks: Iterator[tuple[int, memoryview]]
        if before.size <= SMALL_FILE:
            # Whole-buffer cutting skips the block reader's setup, which dominates for small files.
            # One byte more than expected shows a file that grew, which the size check then rejects.
            content = os.read(fd, before.size + 1)
            if is_identity_key(content):
                raise IdentityKeyFile(_key_warning(join(rel, name)))
            chunks = ((c.offset, c.data) for c in make_chunker(params).cut_buf(content))
        else:
            file_row = index.begin_file(str(root), rel, name, before)
            chunks = read_in_blocks(fd, params)
        for offset, chunk in chunks:
            cid = chunk_id(chunk)
            builder.add_chunk(cid, len(chunk))
            locations.append((cid, offset, len(chunk)))
            if file_row is not None and len(locations) >= _FLUSH_EVERY:
                index.add_locations(file_row, locations)
                index.put_objects(objects)
                locations.clear()
                objects.clear()
        file_id, size = builder.finish()
        after = _stat_of(os.fstat(fd))
    finally:
        os.close(fd)
    if after != before or size != before.size or _stat_of(os.stat(name, dir_fd=dir_fd)) != before:
        raise FileChanged(f"{join(rel, name)} changed while being read")
    if file_row is None:
        return HashedFile(file_id, size, FileRecord(rel, name, before, file_id, locations, objects))
    index.add_locations(file_row, locations)
    index.put_objects(objects)
    index.finish_file(file_row, before, file_id)
    return HashedFile(file_id, size)


def read_in_blocks(fd: int, params: ChunkingParams) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) of each chunk of an open file, read READ_BLOCK at a time with the kernel reading ahead.

    The cuts are those of the whole content chunked at once: a cut depends only
    on the max_size bytes from its chunk's start, so a chunk is taken from a
    block only when that many bytes follow its start there (or the file ends),
    and the rest is carried into the next block. Each chunk is a view into one
    reused buffer, valid until the next is asked for: memory stays one block
    whatever the file's size.
    """
    chunker = make_chunker(params)
    view = memoryview(bytearray(READ_BLOCK + params.max_size))
    # os.read would allocate each block anew; preadv fills the buffer in place.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    base = kept = advised = 0
    eof = False
    while not eof:
        advised = _advise_ahead(fd, base + kept, advised)
        filled = kept
        while filled < len(view):
            got = os.preadv(fd, [view[filled:]], base + filled)
            if got == 0:
                eof = True
                break
            filled += got
        taken = 0
        for chunk in chunker.cut_buf(view[:filled]):
            if not eof and filled - chunk.offset < params.max_size:
                break
            yield base + chunk.offset, chunk.data
            taken = chunk.offset + chunk.length
        kept = filled - taken
        view[:kept] = view[taken:filled]
        base += taken


def _advise_ahead(fd: int, position: int, advised: int) -> int:
    """Ask the kernel to read up to READ_AHEAD past `position` when less than a block short of that; return how far is asked."""
    if advised - position < READ_AHEAD - READ_BLOCK:
        end = position + READ_AHEAD
        os.posix_fadvise(fd, advised, end - advised, os.POSIX_FADV_WILLNEED)
        return end
    return advised


class ReadAhead:
    """Announces the next files of a batch to the kernel while one is hashed.

    From a cold disk, a small file read after another waits for the disk each
    time; asked for together (posix_fadvise WILLNEED, which returns at once),
    their reads overlap and the hashing thread finds them in the page cache.
    At most AHEAD_FILES files and READ_AHEAD bytes are announced beyond the
    file being hashed, so the page cache, not this process, holds them.
    """

    def __init__(self, dir_fd: int, files: list[tuple[str, int]]) -> None:
        self._dir_fd = dir_fd
        self._files = files
        self._next = 0
        self._current = 0
        self._ahead = 0

    def advance(self) -> None:
        """Call before hashing each file of the batch in turn."""
        if self._current < self._next:
            self._ahead -= min(self._files[self._current][1], READ_AHEAD)
        self._current += 1
        while (
            self._next < len(self._files)
            and self._next - self._current < AHEAD_FILES
            and self._ahead < READ_AHEAD
        ):
            name, size = self._files[self._next]
            self._next += 1
            self._ahead += min(size, READ_AHEAD)
            self._announce(name, min(size, READ_AHEAD))

    def _announce(self, name: str, length: int) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self._dir_fd)
        except OSError:
            return  # the hashing reports it
        try:
            os.posix_fadvise(fd, 0, length, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def _hash_tiny(fd: int, dir_fd: int, first: os.stat_result, rel: str, name: str, params: ChunkingParams) -> HashedFile:
    """A file no longer than the minimum chunk: one chunk (or none) listed inline, no chunker, no paging.

    Most of a dataset of small files is this case, so it reads with a bare
    descriptor and compares plain stat tuples.
    """
    data = os.read(fd, first.st_size + 1)
    if is_identity_key(data):
        raise IdentityKeyFile(_key_warning(join(rel, name)))
    file_id, encoded, locations = _one_chunk_file(data, params)
    key = _stat_key(first)
    if len(data) != first.st_size or _stat_key(os.fstat(fd)) != key or _stat_key(os.stat(name, dir_fd=dir_fd)) != key:
        raise FileChanged(f"{join(rel, name)} changed while being read")
    record = FileRecord(rel, name, _stat_of(first), file_id, locations, [(file_id, Kind.FILE, encoded)])
    return HashedFile(file_id, len(data), record)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _one_chunk_file(data: bytes, params: ChunkingParams) -> tuple[bytes, bytes, list[tuple[bytes, int, int]]]:
    """(file id, encoded FILE object, locations) of content no longer than the minimum chunk: one chunk, or none."""
    refs = (Ref(len(data), chunk_id(data)),) if data else ()
    file_id, encoded = encode_with_id(FileObject(len(data), params, 0, refs))
    return file_id, encoded, [(r.id, 0, r.size) for r in refs]


def _kind_of_page(data: bytes) -> Kind:
    # Pages and FILE objects are both emitted by FileBuilder; the encoded tag
    # (the msgpack positive fixint after the array header) tells them apart.
    return Kind(data[1])


def reused_tree(scan: DirScan) -> tuple[bytes, int, int] | None:
    """(tree id, total size, files below) of a directory whose tree is the previous
    one: unchanged itself and below. No I/O, so the caller needs no thread for it."""
    if not scan.unchanged or not scan.complete or any(e.changed for e in scan.entries):
        return None
    assert scan.previous_tree is not None
    size = scan.raw_size + sum(e.size for e in scan.entries)
    return scan.previous_tree, size, scan.raw_files + sum(e.files for e in scan.entries)


def build_tree(index: Index, root: Path, scan: DirScan) -> tuple[bytes, int, int]:
    """Store the directory's TREE and return (tree id, total size, files below)."""
    reused = reused_tree(scan)
    if reused is not None:
        return reused
    if scan.unchanged:
        _materialize(index, scan)
    size = sum(e.size for e in scan.entries)
    files = sum(e.files for e in scan.entries)
    objects: list[tuple[bytes, Kind, bytes]] = []
    builder = TreeBuilder(lambda i, d: objects.append((i, Kind.TREE, d)))
    for e in scan.entries:
        builder.add(_tree_entry(e))
    tree_id = builder.finish()
    index.put_objects(objects)
    if scan.complete:
        index.set_dir_cache(str(root), scan.rel, scan.fingerprint, tree_id, files)
    index.drop_files(str(root), scan.rel, (e.name for e in scan.entries if e.type == EntryType.FILE))
    return tree_id, size, files


def _tree_entry(e: ScanEntry) -> TreeEntry:
    """The TREE entry of a scanned entry whose content is stored (a file hashed, a directory built)."""
    if e.type == EntryType.SYMLINK:
        return SymlinkEntry(e.name, e.target)
    assert e.ref is not None, f"{e.name!r} has no stored content"
    if e.type == EntryType.DIR:
        return DirEntry(e.name, e.size, e.ref)
    executable, mode = file_mode_fields(e.mode)
    return FileEntry(e.name, e.size, e.ref, executable, mode)


def _materialize(index: Index, scan: DirScan) -> None:
    """Rebuild every entry of an unchanged directory whose subdirectories changed."""
    assert scan.previous_tree is not None
    dirs = {e.name: e for e in scan.entries}
    # The directory is unchanged, so its files are the previous tree's files.
    refs = {e.name: e.id for e in tree_entries(index_loader(index), scan.previous_tree) if e.type == EntryType.FILE}
    entries = []
    for raw in scan.raw:
        if raw[1] == _DIR:
            if raw[0] in dirs:  # absent when it could not be read: it is left out
                entries.append(dirs[raw[0]])
            continue
        entry = _entry(raw)
        if entry.type == _FILE:
            entry.ref = refs[entry.name]
        entries.append(entry)
    scan.entries = entries


def file_id_of(path: Path, params: ChunkingParams) -> bytes:
    """Hash a file's content as a FILE object without recording anything."""
    builder = FileBuilder(params, lambda i, d: None)
    with open(path, "rb", buffering=0) as f:
        for chunk in make_chunker(params).cut_stream(f):
            builder.add_chunk(chunk_id(chunk.data), chunk.length)
    return builder.finish()[0]


def held_by_dir(paths: Iterable[str]) -> dict[str, frozenset[str]]:
    """Relative paths to hold, grouped by the directory they are in."""
    by_dir: dict[str, set[str]] = {}
    for path in paths:
        rel, _, name = path.rpartition("/")
        by_dir.setdefault(rel, set()).add(name)
    return {rel: frozenset(names) for rel, names in by_dir.items()}


def hold(index: Index, scan: DirScan, previous_root: bytes | None, names: frozenset[str]) -> None:
    """Give each of `names` (files of the scanned directory) the entry the previous version's tree
    `previous_root` has for it, or leave it out where that version has none.

    A directory, on disk or in that version, is never held: only a file's content can be half written.
    The directory's tree is then not the folder's, so it is not cached: the next share looks again.
    """
    if scan.unchanged:
        _materialize(index, scan)
        scan.unchanged = False
    previous = _previous_files(index, previous_root, scan.rel, names)
    dirs = {e.name for e in scan.entries if e.type == _DIR}
    entries = [e for e in scan.entries if e.type == _DIR or e.name not in names]
    entries += [_held_entry(old) for name, old in previous.items() if name not in dirs]
    entries.sort(key=lambda e: e.name)
    scan.entries = entries
    scan.complete = False


def _previous_files(index: Index, root: bytes | None, rel: str, names: frozenset[str]) -> dict[str, TreeEntry]:
    """The entries other than directories that tree `root` has for `names` in its directory `rel`."""
    load = index_loader(index)
    tree = root
    for part in rel.split("/") if rel else ():
        if tree is None:
            return {}
        tree = next((e.id for e in tree_entries(load, tree) if e.name == part and e.type == EntryType.DIR), None)
    if tree is None:
        return {}
    return {e.name: e for e in tree_entries(load, tree) if e.name in names and e.type != EntryType.DIR}


def _held_entry(old: TreeEntry) -> ScanEntry:
    if isinstance(old, FileEntry):
        return ScanEntry(old.name, _FILE, old.permissions(), None, "", old.id, old.size, 1)
    assert isinstance(old, SymlinkEntry), f"{old.name!r} is a directory"
    return ScanEntry(old.name, _SYMLINK, 0, None, old.target, None, old.size)
