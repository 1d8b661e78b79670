"""The pack store on its own: verified appends and reads, crash recovery, corruption, compaction."""

import os
from pathlib import Path

import pytest

from shoal.daemon.store import packs
from shoal.daemon.store.packs import KEPT, PackStore
from shoal.protocol.format.hashing import chunk_id


def chunk(size: int = 10_000) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    return chunk_id(data), data


def pack_files(root: Path) -> list[Path]:
    return sorted(root.glob("pack-*.dat"))


def test_append_then_read_back_verified(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    chunks = [chunk() for _ in range(5)]
    assert store.append(chunks) == 50_000
    assert store.append(chunks[:2]) == 0, "chunks already held are not written twice"
    assert store.holds([cid for cid, _ in chunks] + [b"\0" * 32]) == {cid for cid, _ in chunks}
    for cid, data in chunks:
        assert store.read(cid) == data
    assert store.read(b"\1" * 32) is None
    assert store.disk_bytes() == 50_000


def test_bytes_that_do_not_match_their_id_are_refused(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    cid, data = chunk()
    with pytest.raises(ValueError, match="does not match"):
        store.append([(cid, data[:-1] + bytes([data[-1] ^ 1]))])
    assert store.holds([cid]) == set() and store.disk_bytes() == 0


def test_a_torn_tail_is_cut_off_on_open(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    first = chunk()
    store.append([first])
    store.close()
    [pack] = pack_files(tmp_path)
    with open(pack, "ab") as f:  # a crash after writing, before the rows were committed
        f.write(os.urandom(7_000))
    (tmp_path / "pack-999999.dat").write_bytes(b"stray")

    store = PackStore(tmp_path)
    assert pack.stat().st_size == 10_000
    assert pack_files(tmp_path) == [pack]
    second = chunk()
    store.append([second])
    assert store.read(first[0]) == first[1] and store.read(second[0]) == second[1]
    assert pack.stat().st_size == 20_000


def test_a_corrupt_chunk_is_dropped_not_served(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    damaged = []
    store.on_damage = lambda: damaged.append(True)
    bad, good = chunk(), chunk()
    store.begin_version(b"v" * 32, "ds", 1)
    store.add_refs(b"v" * 32, [(bad[0], 10_000), (good[0], 10_000)])
    store.append([bad, good])
    store.set_state(b"v" * 32, KEPT)
    [pack] = pack_files(tmp_path)
    with open(pack, "r+b") as f:
        f.seek(5)
        flipped = bytes([f.read(1)[0] ^ 0xFF])
        # Reading moved the position on: the byte flipped is the one read.
        f.seek(5)
        f.write(flipped)
    assert store.read(bad[0]) is None
    assert store.holds([bad[0], good[0]]) == {good[0]} and damaged == [True]
    [row] = store.versions("ds")
    assert row.state != KEPT and "corrupt" in row.note


def test_compaction_frees_what_no_kept_version_needs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(packs, "PACK_LIMIT", 25_000)
    store = PackStore(tmp_path)
    old, shared, new = [chunk() for _ in range(2)], chunk(), [chunk() for _ in range(2)]
    for version, chunks in ((b"1" * 32, [*old, shared]), (b"2" * 32, [shared, *new])):
        store.begin_version(version, "ds", version[0])
        store.add_refs(version, [(cid, len(data)) for cid, data in chunks])
        store.append(chunks)
        store.set_state(version, KEPT)
    assert store.disk_bytes() == 50_000 and len(pack_files(tmp_path)) == 3, "a full pack is sealed"
    assert store.usage([b"1" * 32, b"2" * 32]) == 50_000

    store.forget([b"1" * 32])
    done = store.compact(min_dead=0.0)
    assert done.freed == 20_000 and done.dropped == 2
    assert store.disk_bytes() == 30_000
    for cid, data in [shared, *new]:
        assert store.read(cid) == data
    assert store.holds([cid for cid, _ in old]) == set()
    assert store.compact(min_dead=0.0).freed == 0
