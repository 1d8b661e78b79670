"""What changed between two versions: changed paths, and the bytes a fetch would move.

Both trees are walked side by side, skipping every subtree whose id is equal on
both sides, so the work follows the size of the change. Chunk sets go to a
temporary SQLite database, never a Python set, so a huge dataset costs disk,
not memory.
"""

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shoal.daemon.model import VersionInfo
from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import ObjectLoader, file_chunks, tree_entries
from shoal.protocol.format.objects import EntryType, TreeEntry, decode_version, stored_file

#: Rows inserted into the chunk tables per statement.
_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Change:
    """One path that differs: "added", "removed", "modified" or "type" (a file became a link, …)."""

    path: str
    change: str
    size: int
    #: The new side's FILE id, when it is a regular file.
    file_id: bytes | None


def changes(load: ObjectLoader, old_root: bytes | None, new_root: bytes) -> Iterator[Change]:
    """Every file or symlink that differs from `old_root` to `new_root`, in path order."""
    yield from _diff_dir(load, (), old_root, new_root)


def _diff_dir(load: ObjectLoader, prefix: tuple[str, ...], old_id: bytes | None, new_id: bytes | None) -> Iterator[Change]:
    if old_id == new_id:
        return
    old = _entries(load, old_id)
    new = _entries(load, new_id)
    for name in sorted(old.keys() | new.keys(), key=lambda n: n.encode("utf-8")):
        parts = prefix + (name,)
        a, b = old.get(name), new.get(name)
        a_tree = a.id if a is not None and a.type == EntryType.DIR else None
        b_tree = b.id if b is not None and b.type == EntryType.DIR else None
        a_dir, b_dir = a_tree is not None, b_tree is not None
        if a_dir or b_dir:
            yield from _diff_dir(load, parts, a_tree, b_tree)
        if (a is not None and not a_dir) or (b is not None and not b_dir):
            leaf = None if b_dir else b
            change = _leaf_change(None if a_dir else a, leaf)
            if change is not None:
                file_id = leaf.id if leaf is not None and leaf.type == EntryType.FILE else None
                yield Change("/".join(parts), change, leaf.size if leaf is not None else 0, file_id)


def _entries(load: ObjectLoader, tree_id: bytes | None) -> dict[str, TreeEntry]:
    return {e.name: e for e in tree_entries(load, tree_id)} if tree_id is not None else {}


def _leaf_change(a: TreeEntry | None, b: TreeEntry | None) -> str | None:
    if a is None:
        return "added"
    if b is None:
        return "removed"
    if a.type != b.type:
        return "type"
    if _content(a) != _content(b):
        return "modified"
    return None


def _content(leaf: TreeEntry) -> tuple[bytes | str, int]:
    """What a file or symlink holds: a file's id and permissions, a link's target."""
    if leaf.type == EntryType.SYMLINK:
        return leaf.target, 0
    return leaf.id, leaf.permissions() if leaf.type == EntryType.FILE else 0


def new_bytes(load: ObjectLoader, old_root: bytes | None, new_root: bytes, changed: Iterator[Change]) -> int:
    """Bytes of the distinct chunks of `new_root` that `old_root` does not hold.

    Only changed files can bring new chunks; the old side must be read whole,
    since a changed file may reuse a chunk of any old one.
    """
    db = sqlite3.connect("")  # a private temporary database, spilled to disk when large
    try:
        db.execute("CREATE TABLE wanted(id BLOB PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID")
        insert_rows(db, "INSERT OR IGNORE INTO wanted VALUES (?, ?)", changed_chunks(load, changed))
        if old_root is not None:
            insert_rows(db, "DELETE FROM wanted WHERE id = ?", ((cid,) for cid, _ in _tree_chunks(load, old_root)))
        return db.execute("SELECT coalesce(sum(size), 0) FROM wanted").fetchone()[0]
    finally:
        db.close()


