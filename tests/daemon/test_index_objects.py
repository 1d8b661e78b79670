"""Which manifest objects the index lacks, asked for many at once (a directory's FILE objects)."""

import os
from pathlib import Path

from shoal.daemon.store.index import QUERY_IDS, Index
from shoal.protocol.format.hashing import Kind, object_id


def test_missing_objects_keeps_the_order_across_query_groups(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    data = [os.urandom(40) for _ in range(2 * QUERY_IDS + 7)]
    ids = [object_id(Kind.FILE, d) for d in data]
    index.put_objects((oid, Kind.FILE, d) for i, (oid, d) in enumerate(zip(ids, data)) if i % 3)
    asked = ids[::-1] + [ids[0]]
    assert index.missing_objects(iter(asked)) == [oid for oid in asked if ids.index(oid) % 3 == 0]
    assert index.missing_objects([]) == []
