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


def _read_verified(index: Index, wanted: bytes, place: Location) -> bytes | None:
    data = read_at(place.path, place.offset, place.length)
    if data is not None and chunk_id(data) == wanted:
        return data
    index.mark_stale(wanted, place.file_row, place.offset)
    return None


def read_chunks(index: Index, wanted: list[bytes]) -> list[tuple[bytes, bytes | None]]:
    """Read several chunks; for each id, its verified bytes or None."""
    first = index.first_locations(wanted)
    out = []
    for cid in wanted:
        place = first.get(cid)
        data = _read_verified(index, cid, place) if place is not None else None
        out.append((cid, data if data is not None else read_chunk(index, cid)))
    return out
