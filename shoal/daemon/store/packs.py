"""The pack store: copies of chunks kept so that old versions stay servable.

A shared folder's files change in place (`torch.save` truncates and rewrites
the same inode), so the bytes of a version are gone unless they were copied
when it was shared. The store holds such copies in `HOME/packs/`: append-only
pack files of at most PACK_LIMIT bytes, plus `packs.sqlite` mapping each chunk
id to (pack, offset, length) and recording which versions are kept and which
chunks each of them needs.

Crash safety: bytes are written and fsynced before their rows are committed,
and on open every pack is truncated to its committed size, so a torn tail is
never read. Every chunk is verified against its id when it goes in and when it
comes out; a chunk that fails on the way out is dropped, and the versions that
needed it are no longer kept in full.

Calls come from worker threads, so one lock serialises the database.
"""

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.protocol.format.hashing import chunk_id

log = logging.getLogger(__name__)

#: A pack is sealed once it reaches this size; compaction rewrites whole packs.
PACK_LIMIT = 256 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, size INTEGER NOT NULL, sealed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS chunks(
    id BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS kept(
    version BLOB PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '') WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kept_by_name ON kept(name, seq);
CREATE TABLE IF NOT EXISTS refs(
    version BLOB NOT NULL, chunk BLOB NOT NULL, length INTEGER NOT NULL, PRIMARY KEY(version, chunk)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_by_chunk ON refs(chunk);
CREATE TABLE IF NOT EXISTS policy(name TEXT PRIMARY KEY, keep INTEGER NOT NULL);
"""

#: Version states: being copied, copied in full, its changes copied (the rest is
#: served from the folder while the folder still holds it), or not kept (the note says why).
KEEPING, KEPT, CHANGES, NOT_KEPT = "keeping", "kept", "kept changes", "not kept"
#: The states of versions this daemon can serve in full.
SERVED = (KEPT, CHANGES)


@dataclass(frozen=True, slots=True)
class KeptVersion:
    """A version's row in the store."""

    version: bytes
    name: str
    seq: int
    state: str
    note: str


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one compaction did: bytes of pack files removed, packs rewritten, chunks dropped."""

    freed: int
    packs_removed: int
    dropped: int


class PackStore:
    """Pack files and their SQLite catalogue in one directory; thread-safe."""

    def __init__(self, root: Path) -> None:
        root.mkdir(mode=0o700, exist_ok=True)
        self.root = root
        #: Called (from any thread) after a corrupt chunk was dropped, so the catalog can shrink.
        self.on_damage: Callable[[], None] = lambda: None
        self._db = sqlite3.connect(root / "packs.sqlite", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _path(self, pack: int) -> Path:
        return self.root / f"pack-{pack:06d}.dat"

    def _recover(self) -> None:
        """Cut every pack to its committed size; forget packs whose file is gone; delete stray files."""
        with self._lock:
            packs = dict(self._db.execute("SELECT id, size FROM packs").fetchall())
            for pack, size in packs.items():
                path = self._path(pack)
                try:
                    actual = path.stat().st_size
                except FileNotFoundError:
                    actual = -1
                if actual > size:
                    os.truncate(path, size)
                elif actual < size:
                    log.warning("pack %s is missing or short; its chunks are dropped", path.name)
                    self._forget_pack(pack)
            for path in self.root.glob("pack-*.dat"):
                stem = path.stem.removeprefix("pack-")
                if not stem.isdigit() or int(stem) not in packs:
                    path.unlink(missing_ok=True)

    def _forget_pack(self, pack: int) -> None:
        """Drop a pack's rows and mark the versions that needed its chunks (lock held)."""
        self._db.execute("BEGIN")
        self._db.execute(
            "UPDATE kept SET state = ?, note = 'a pack file was lost' WHERE state IN (?, ?) AND version IN"
            " (SELECT r.version FROM refs r JOIN chunks c ON c.id = r.chunk WHERE c.pack = ?)",
            (NOT_KEPT, *SERVED, pack),
        )
        self._db.execute("DELETE FROM chunks WHERE pack = ?", (pack,))
        self._db.execute("DELETE FROM packs WHERE id = ?", (pack,))
        self._db.execute("COMMIT")

    # --- chunks -----------------------------------------------------------------

    def holds(self, ids: list[bytes]) -> set[bytes]:
        """Those of `ids` the store has a copy of."""
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        with self._lock:
            return {r[0] for r in self._db.execute(f"SELECT id FROM chunks WHERE id IN ({marks})", ids)}

    def read(self, wanted: bytes) -> bytes | None:
        """The verified bytes of a kept chunk, or None; a copy that fails its hash is dropped."""
        for _ in range(2):
            with self._lock:
                row = self._db.execute("SELECT pack, offset, length FROM chunks WHERE id = ?", (wanted,)).fetchone()
            if row is None:
                return None
            pack, offset, length = row
            try:
                fd = os.open(self._path(pack), os.O_RDONLY)
            except FileNotFoundError:
                continue  # compaction moved it between the lookup and the open: look again
            try:
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
            if len(data) == length and chunk_id(data) == wanted:
                return data
            self._drop_corrupt(wanted, pack, offset)
            return None
        return None

    def _drop_corrupt(self, wanted: bytes, pack: int, offset: int) -> None:
        log.warning(
            "chunk %s in %s at offset %d does not match its id; dropped it, and the versions that needed it"
            " are no longer kept in full", wanted.hex()[:16], self._path(pack).name, offset,
        )
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE kept SET state = ?, note = 'a kept chunk was corrupt' WHERE state IN (?, ?) AND version IN"
                " (SELECT version FROM refs WHERE chunk = ?)",
                (NOT_KEPT, *SERVED, wanted),
            )
            self._db.execute("DELETE FROM chunks WHERE id = ? AND pack = ? AND offset = ?", (wanted, pack, offset))
            self._db.execute("COMMIT")
        self.on_damage()

    def append(self, chunks: list[tuple[bytes, bytes]]) -> int:
        """Copy verified chunks (id, bytes) into the open pack; return the bytes written.

        Chunks already held are skipped; a chunk whose bytes do not hash to its
        id is refused with ValueError before anything is written.
        """
        held = self.holds([cid for cid, _ in chunks])
        fresh = list({cid: data for cid, data in chunks if cid not in held}.items())
        for cid, data in fresh:
            if chunk_id(data) != cid:
                raise ValueError(f"chunk {cid.hex()[:16]} does not match its bytes")
        self._place(fresh)
        return sum(len(data) for _, data in fresh)

    def _place(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Write chunks into open packs, starting a new pack whenever one is full."""
        start = 0
        while start < len(chunks):
            pack, size = self._open_pack(len(chunks[start][1]))
            placed: list[tuple[bytes, int, bytes]] = []
            end = size
            for cid, data in chunks[start:]:
                if placed and end + len(data) > PACK_LIMIT:
                    break
                placed.append((cid, end, data))
                end += len(data)
            self._write(pack, size, end, placed)
            start += len(placed)

    def _open_pack(self, need: int) -> tuple[int, int]:
        """The pack to append `need` bytes to and its committed size; a pack they would overfill is sealed."""
        with self._lock:
            row = self._db.execute("SELECT id, size FROM packs WHERE sealed = 0 ORDER BY id DESC LIMIT 1").fetchone()
            if row is not None and (row[1] == 0 or row[1] + need <= PACK_LIMIT):
                return row[0], row[1]
            self._db.execute("BEGIN")
            if row is not None:
                self._db.execute("UPDATE packs SET sealed = 1 WHERE id = ?", (row[0],))
            pack = int(self._db.execute("INSERT INTO packs(size) VALUES (0)").lastrowid)  # type: ignore[arg-type]
            self._db.execute("COMMIT")
            return pack, 0

    def _write(self, pack: int, size: int, end: int, placed: list[tuple[bytes, int, bytes]]) -> None:
        fd = os.open(self._path(pack), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwritev(fd, [data for _, _, data in placed], size)
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)",
                [(cid, pack, offset, len(data)) for cid, offset, data in placed],
            )
            self._db.execute("UPDATE packs SET size = ? WHERE id = ?", (end, pack))
            self._db.execute("COMMIT")

    # --- versions ---------------------------------------------------------------

    def begin_version(self, version: bytes, name: str, seq: int) -> None:
        """Record that a version is to be kept, forgetting any earlier attempt's references."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM refs WHERE version = ?", (version,))
            self._db.execute("INSERT OR REPLACE INTO kept VALUES (?, ?, ?, ?, '')", (version, name, seq, KEEPING))
            self._db.execute("COMMIT")

    def add_refs(self, version: bytes, refs: Iterable[tuple[bytes, int]]) -> None:
        """Record chunks (id, length) a version needs."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO refs VALUES (?, ?, ?)", ((version, c, n) for c, n in refs))
            self._db.execute("COMMIT")

    def clear_refs(self, version: bytes) -> None:
        """Forget the chunks a version was recorded to need, before recording fewer."""
        with self._lock:
            self._db.execute("DELETE FROM refs WHERE version = ?", (version,))

    def missing(self, version: bytes, after: bytes, limit: int) -> list[tuple[bytes, int]]:
        """Up to `limit` chunks (id, length) above id `after` that a version needs and the store lacks, by id."""
        with self._lock:
            return self._db.execute(
                "SELECT chunk, length FROM refs r WHERE version = ? AND chunk > ?"
                " AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = r.chunk) ORDER BY chunk LIMIT ?",
                (version, after, limit),
            ).fetchall()

    def missing_bytes(self, version: bytes) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT coalesce(sum(length), 0) FROM refs r WHERE version = ?"
                " AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = r.chunk)",
                (version,),
            ).fetchone()[0]

    def usage(self, versions: list[bytes]) -> int:
        """Bytes the union of these versions' chunks takes (each chunk once)."""
        if not versions:
            return 0
        marks = ",".join("?" * len(versions))
        with self._lock:
            return self._db.execute(
                "SELECT coalesce(sum(length), 0) FROM"
                f" (SELECT chunk, max(length) AS length FROM refs WHERE version IN ({marks}) GROUP BY chunk)",
                versions,
            ).fetchone()[0]

    def set_state(self, version: bytes, state: str, note: str = "") -> None:
        """Mark a version; one that is not kept releases its chunks for the next compaction."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE kept SET state = ?, note = ? WHERE version = ?", (state, note, version))
            if state == NOT_KEPT:
                self._db.execute("DELETE FROM refs WHERE version = ?", (version,))
            self._db.execute("COMMIT")

    def forget(self, versions: Iterable[bytes]) -> None:
        """Stop keeping versions (evicted); their chunks become dead unless another version needs them."""
        with self._lock:
            self._db.execute("BEGIN")
            for version in versions:
                self._db.execute("DELETE FROM refs WHERE version = ?", (version,))
                self._db.execute("DELETE FROM kept WHERE version = ?", (version,))
            self._db.execute("COMMIT")

    def versions(self, name: str | None = None) -> list[KeptVersion]:
        """Rows of one dataset (or all), newest first."""
        sql = "SELECT version, name, seq, state, note FROM kept"
        args: tuple = ()
        if name is not None:
            sql, args = sql + " WHERE name = ?", (name,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY name, seq DESC", args).fetchall()
        return [KeptVersion(*r) for r in rows]

    def kept_versions(self, name: str) -> tuple[bytes, ...]:
        """Versions of `name` this daemon can serve in full from the store (and the folder), newest first."""
        return tuple(row.version for row in self.versions(name) if row.state in SERVED)

    def names(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT name FROM kept ORDER BY name")]

    # --- per-dataset choice -----------------------------------------------------

    def set_policy(self, name: str, keep: bool) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO policy VALUES (?, ?)", (name, int(keep)))

    def policy(self, name: str) -> bool:
        """Whether new versions of `name` are kept (the default)."""
        with self._lock:
            row = self._db.execute("SELECT keep FROM policy WHERE name = ?", (name,)).fetchone()
        return row is None or bool(row[0])

    # --- space ------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """What the pack files take on disk now."""
        return sum(path.stat().st_size for path in self.root.glob("pack-*.dat"))

    def compact(self, *, min_dead: float) -> Compaction:
        """Drop chunks no version needs, delete dead packs, rewrite packs at least `min_dead` dead."""
        before = self.disk_bytes()
        with self._lock:
            self._db.execute("BEGIN")
            dropped = self._db.execute(
                "DELETE FROM chunks WHERE NOT EXISTS (SELECT 1 FROM refs r WHERE r.chunk = chunks.id)"
            ).rowcount
            self._db.execute("COMMIT")
            packs = self._db.execute(
                "SELECT p.id, p.size, coalesce((SELECT sum(length) FROM chunks c WHERE c.pack = p.id), 0)"
                " FROM packs p"
            ).fetchall()
        removed = 0
        for pack, size, live in packs:
            if size == 0 or (live and (size - live) / size < min_dead):
                continue
            self._rewrite(pack)
            removed += 1
        return Compaction(before - self.disk_bytes(), removed, dropped)

    def _rewrite(self, pack: int) -> None:
        """Move a pack's live chunks into the open pack (verifying each), then delete it."""
        with self._lock:
            self._db.execute("UPDATE packs SET sealed = 1 WHERE id = ?", (pack,))
        for batch in self._live_batches(pack):
            good = []
            for cid, _, _ in batch:
                data = self.read(cid)
                if data is not None:
                    good.append((cid, data))
            self._place(good)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM chunks WHERE pack = ?", (pack,))
            self._db.execute("DELETE FROM packs WHERE id = ?", (pack,))
            self._db.execute("COMMIT")
        self._path(pack).unlink(missing_ok=True)

    def _live_batches(self, pack: int, limit: int = 64) -> Iterator[list[tuple[bytes, int, int]]]:
        after = -1
        while True:
            with self._lock:
                batch = self._db.execute(
                    "SELECT id, offset, length FROM chunks WHERE pack = ? AND offset > ? ORDER BY offset LIMIT ?",
                    (pack, after, limit),
                ).fetchall()
            if not batch:
                return
            after = batch[-1][1]
            yield batch
