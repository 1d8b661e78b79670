"""Reading chunk bytes out of the user's files, never trusting the index blindly.

Every read is re-hashed against the chunk id before it is served or reused; a
location whose bytes no longer match is marked stale and never read again.
A chunk that no file holds any more comes from the pack store of kept versions
(packs.py), which verifies it as well.
"""

import os
from collections.abc import Hashable, Iterable

from shoal.daemon.store.chunkhash import chunk_ids
from shoal.daemon.store.fdlimit import FilePool
from shoal.daemon.store.filebatch import read_into, will_need
from shoal.daemon.store.index import Index, Location
from shoal.daemon.store.readahead import ReadAhead
from shoal.protocol.format.hashing import chunk_id
from shoal.protocol.wire.messages import Run

#: Source files one serving call keeps open.
OPEN_PER_CALL = 4


def read_at(path: os.PathLike | str, offset: int, length: int) -> bytes | None:
    """Return `length` bytes at `offset`, or None if the file is gone or too short."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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


def _read_verified(index: Index, wanted: bytes, place: Location, fds: FilePool | None = None) -> bytes | None:
    if fds is None:
        data = read_at(place.path, place.offset, place.length)
    else:
        data = _read_open(fds, place.path, place.offset, place.length)
    if data is not None and chunk_id(data) == wanted:
        return data
    index.mark_stale(wanted, place.file_row, place.offset)
    return None


def _source_files() -> FilePool:
    """The files one serving call reads from, a few open at a time: chunks are asked
    for in id order, so a call seldom comes back to a file after a few others, and
    a request's 64 chunks must not hold 64 descriptors."""
    return FilePool(OPEN_PER_CALL, _open_source)


def _open_source(path: Hashable) -> int:
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # type: ignore[arg-type]


def _read_open(fds: FilePool, path: str, offset: int, length: int) -> bytes | None:
    """read_at through `fds`."""
    try:
        with fds.use(path) as fd:
            return read_fd_at(fd, offset, length)
    except OSError:
        return None


def locate(index: Index, wanted: list[bytes]) -> dict[bytes, Location]:
    """One believed location for each of `wanted` that has any, in one query, and
    the kernel asked to start reading them all: from a cold disk, small files read
    one after the other each wait for the disk, while these reads overlap."""
    places = index.first_locations(wanted)
    _will_need((place, place.length) for place in places.values())
    return places


def _will_need(extents: Iterable[tuple[Location, int]]) -> None:
    """Ask the kernel to start reading `length` bytes from each place."""
    will_need([(place.path, place.offset, length) for place, length in extents])


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
    fds = _source_files()
    try:
        for cid in wanted:
            place = places.get(cid)
            if place is None:
                break
            buf = bytearray(place.length)
            try:
                with fds.use(place.path) as fd:
                    got = os.preadv(fd, [buf], place.offset, os.RWF_NOWAIT)
            except OSError:  # BlockingIOError: not cached; EOPNOTSUPP: no RWF_NOWAIT here; or not openable
                break
            if got != len(buf) or chunk_id(buf) != cid:
                break
            out.append((cid, buf))
    finally:
        fds.close_all()
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
    fds = _source_files()
    try:
        for cid in wanted:
            place = places.get(cid)
            data = _read_verified(index, cid, place, fds) if place is not None else None
            out.append((cid, data if data is not None else read_chunk(index, cid)))
    finally:
        fds.close_all()
    return out


def locate_runs(index: Index, runs: list[Run], ahead: ReadAhead) -> dict[bytes, Location]:
    """A believed location of each run's first chunk, in one query, with the kernel asked
    to start reading the whole run from there (as `locate` does for single chunks), and
    past the runs that continue their file's last ones (`ahead`)."""
    places = index.first_locations([run.ids[0] for run in runs])
    located = [(places[run.ids[0]], run.total) for run in runs if run.ids[0] in places]
    will_need([extent for place, total in located for extent in ahead.extents(place.path, place.offset, total)])
    return places


def read_runs(index: Index, runs: list[Run], places: dict[bytes, Location], buf: bytearray) -> list[memoryview | None]:
    """`view`s of `buf` (at least the runs' total long) filled back to back with the verified
    bytes of each of `runs`, or None for a run some chunk of which is held nowhere here.
    Many small runs cost one worker-thread call, their reads one C call. Runs in a thread."""
    views = []
    pos = 0
    with memoryview(buf) as whole:
        for run in runs:
            views.append(whole[pos : pos + run.total])
            pos += run.total
    counts = [0] * len(runs)
    located = [i for i, run in enumerate(runs) if run.ids[0] in places]
    reads = [(places[runs[i].ids[0]], views[i]) for i in located]
    for i, count in zip(located, read_into([(place.path, place.offset, view) for place, view in reads])):
        counts[i] = max(count, 0)
    out: list[memoryview | None] = []
    for run, view, found in zip(runs, views, hash_runs(runs, views, counts)):
        filled = check_run(index, run, places.get(run.ids[0]), view, found, whole=True)
        out.append(view if len(filled) == len(run.ids) and all(filled) else None)
    return out


def fill_run(index: Index, run: Run, place: Location | None, view: memoryview, *, whole: bool) -> list[bool]:
    """Fill `view` (`run.total` long) with the verified bytes of `run`'s chunks, read with one
    pread from where its first chunk is believed to be; whether each one is there (with
    `whole`, stop at the first that is not)."""
    got = read_into([(place.path, place.offset, view)])[0] if place is not None else 0
    found = hash_runs([run], [view], [max(got, 0)])[0]
    return check_run(index, run, place, view, found, whole=whole)


def hash_runs(runs: list[Run], views: list[memoryview], counts: list[int]) -> list[list[bytes | None]]:
    """For each run, the id of the bytes at each of its chunks' places in its view, of which
    `count` bytes were read (None for a chunk that ends past them): one call for all."""
    pieces = []
    read = []
    for run, view, got in zip(runs, views, counts):
        pos = 0
        for size in run.sizes:
            if pos + size > got:
                break
            pieces.append(view[pos : pos + size])
            pos += size
        read.append(len(pieces))
    ids = chunk_ids(pieces)
    start = 0
    out: list[list[bytes | None]] = []
    for run, end in zip(runs, read):
        out.append([*ids[start:end], *[None] * (len(run.ids) - (end - start))])
        start = end
    return out


def check_run(
    index: Index, run: Run, place: Location | None, view: memoryview, found: list[bytes | None], *, whole: bool
) -> list[bool]:
    """Whether each of `run`'s chunks is in `view`, read from `place`, where `found` is what
    hash_runs gave for its chunks (with `whole`, stop at the first that is not).

    Where a chunk does not match (the file changed under the index, or this machine
    holds the run's chunks in different files), that chunk alone is read from
    wherever else the index has it."""
    filled = []
    pos = 0
    for cid, size, got in zip(run.ids, run.sizes, found):
        end = pos + size
        good = got == cid
        if not good:
            if pos == 0 and place is not None:
                index.mark_stale(cid, place.file_row, place.offset)
            data = read_chunk(index, cid)
            good = data is not None and len(data) == size
            if data is not None and good:
                view[pos:end] = data
        filled.append(good)
        if whole and not good:
            break
        pos = end
    return filled
