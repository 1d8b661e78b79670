"""Reading chunk bytes out of the user's files, never trusting the index blindly.

Every read is re-hashed against the chunk id before it is served or reused; a
location whose bytes no longer match is marked stale and never read again.
A chunk that no file holds any more comes from the pack store of kept versions
(packs.py), which verifies it as well.
"""

import os

from shoal.daemon.index import Index, Location
from shoal.protocol.hashing import chunk_id


def read_at(path: os.PathLike | str, offset: int, length: int) -> bytes | None:
    """Return `length` bytes at `offset`, or None if the file is gone or too short."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = os.pread(fd, length, offset)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == length else None


def read_fd_at(fd: int, offset: int, length: int) -> bytes | None:
    """Return `length` bytes at `offset` of an open file, or None if it is shorter."""
    data = os.pread(fd, length, offset)
    return data if len(data) == length else None


def read_chunk(index: Index, wanted: bytes) -> bytes | None:
    """Return the verified bytes of chunk `wanted` from any known location, else from the retained copies, or None."""
    while True:
        places = index.locations(wanted)
        if not places:
            return index.retained.read(wanted) if index.retained is not None else None
        for place in places:
            data = _read_verified(index, wanted, place)
            if data is not None:
                return data
        # Every listed place was stale and is now marked so; look again in case
        # more locations exist beyond the first few.


def _read_verified(index: Index, wanted: bytes, place: Location, fds: dict[str, int] | None = None) -> bytes | None:
    if fds is None:
        data = read_at(place.path, place.offset, place.length)
    else:
        data = _read_open(fds, str(place.path), place.offset, place.length)
    if data is not None and chunk_id(data) == wanted:
        return data
    index.mark_stale(wanted, place.file_row, place.offset)
    return None


def _opened(fds: dict[str, int], path: str) -> int | None:
    """`path` opened for reading, kept in `fds` for the next chunk of the same file; None if it cannot be."""
    fd = fds.get(path)
    if fd is None:
        try:
            fd = fds[path] = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
    return fd


def _read_open(fds: dict[str, int], path: str, offset: int, length: int) -> bytes | None:
    """read_at through `fds`."""
    fd = _opened(fds, path)
    if fd is None:
        return None
    try:
        return read_fd_at(fd, offset, length)
    except OSError:
        return None


def locate(index: Index, wanted: list[bytes]) -> dict[bytes, Location]:
    """One believed location for each of `wanted` that has any, in one query, and
    the kernel asked to start reading them all: from a cold disk, small files read
    one after the other each wait for the disk, while these reads overlap."""
    places = index.first_locations(wanted)
    fds: dict[str, int] = {}
    try:
        for place in places.values():
            fd = _opened(fds, str(place.path))
            # One that cannot be opened is left to read_chunks, which looks elsewhere.
            if fd is not None:
                os.posix_fadvise(fd, place.offset, place.length, os.POSIX_FADV_WILLNEED)
    finally:
        for fd in fds.values():
            os.close(fd)
    return places


def read_cached(wanted: list[bytes], places: dict[bytes, Location]) -> list[tuple[bytes, bytearray]]:
    """The verified bytes of the longest prefix of `wanted` that the page cache holds,
    read without waiting for the disk (preadv with RWF_NOWAIT), so on the event loop:
    a worker-thread call per read costs two thread switches and, worse, the worker
    must win the GIL back from the busy loop after every read and every hash.
    Each comes in the bytearray it was read into, which Connection.send_data takes
    as it is: the busy sender is spared a copy of every byte it serves.

    Whatever is not cached, not located, or does not match stops the prefix; read_chunks
    reads the rest in a thread (marking stale places, looking elsewhere)."""
    out: list[tuple[bytes, bytearray]] = []
    fds: dict[str, int] = {}
    try:
        for cid in wanted:
            place = places.get(cid)
            fd = _opened(fds, str(place.path)) if place is not None else None
            if fd is None:
                break
            buf = bytearray(place.length)  # type: ignore[union-attr]
            try:
                got = os.preadv(fd, [buf], place.offset, os.RWF_NOWAIT)  # type: ignore[union-attr]
            except OSError:  # BlockingIOError: not cached; EOPNOTSUPP: no RWF_NOWAIT here
                break
            if got != len(buf) or chunk_id(buf) != cid:
                break
            out.append((cid, buf))
    finally:
        for fd in fds.values():
            os.close(fd)
    return out


def read_chunks(
    index: Index, wanted: list[bytes], places: dict[bytes, Location] | None = None
) -> list[tuple[bytes, bytes | None]]:
    """Read several chunks; for each id, its verified bytes or None.

    `places` is what `locate` returned for these ids (and maybe more); without it
    they are located here.
    """
    if places is None:
        places = locate(index, wanted)
    out = []
    fds: dict[str, int] = {}
    try:
        for cid in wanted:
            place = places.get(cid)
            data = _read_verified(index, cid, place, fds) if place is not None else None
            out.append((cid, data if data is not None else read_chunk(index, cid)))
    finally:
        for fd in fds.values():
            os.close(fd)
    return out
