"""Reading chunks on the event loop only while the page cache holds them (chunks.read_cached)."""

import os
import time
from pathlib import Path

from shoal.daemon.store.chunks import read_cached
from shoal.daemon.store.index import Location
from shoal.protocol.format.hashing import chunk_id
from tests.daemon.test_uncached import cached_bytes

SIZE = 64 * 1024


def three_chunks(tmp_path: Path) -> tuple[Path, list[bytes], dict[bytes, Location]]:
    path = tmp_path / "f.bin"
    parts = [os.urandom(SIZE) for _ in range(3)]
    path.write_bytes(b"".join(parts))
    ids = [chunk_id(p) for p in parts]
    places = {cid: Location(1, str(path), i * SIZE, SIZE) for i, cid in enumerate(ids)}
    return path, ids, places


def test_cached_chunks_are_read_and_verified(tmp_path: Path) -> None:
    path, ids, places = three_chunks(tmp_path)
    got = read_cached(ids, places)
    assert [cid for cid, _ in got] == ids
    assert b"".join(data for _, data in got) == path.read_bytes()


def test_the_prefix_stops_at_a_chunk_not_located_or_changed(tmp_path: Path) -> None:
    path, ids, places = three_chunks(tmp_path)
    assert [cid for cid, _ in read_cached(ids, {ids[0]: places[ids[0]]})] == ids[:1]
    with open(path, "r+b") as f:
        f.seek(SIZE + 10)
        f.write(b"changed")
    assert [cid for cid, _ in read_cached(ids, places)] == ids[:1]


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache. DONTNEED skips a page another CPU's
    LRU batch still holds, so it is asked again until fincore finds none (a few tries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages can be dropped
        for _ in range(100):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            cached = cached_bytes(path)
            if not cached:
                return
            time.sleep(0.01)
    finally:
        os.close(fd)
    raise AssertionError(f"{path} kept {cached} bytes in the page cache after 100 DONTNEEDs")


def test_nothing_is_read_on_the_loop_once_the_pages_are_evicted(tmp_path: Path) -> None:
    path, ids, places = three_chunks(tmp_path)
    _evict(path)
    assert read_cached(ids, places) == []