def insert_rows(db: sqlite3.Connection, sql: str, rows: Iterator[tuple]) -> None:
    """Run `sql` for every row, a batch of rows per statement."""
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            db.executemany(sql, batch)
            batch = []
    db.executemany(sql, batch)


def changed_chunks(load: ObjectLoader, changed: Iterator[Change]) -> Iterator[tuple[bytes, int]]:
    for change in changed:
        if change.file_id is not None:
            yield from _file_chunks(load, change.file_id)


def _tree_chunks(load: ObjectLoader, root: bytes) -> Iterator[tuple[bytes, int]]:
    for entry in tree_entries(load, root):
        if entry.type == EntryType.DIR:
            yield from _tree_chunks(load, entry.id)
        elif entry.type == EntryType.FILE:
            yield from _file_chunks(load, entry.id)


def _file_chunks(load: ObjectLoader, file_id: bytes) -> Iterator[tuple[bytes, int]]:
    file = stored_file(load(Kind.FILE, file_id), file_id)
    for ref in file_chunks(load, file):
        yield ref.id, ref.size


def has_manifest(index: Index, root: bytes) -> bool:
    """Whether every tree, file and chunk-list object below `root` is stored here."""
    if index.checked_tree(root, 0) is not None:
        return True  # a whole fetched tree, checked when it arrived
    try:
        for _ in _tree_chunks(index_loader(index), root):
            pass
    except ProtocolError:
        return False
    return True


def parent_stats(index: Index, version_id: bytes) -> tuple[int, int] | None:
    """(files changed, bytes new) of a version against its first parent, computed once and
    cached; None when either manifest is not stored here."""
    cached = index.version_stats(version_id)
    if cached is not None:
        return cached
    load = index_loader(index)
    record = decode_version(load(Kind.VERSION, version_id), version_id)
    parent_root = None
    if record.parents:
        found = index.get_object(record.parents[0])
        if found is None:
            return None
        parent_root = decode_version(found[1], record.parents[0]).root
    if not has_manifest(index, record.root) or (parent_root is not None and not has_manifest(index, parent_root)):
        return None
    count = sum(1 for _ in changes(load, parent_root, record.root))
    moved = new_bytes(load, parent_root, record.root, changes(load, parent_root, record.root))
    index.set_version_stats(version_id, count, moved)
    return count, moved


def version_kind(index: Index, version: VersionInfo) -> dict[str, Any]:
    """What a version changed: `{"kind": "data"}`, or for one that keeps its parent's tree (a
    subset definition, SPEC.md "Subsets") `{"kind": "subsets", "subsets_changed": {name: how}}`,
    how being "defined", "redefined" or "deleted"."""
    found = index.get_object(version.parents[0]) if version.parents else None
    parent = decode_version(found[1], version.parents[0]) if found is not None else None
    if parent is None or parent.root != version.root:
        return {"kind": "data"}
    before = {s.name: s for s in parent.subsets}
    after = {s.name: s for s in version.subsets}
    changed = {}
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            changed[name] = "deleted"
        elif name not in before:
            changed[name] = "defined"
        elif before[name] != after[name]:
            changed[name] = "redefined"
    return {"kind": "subsets", "subsets_changed": changed}


def diff_report(index: Index, a: VersionInfo, b: VersionInfo, limit: int) -> dict:
    """The `diff` control method's result: changed paths (the first `limit`), counts and bytes."""
    load = index_loader(index)
    counts = {"added": 0, "removed": 0, "modified": 0, "type": 0}
    listed: list[dict[str, Any]] = []
    changed_bytes = 0
    for change in changes(load, a.root, b.root):
        counts[change.change] += 1
        changed_bytes += change.size if change.file_id is not None else 0
        if len(listed) < limit:
            listed.append({"path": change.path, "change": change.change, "size": change.size})
    return {
        "from": a.to_json(),
        "to": b.to_json(),
        "total": sum(counts.values()),
        "counts": counts,
        "changes": listed,
        "bytes_changed": changed_bytes,
        "bytes_to_fetch": new_bytes(load, a.root, b.root, changes(load, a.root, b.root)),
    }
