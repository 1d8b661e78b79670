"""Many rows per SQLite step.

Python's sqlite3 gives the GIL up around every step of a statement: `executemany`
steps once per row, and reading a result once per row. Each return waits for the
GIL, which a thread running Python (the event loop, busy during a fetch) hands over
only at its switch interval, so a worker thread's batch of rows crawls: 10,000
small files recorded by `Index.record_files` took 0.21 s alone and 5.5-7.2 s beside
a thread running Python (0.29 s and 0.54 s in batches). Here an insert takes up to MAX_ROWS rows per statement,
one step, and a read returns all its rows as one JSON value, one step.
"""

import itertools
import json
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

#: Rows per INSERT statement at the most, where the SQLite build allows their
#: parameters (32,766 by default since 3.32, 999 before).
MAX_ROWS = 512


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """Run `head VALUES (…), (…) tail` for `rows`, each a tuple of the same width.

    Statements take a power of two of rows (the rest in smaller powers), so that
    a few distinct statements serve every count and stay in sqlite3's cache."""
    if not rows:
        return
    width = len(rows[0])
    most = min(MAX_ROWS, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    pos = 0
    while pos < len(rows):
        n = 1 << (min(len(rows) - pos, most).bit_length() - 1)
        group = rows[pos : pos + n]
        db.execute(f"{head} VALUES {_values(width, n)}{tail}", list(itertools.chain.from_iterable(group)))
        pos += n


@lru_cache(maxsize=128)
def _values(width: int, n: int) -> str:
    return ",".join(["(" + ",".join("?" * width) + ")"] * n)


def json_rows(db: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """The rows of `sql`, a query that returns them as one JSON array of arrays
    (`SELECT json_group_array(json_array(…)) …`). JSON holds no blobs: select them
    as hex() and read them back with `bytes.fromhex`."""
    row = db.execute(sql, args).fetchone()
    return json.loads(row[0]) if row is not None and row[0] is not None else []
