"""The chunk index: one SQLite database (WAL) in the daemon's home.

It holds manifest objects, the stat cache of shared folders (which file is which
FILE object, like git's index), where each chunk's bytes live inside those files,
and the datasets with their versions. It never holds file contents.

Calls come from worker threads (`trio.to_thread`), so one lock serialises them;
every public method is one short transaction.
"""

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal.daemon.store.sqlbatch import insert_rows, json_rows
from shoal.protocol.format.hashing import Kind

#: Ids one `IN (...)` query takes at the most: well under SQLite's bound on a
#: statement's parameters (32,766 since 3.32; 999 before).
QUERY_IDS = 900

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects(
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, root TEXT NOT NULL, dir TEXT NOT NULL, name TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL, file_id BLOB, UNIQUE(root, dir, name));
CREATE TABLE IF NOT EXISTS locations(
    chunk_id BLOB NOT NULL, file INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, stale INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(chunk_id, file, offset)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locations_by_file ON locations(file);
CREATE TABLE IF NOT EXISTS dirs(
    root TEXT NOT NULL, rel TEXT NOT NULL, fingerprint BLOB NOT NULL, tree_id BLOB NOT NULL,
    files INTEGER NOT NULL, PRIMARY KEY(root, rel)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datasets(name TEXT PRIMARY KEY, path TEXT, head BLOB);
CREATE TABLE IF NOT EXISTS checked_trees(
    id BLOB PRIMARY KEY, size INTEGER NOT NULL, files INTEGER NOT NULL, entries INTEGER NOT NULL,
    depth INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions(
    id BLOB PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL,
    size INTEGER NOT NULL, files INTEGER NOT NULL, root BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS versions_by_name ON versions(name, seq);
CREATE TABLE IF NOT EXISTS version_stats(
    id BLOB PRIMARY KEY, files_changed INTEGER NOT NULL, bytes_new INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audiences(
    name TEXT NOT NULL, peer TEXT NOT NULL, PRIMARY KEY(name, peer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chosen_audience(name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reach(name TEXT NOT NULL, id BLOB NOT NULL, PRIMARY KEY(name, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reach_by_id ON reach(id);
CREATE TABLE IF NOT EXISTS reach_versions(name TEXT PRIMARY KEY, versions BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dests(
    path TEXT PRIMARY KEY, name TEXT NOT NULL, version BLOB NOT NULL, root BLOB NOT NULL, selection BLOB);
"""


@dataclass(frozen=True, slots=True)
class FileStat:
    """The stat fields that decide whether a file must be hashed again."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A stat-cache row: a file as it was when last hashed."""

    row: int
    stat: FileStat
    file_id: bytes | None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Everything the index learns about one small file: where it is, what it holds."""

    dir: str
    name: str
    stat: FileStat
    file_id: bytes
    locations: list[tuple[bytes, int, int]]
    objects: list[tuple[bytes, Kind, bytes]]


@dataclass(frozen=True, slots=True)
class Location:
    """Where one chunk's bytes were found, and the file's stat at that time."""

    file_row: int
    #: Text, not a Path: a sender builds one per run served, where Path costs more than the read.
    path: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A version as listed: enough for `ls` and `log` without decoding objects."""

    id: bytes
    name: str
    seq: int
    time: int
    size: int
    files: int
    root: bytes


class RetainedChunks(Protocol):
    """Copies of chunks kept outside the user's files (the pack store), verified on read."""

    def holds(self, ids: list[bytes]) -> set[bytes]: ...

    def read(self, wanted: bytes) -> bytes | None: ...


#: Bytes per SQLite page of a new index. Chunk ids are random, so every transaction of a
#: fetch or a share writes most leaves of the locations and objects trees again, one WAL
#: frame (two `pwrite`s) each: 16 KiB pages made a fetch's worth of index writes (10,000
#: files, 26,000 locations, 10,000 objects) 11,900 `pwrite`s instead of 39,700 and
#: 0.20 s of CPU instead of 0.24 s (/tmp script, this VM).
PAGE_SIZE = 16384
#: Seconds a transaction waits for another process's to end.
BUSY_TIMEOUT = 60.0


class Index:
    """The daemon's SQLite index; thread-safe.

    `retained` is where chunks that no file holds any more may still be found (the daemon's pack store).
    """

    def __init__(self, path: Path, retained: RetainedChunks | None = None) -> None:
        self.retained = retained
        self.path = path
        # Fetch worker processes write to the same index (fetch/split.py): every write
        # transaction begins IMMEDIATE and waits its turn, where a deferred one that
        # upgrades to writing while another process writes would fail at once.
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        # Before the first table: it sets the page size of a new index only (a WAL database keeps its own).
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL keeps WAL commits durable across a process crash; only a power
        # loss can drop the last transactions, which a re-share recomputes.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _read_json(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of a query that returns them as one JSON array (sqlbatch.json_rows):
        for results of many rows, read in one step."""
        with self._lock:
            return json_rows(self._db, sql, args)

    # --- objects ---------------------------------------------------------------

    def put_objects(self, objects: Iterable[tuple[bytes, Kind, bytes]]) -> None:
        """Store manifest objects (id, kind, encoded bytes); existing ids are kept."""
        rows = [(i, int(k), d) for i, k, d in objects]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            insert_rows(self._db, "INSERT OR IGNORE INTO objects", rows)
            self._db.execute("COMMIT")

    def get_object(self, object_id: bytes) -> tuple[Kind, bytes] | None:
        """Return (kind, bytes) of a stored object, or None."""
        rows = self._read("SELECT kind, data FROM objects WHERE id = ?", (object_id,))
        return (Kind(rows[0][0]), rows[0][1]) if rows else None

    def get_objects(self, ids: list[bytes]) -> dict[bytes, tuple[Kind, bytes]]:
        """(kind, bytes) of those of `ids` that are stored, in one query."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._read_json(
            f"SELECT json_group_array(json_array(hex(id), kind, hex(data))) FROM objects WHERE id IN ({marks})", ids
        )
        return {bytes.fromhex(oid): (Kind(kind), bytes.fromhex(data)) for oid, kind, data in rows}

    def object_sizes(self, ids: list[bytes]) -> dict[bytes, int]:
        """The stored size of those of `ids` that are stored, in one query that reads no object."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._read_json(
            f"SELECT json_group_array(json_array(hex(id), length(data))) FROM objects WHERE id IN ({marks})", ids
        )
        return {bytes.fromhex(oid): size for oid, size in rows}

    def missing_objects(self, ids: Iterable[bytes]) -> list[bytes]:
        """Return those of `ids` that are not stored, in order.

        One query per QUERY_IDS ids: a query per id (a directory's FILE objects are
        asked about together) gave the GIL up and waited for it again each time."""
        wanted = list(ids)
        stored: set[bytes] = set()
        for start in range(0, len(wanted), QUERY_IDS):
            group = wanted[start : start + QUERY_IDS]
            marks = ",".join("?" * len(group))
            rows = self._read_json(f"SELECT json_group_array(hex(id)) FROM objects WHERE id IN ({marks})", group)
            stored.update(map(bytes.fromhex, rows))
        return [i for i in wanted if i not in stored]

    def checked_tree(self, tree_id: bytes, depth: int) -> tuple[int, int, int] | None:
        """(bytes, files, entries) below a received tree whose whole subtree is stored and was
        checked at `depth` or shallower (a symlink that stays inside at some depth stays inside deeper)."""
        rows = self._read(
            "SELECT size, files, entries FROM checked_trees WHERE id = ? AND depth <= ?", (tree_id, depth)
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def add_checked_tree(self, tree_id: bytes, size: int, files: int, entries: int, depth: int) -> None:
        self._write(
            "INSERT INTO checked_trees VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
            " depth = min(depth, excluded.depth)",
            (tree_id, size, files, entries, depth),
        )

    # --- stat cache ------------------------------------------------------------

    def dir_cache(self, root: str, rel: str) -> tuple[bytes, bytes, int] | None:
        """Return (fingerprint, tree id, files below) recorded for a directory, or None."""
        rows = self._read("SELECT fingerprint, tree_id, files FROM dirs WHERE root = ? AND rel = ?", (root, rel))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def set_dir_cache(self, root: str, rel: str, fingerprint: bytes, tree_id: bytes, files: int) -> None:
        self._write("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?, ?)", (root, rel, fingerprint, tree_id, files))

    def cached_files(self, root: str, rel: str) -> dict[str, CachedFile]:
        """Return the stat-cache rows of one directory, by name."""
        rows = self._read_json(
            # hex(NULL) is '': a row whose file is still being hashed keeps its NULL.
            "SELECT json_group_array(json_array(name, id, size, mtime_ns, ctime_ns, ino,"
            " iif(file_id IS NULL, NULL, hex(file_id))))"
            " FROM files WHERE root = ? AND dir = ?",
            (root, rel),
        )
        return {
            r[0]: CachedFile(r[1], FileStat(r[2], r[3], r[4], r[5]), None if r[6] is None else bytes.fromhex(r[6]))
            for r in rows
        }

    def begin_file(self, root: str, rel: str, name: str, stat: FileStat) -> int:
        """Forget a file's old chunks and return its row, pending until `finish_file`."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT id FROM files WHERE root = ? AND dir = ? AND name = ?", (root, rel, name)
            ).fetchone()
            if row is None:
                cur = self._db.execute(
                    "INSERT INTO files(root, dir, name, size, mtime_ns, ctime_ns, ino, file_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    (root, rel, name, stat.size, stat.mtime_ns, stat.ctime_ns, stat.ino),
                )
                file_row = int(cur.lastrowid)  # type: ignore[arg-type]
            else:
                file_row = row[0]
                self._db.execute("DELETE FROM locations WHERE file = ?", (file_row,))
                self._db.execute("UPDATE files SET file_id = NULL WHERE id = ?", (file_row,))
            self._db.execute("COMMIT")
        return file_row

    def record_files(self, root: str, records: Iterable[FileRecord]) -> None:
        """Record many files below `root` in a single transaction."""
        records = list(records)
        if not records:
            return
        with self._lock:
            by_folder: dict[str, list[str]] = {}
            for r in records:
                by_folder.setdefault(r.dir, []).append(r.name)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Old chunk locations go first, found through the rows that exist
                # already: a file seen for the first time costs no lookup.
                for folder, names in by_folder.items():
                    marks = ",".join("?" * len(names))
                    self._db.execute(
                        "DELETE FROM locations WHERE file IN"
                        f" (SELECT id FROM files WHERE root = ? AND dir = ? AND name IN ({marks}))",
                        (root, folder, *names),
                    )
                insert_rows(
                    self._db,
                    "INSERT INTO files(root, dir, name, size, mtime_ns, ctime_ns, ino, file_id)",
                    [
                        (root, r.dir, r.name, r.stat.size, r.stat.mtime_ns, r.stat.ctime_ns, r.stat.ino, r.file_id)
                        for r in records
                    ],
                    " ON CONFLICT(root, dir, name) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
                    " ctime_ns = excluded.ctime_ns, ino = excluded.ino, file_id = excluded.file_id",
                )
                rows: dict[tuple[str, str], int] = {}
                for folder, names in by_folder.items():
                    marks = ",".join("?" * len(names))
                    for name, row in json_rows(
                        self._db,
                        "SELECT json_group_array(json_array(name, id)) FROM files"
                        f" WHERE root = ? AND dir = ? AND name IN ({marks})",
                        (root, folder, *names),
                    ):
                        rows[folder, name] = row
                ids = [rows[r.dir, r.name] for r in records]
                insert_rows(
                    self._db,
                    "INSERT OR IGNORE INTO locations(chunk_id, file, offset, length)",
                    [(c, i, o, n) for r, i in zip(records, ids) for c, o, n in r.locations],
                )
                insert_rows(
                    self._db,
                    "INSERT OR IGNORE INTO objects",
                    [(oid, int(k), d) for r in records for oid, k, d in r.objects],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_locations(self, file_row: int, chunks: Iterable[tuple[bytes, int, int]]) -> None:
        """Record chunks (id, offset, length) found in a file."""
        rows = [(c, file_row, o, n) for c, o, n in chunks]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            insert_rows(self._db, "INSERT OR IGNORE INTO locations(chunk_id, file, offset, length)", rows)
            self._db.execute("COMMIT")

    def finish_file(self, file_row: int, stat: FileStat, file_id: bytes) -> None:
        """Mark a file hashed: its stat as read and its FILE object id."""
        self._write(
            "UPDATE files SET size = ?, mtime_ns = ?, ctime_ns = ?, ino = ?, file_id = ? WHERE id = ?",
            (stat.size, stat.mtime_ns, stat.ctime_ns, stat.ino, file_id, file_row),
        )

    def drop_files(self, root: str, rel: str, keep: Iterable[str]) -> None:
        """Forget the files of a directory that are not in `keep`."""
        keep = set(keep)
        # Names and row ids only: a share calls this for every directory it hashed,
        # and full stat-cache rows cost more than the comparison.
        rows = self._read_json(
            "SELECT json_group_array(json_array(name, id)) FROM files WHERE root = ? AND dir = ?", (root, rel)
        )
        gone = [row for name, row in rows if name not in keep]
        if gone:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                for start in range(0, len(gone), QUERY_IDS):
                    group = gone[start : start + QUERY_IDS]
                    self._db.execute(f"DELETE FROM files WHERE id IN ({','.join('?' * len(group))})", group)
                self._db.execute("COMMIT")

    def drop_dirs_except(self, root: str, visited: Iterable[str]) -> None:
        """Forget cached directories and files of `root` outside the `visited` set."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS visited(rel TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM visited")
            insert_rows(self._db, "INSERT OR IGNORE INTO visited", [(v,) for v in visited])
            self._db.execute("DELETE FROM files WHERE root = ? AND dir NOT IN (SELECT rel FROM visited)", (root,))
            self._db.execute("DELETE FROM dirs WHERE root = ? AND rel NOT IN (SELECT rel FROM visited)", (root,))
            self._db.execute("COMMIT")

    # --- chunk locations -------------------------------------------------------

    def locations(self, chunk_id: bytes, limit: int = 4) -> list[Location]:
        """Return up to `limit` places believed to hold the chunk."""
        rows = self._read(
            "SELECT l.file, f.root, f.dir, f.name, l.offset, l.length FROM locations l"
            " JOIN files f ON f.id = l.file WHERE l.chunk_id = ? AND l.stale = 0 LIMIT ?",
            (chunk_id, limit),
        )
        return [Location(r[0], os.path.join(r[1], r[2], r[3]), r[4], r[5]) for r in rows]

    def first_locations(self, ids: list[bytes]) -> dict[bytes, Location]:
        """One believed location for each of `ids` that has any, in one query."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._read_json(
            "SELECT json_group_array(json_array(hex(l.chunk_id), l.file, f.root, f.dir, f.name, l.offset, l.length))"
            f" FROM locations l JOIN files f ON f.id = l.file WHERE l.stale = 0 AND l.chunk_id IN ({marks})",
            ids,
        )
        return {bytes.fromhex(r[0]): Location(r[1], os.path.join(r[2], r[3], r[4]), r[5], r[6]) for r in rows}

    def chunks_present(self, ids: list[bytes]) -> set[bytes]:
        """Those of `ids` that some non-stale location is believed to hold."""
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self._read_json(
            "SELECT json_group_array(hex(chunk_id)) FROM"
            f" (SELECT DISTINCT chunk_id FROM locations WHERE stale = 0 AND chunk_id IN ({marks}))",
            ids,
        )
        found = set(map(bytes.fromhex, rows))
        if self.retained is not None and len(found) < len(ids):
            found |= self.retained.holds([i for i in ids if i not in found])
        return found

    def mark_stale(self, chunk_id: bytes, file_row: int, offset: int) -> None:
        """Never serve this location again: the bytes there no longer match."""
        self._write(
            "UPDATE locations SET stale = 1 WHERE chunk_id = ? AND file = ? AND offset = ?",
            (chunk_id, file_row, offset),
        )

    # --- datasets and versions ------------------------------------------------

    def dataset(self, name: str) -> tuple[str | None, bytes | None] | None:
        """Return (shared path, head version id) of a dataset, or None."""
        rows = self._read("SELECT path, head FROM datasets WHERE name = ?", (name,))
        return (rows[0][0], rows[0][1]) if rows else None

    def dataset_names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM datasets ORDER BY name")]

    def add_version(self, row: VersionRow, data: bytes, *, path: str | None) -> None:
        """Store a version record and make it the dataset's head."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._insert_version(row, data)
            self._db.execute(
                "INSERT INTO datasets VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET path = excluded.path,"
                " head = excluded.head",
                (row.name, path, row.id),
            )
            self._db.execute("COMMIT")

    def store_version(self, row: VersionRow, data: bytes) -> None:
        """Store a version record without making it the dataset's head."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._insert_version(row, data)
            self._db.execute("COMMIT")

    def _insert_version(self, row: VersionRow, data: bytes) -> None:
        self._db.execute("INSERT OR IGNORE INTO objects VALUES (?, ?, ?)", (row.id, int(Kind.VERSION), data))
        self._db.execute(
            "INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.id, row.name, row.seq, row.time, row.size, row.files, row.root),
        )

    def version(self, version_id: bytes) -> VersionRow | None:
        rows = self._read("SELECT id, name, seq, time, size, files, root FROM versions WHERE id = ?", (version_id,))
        return VersionRow(*rows[0]) if rows else None

    def versions(self, name: str) -> Iterator[VersionRow]:
        """The versions of a dataset, newest first."""
        rows = self._read(
            "SELECT id, name, seq, time, size, files, root FROM versions WHERE name = ? ORDER BY seq DESC", (name,)
        )
        return (VersionRow(*r) for r in rows)

    def version_count(self, name: str) -> int:
        return self._read("SELECT count(*) FROM versions WHERE name = ?", (name,))[0][0]

    # --- fetched folders ---------------------------------------------------------

    def dest_state(self, path: str) -> tuple[str, bytes, bytes, bytes | None] | None:
        """(dataset, version id, root, selection key) a fetch last left in folder `path`; a key
        of None means an --include fetch added paths to whatever was there."""
        rows = self._read("SELECT name, version, root, selection FROM dests WHERE path = ?", (path,))
        return tuple(rows[0]) if rows else None

    def checkouts(self, name: str) -> list[tuple[str, bytes, bytes | None]]:
        """(folder, version id, selection key) of every folder a fetch left `name` in."""
        rows = self._read("SELECT path, version, selection FROM dests WHERE name = ? ORDER BY path", (name,))
        return [(r[0], r[1], r[2]) for r in rows]

    def set_dest_state(self, path: str, name: str, version_id: bytes, root: bytes, selection: bytes | None) -> None:
        self._write("INSERT OR REPLACE INTO dests VALUES (?, ?, ?, ?, ?)", (path, name, version_id, root, selection))

    def withdraw_dataset(self, name: str, *, forget: bool) -> tuple[str | None, int]:
        """Stop listing `name` and stop reading its folder for peers; with `forget`, drop its
        versions too. Return (its folder, versions dropped). The folder itself is not touched."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT path FROM datasets WHERE name = ?", (name,)).fetchone()
            path = row[0] if row else None
            self._db.execute("DELETE FROM datasets WHERE name = ?", (name,))
            others = self._db.execute("SELECT 1 FROM datasets WHERE path = ?", (path,)).fetchone()
            if path is not None and others is None:
                # Its files' chunk locations go: no peer request reads the folder any more.
                self._db.execute("DELETE FROM files WHERE root = ?", (path,))
                self._db.execute("DELETE FROM dirs WHERE root = ?", (path,))
            dropped = 0
            if forget:
                ids = "SELECT id FROM versions WHERE name = ?"
                self._db.execute(f"DELETE FROM version_stats WHERE id IN ({ids})", (name,))
                self._db.execute(f"DELETE FROM objects WHERE id IN ({ids})", (name,))
                dropped = self._db.execute("DELETE FROM versions WHERE name = ?", (name,)).rowcount
            self._db.execute("COMMIT")
        return path, dropped

    def audiences(self) -> dict[str, frozenset[str]]:
        """The datasets limited to chosen peers, with those peers' ids (possibly none)."""
        chosen: dict[str, set[str]] = {row[0]: set() for row in self._read("SELECT name FROM chosen_audience")}
        for name, peer in self._read("SELECT name, peer FROM audiences"):
            chosen.setdefault(name, set()).add(peer)
        return {name: frozenset(peers) for name, peers in chosen.items()}

    def set_audience(self, name: str, peers: frozenset[str] | None) -> None:
        """Limit `name` to `peers`; None: every trusted peer."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM audiences WHERE name = ?", (name,))
            self._db.execute("DELETE FROM chosen_audience WHERE name = ?", (name,))
            if peers is not None:
                self._db.execute("INSERT INTO chosen_audience VALUES (?)", (name,))
                self._db.executemany("INSERT INTO audiences VALUES (?, ?)", ((name, peer) for peer in sorted(peers)))
            self._db.execute("COMMIT")

    # --- what each dataset reaches (for audiences) --------------------------------

    def reach_versions(self, name: str) -> bytes | None:
        """The version ids (concatenated) whose reachable ids are recorded for `name`, if any."""
        rows = self._read("SELECT versions FROM reach_versions WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def drop_reach(self, name: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM reach_versions WHERE name = ?", (name,))
            self._db.execute("DELETE FROM reach WHERE name = ?", (name,))
            self._db.execute("COMMIT")

    def add_reach(self, name: str, ids: Iterable[bytes]) -> None:
        rows = [(name, i) for i in ids]
        if rows:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                insert_rows(self._db, "INSERT OR IGNORE INTO reach", rows)
                self._db.execute("COMMIT")

    def finish_reach(self, name: str, versions: bytes) -> None:
        self._write("INSERT OR REPLACE INTO reach_versions VALUES (?, ?)", (name, versions))

    def reach_hits(self, ids: list[bytes], names: list[str]) -> set[bytes]:
        """Those of `ids` that a dataset among `names` reaches."""
        if not ids or not names:
            return set()
        id_marks, name_marks = ",".join("?" * len(ids)), ",".join("?" * len(names))
        rows = self._read_json(
            "SELECT json_group_array(hex(id)) FROM"
            f" (SELECT DISTINCT id FROM reach WHERE id IN ({id_marks}) AND name IN ({name_marks}))",
            [*ids, *names],
        )
        return set(map(bytes.fromhex, rows))

    def unlist_dataset(self, name: str, path: str) -> None:
        """Stop listing (and offering) a dataset whose folder no longer holds its whole head."""
        self._write("DELETE FROM datasets WHERE name = ? AND path = ?", (name, path))

    def version_stats(self, version_id: bytes) -> tuple[int, int] | None:
        """(files changed, bytes new) of a version against its first parent, once computed."""
        rows = self._read("SELECT files_changed, bytes_new FROM version_stats WHERE id = ?", (version_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def set_version_stats(self, version_id: bytes, files_changed: int, bytes_new: int) -> None:
        self._write("INSERT OR REPLACE INTO version_stats VALUES (?, ?, ?)", (version_id, files_changed, bytes_new))
