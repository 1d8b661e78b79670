"""Many rows per SQLite step: the index's batches run a few statements, not one per row,
and read back exactly what they wrote."""

import os
import sqlite3
from pathlib import Path

from shoal.daemon.store.index import FileRecord, FileStat, Index
from shoal.daemon.store.sqlbatch import MAX_ROWS, insert_rows, json_rows
from shoal.protocol.format.hashing import Kind, object_id


def _counting(db: sqlite3.Connection) -> list[str]:
    """Every statement `db` runs from now on (executemany: once per row)."""
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    return seen


def test_insert_rows_takes_any_count_in_a_few_statements() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB, c TEXT)")
    for n in (0, 1, 3, MAX_ROWS, MAX_ROWS + 1, 2 * MAX_ROWS + 300):
        db.execute("DELETE FROM t")
        rows = [(i, os.urandom(8), f"name {i}") for i in range(n)]
        seen = _counting(db)
        insert_rows(db, "INSERT INTO t", rows)
        db.set_trace_callback(None)
        assert sorted(db.execute("SELECT a, b, c FROM t").fetchall()) == rows
        # Whole statements of MAX_ROWS, then the rest as a sum of powers of two.
        assert len(seen) == n // MAX_ROWS + bin(n % MAX_ROWS).count("1")


def test_insert_rows_stays_within_the_builds_parameter_limit() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b, c, d, e, f, g, h)")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # an SQLite before 3.32
    rows = [(i, *range(7)) for i in range(1000)]
    seen = _counting(db)
    insert_rows(db, "INSERT INTO t", rows)
    db.set_trace_callback(None)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    # 999 // 8 = 124 rows at the most: statements of 64 rows and the rest.
    assert len(seen) == 1000 // 64 + bin(1000 % 64).count("1")


def test_insert_rows_keeps_the_tail_clause() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER)")
    insert_rows(db, "INSERT INTO t", [("x", 1), ("y", 2)])
    insert_rows(db, "INSERT INTO t", [("y", 3), ("z", 4)], " ON CONFLICT(k) DO UPDATE SET v = excluded.v")
    assert db.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("x", 1), ("y", 3), ("z", 4)]


def test_json_rows_reads_blobs_nulls_text_and_large_integers() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t(b BLOB, n INTEGER, s TEXT)")
    rows = [(os.urandom(32), 2**63 - 1, "ünïcode \"quoted\"\n"), (None, -5, None)]
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    got = json_rows(db, "SELECT json_group_array(json_array(iif(b IS NULL, NULL, hex(b)), n, s)) FROM t")
    assert {n: (None if b is None else bytes.fromhex(b), n, s) for b, n, s in got} == {row[1]: row for row in rows}
    assert json_rows(db, "SELECT json_group_array(n) FROM t WHERE n > ?", (2**63 - 1,)) == []


def _records(n: int) -> list[FileRecord]:
    return [
        FileRecord(f"d{i // 100}", f"f{i}", FileStat(10, i, i, i), os.urandom(32), [(os.urandom(32), 0, 10)], [])
        for i in range(n)
    ]


def test_recording_a_thousand_files_takes_a_few_statements(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    records = _records(1000)
    seen = _counting(index._db)
    index.record_files("/dest", records)
    # One per folder (10) to drop old locations and one to read the rows back, a few
    # for each table's inserts, BEGIN and COMMIT: no statement per file.
    assert len(seen) < 40, len(seen)
    cached = index.cached_files("/dest", "d3")
    assert {name: c.file_id for name, c in cached.items()} == {r.name: r.file_id for r in records[300:400]}
    places = index.first_locations([r.locations[0][0] for r in records])
    assert {cid: (p.path, p.offset, p.length) for cid, p in places.items()} == {
        r.locations[0][0]: (os.path.join("/dest", r.dir, r.name), 0, 10) for r in records
    }


def test_objects_round_trip_through_one_statement_each_way(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    data = [os.urandom(100 + i) for i in range(700)]
    ids = [object_id(Kind.FILE, d) for d in data]
    seen = _counting(index._db)
    index.put_objects((oid, Kind.FILE, d) for oid, d in zip(ids, data))
    assert index.get_objects(ids + [b"\1" * 32]) == {oid: (Kind.FILE, d) for oid, d in zip(ids, data)}
    assert index.object_sizes(ids[:5]) == {oid: len(d) for oid, d in zip(ids[:5], data[:5])}
    # BEGIN, the inserts (700 = 512 + 128 + 32 + 16 + 8 + 4), COMMIT, then one read each.
    assert len(seen) == 1 + 6 + 1 + 2, seen
