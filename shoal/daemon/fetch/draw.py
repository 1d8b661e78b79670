"""An exact sample's draw (SPEC.md "Subsets"): of the files a subset's patterns
include, the draw_count with the smallest draw keys.

Which files that is depends on every included file of the version, so the draw
takes a pass over the included trees before any path can be decided: the keys
go to a temporary SQLite database, spilled to disk when large, never a Python
list, and the last drawn key comes back. It alone then decides each path.
"""

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import trio

from shoal.daemon.fetch.dest import include_matcher
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.state import Transfer
from shoal.daemon.fetch.walk import Walk
from shoal.daemon.library.history import insert_rows
from shoal.daemon.store.loader import index_loader
from shoal.protocol.format.manifest import ObjectLoader, tree_entries
from shoal.protocol.format.objects import EntryType, Subset
from shoal.protocol.format.subsets import draw_count, draw_key


@dataclass(frozen=True, slots=True)
class Draw:
    """A subset's draw from one version: files included, files drawn, and the last drawn key."""

    files: int
    drawn: int
    #: The largest draw key drawn; None when nothing is.
    last: bytes | None


def exact_draw(load: ObjectLoader, root: bytes, subset: Subset) -> Draw:
    """The draw of `subset` from the stored tree `root`."""
    db = sqlite3.connect("")  # a private temporary database
    try:
        # Unindexed: appending and then one bounded sort is several times faster than a
        # B-tree kept in order; a tree's paths are distinct, so no key repeats.
        db.execute("CREATE TABLE keys(k BLOB NOT NULL)")
        keys = ((draw_key(path, subset.seed),) for path in included_paths(load, root, subset.include))
        insert_rows(db, "INSERT INTO keys VALUES (?)", keys)
        files = db.execute("SELECT count(*) FROM keys").fetchone()[0]
        drawn = draw_count(files, subset.sample)
        if not drawn:
            return Draw(files, 0, None)
        # The sort stops at its OFFSET: count from whichever end is nearer.
        if drawn <= files // 2:
            query, offset = "SELECT k FROM keys ORDER BY k LIMIT 1 OFFSET ?", drawn - 1
        else:
            query, offset = "SELECT k FROM keys ORDER BY k DESC LIMIT 1 OFFSET ?", files - drawn
        return Draw(files, drawn, db.execute(query, (offset,)).fetchone()[0])
    finally:
        db.close()


def included_paths(load: ObjectLoader, root: bytes, include: tuple[str, ...]) -> Iterator[str]:
    """Every file and link below `root` that `include` selects, found as a fetch's walk finds them."""
    match = include_matcher(include)

    def below(prefix: tuple[str, ...], tree_id: bytes) -> Iterator[str]:
        for entry in tree_entries(load, tree_id):
            parts = prefix + (entry.name,)
            if entry.type != EntryType.DIR:
                if match(parts, False):
                    yield "/".join(parts)
            elif match(parts, True):
                yield from below(parts, entry.id)

    return below((), root)


async def draw_for_fetch(
    root: bytes, subset: Subset, objects: Objects, transfer: Transfer, sources: Sequence[Source]
) -> Draw:
    """Fetch (and check) the trees `subset` includes, then draw from them."""
    inner = include_matcher(subset.include)
    trees = Walk(objects, transfer, sources, lambda parts, is_dir: is_dir and inner(parts, True), remember=False)
    seen = transfer.entries_seen
    await trees.tree(root)
    # The fetch's own walk counts these entries again against the version's bound.
    transfer.entries_seen = seen
    return await trio.to_thread.run_sync(exact_draw, index_loader(objects.index), root, subset)
