"""Measure the dedup / overhead trade-off of candidate chunk sizes (SPEC.md "Chunking").

For each candidate target average (min = avg/4, max = avg*4, shoal's ratios) it
chunks a 100 MB pseudo-random file, then the same file with 1 KiB inserted near
the start, with 1 KiB inserted at 16 random places, and with 1 MiB overwritten
in the middle, and counts the new chunks (ids the old version lacks) that a
peer holding the old version would fetch. It then scales the per-chunk costs to
a 147 GB dataset: chunks (= index location rows), index bytes (measured by
hashing the file into a real index) and encoded chunk-list bytes.

    .venv/bin/python bench/chunk_params.py [--mb 100]
"""

import argparse
import random
import sqlite3
import tempfile
from pathlib import Path

import blake3

from shoal.daemon.library.scanner import hash_file
from shoal.daemon.store.index import Index
from shoal.protocol.format.chunking import ChunkingParams, make_chunker
from shoal.protocol.format.hashing import chunk_id
from shoal.protocol.format.manifest import FileBuilder

KIB = 1024
MIB = 1024 * KIB
DATASET = 147 * 10**9
CANDIDATES = (32 * KIB, 64 * KIB, 128 * KIB, 256 * KIB)
INSERTS = 16


def chunk_ids(params: ChunkingParams, data: bytes) -> list[bytes]:
    return [chunk_id(c.data) for c in make_chunker(params).cut_buf(data)]


def new_chunks(params: ChunkingParams, old: set[bytes], data: bytes) -> tuple[int, int]:
    """Chunks (count, bytes) of `data` whose ids are not in `old`."""
    count = size = 0
    for c in make_chunker(params).cut_buf(data):
        if chunk_id(c.data) not in old:
            count += 1
            size += c.length
    return count, size


def chunk_list_bytes(params: ChunkingParams, data: bytes) -> int:
    """Encoded bytes of the FILE object and all its chunk-list pages."""
    total = 0

    def sink(_id: bytes, encoded: bytes) -> None:
        nonlocal total
        total += len(encoded)

    builder = FileBuilder(params, sink)
    for c in make_chunker(params).cut_buf(data):
        builder.add_chunk(chunk_id(c.data), c.length)
    builder.finish()
    return total


def index_bytes(params: ChunkingParams, path: Path, home: Path) -> int:
    """Bytes a real index uses for one hashed file: its objects, chunk locations and their index.

    Counted from SQLite's dbstat (used bytes of each b-tree page), so the figure
    is not rounded up to whole pages or confused by the WAL.
    """
    index = Index(home / "index.sqlite")
    hash_file(index, path.parent, "", path.name, params)
    index.close()
    db = sqlite3.connect(home / "index.sqlite")
    (used,) = db.execute(
        "SELECT SUM(pgsize - unused) FROM dbstat WHERE name IN ('objects', 'locations', 'locations_by_file')"
    ).fetchone()
    db.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the test file in MB (10**6 bytes)")
    args = parser.parse_args()
    size = args.mb * 10**6
    data = blake3.blake3(b"shoal chunk_params bench").digest(length=size)
    inserted = data[:4096] + bytes(KIB) + data[4096:]
    rng = random.Random(0)
    places = [rng.randrange(size) for _ in range(INSERTS)]
    mid = size // 2
    overwritten = data[:mid] + b"\xff" * MIB + data[mid + MIB :]

    header = (
        f"{'avg':>7} {'min':>6} {'max':>7} {'mean':>7} {'chunks':>6} | {'ins 1K':>6} {'bytes':>7}"
        f" | {'ins 1K x16 mean':>15} | {'ow 1M':>5} {'bytes':>7} | {'chunks/147GB':>12} {'idx B/ch':>8} {'index 147GB':>11}"
        f" {'list B/ch':>9} {'lists 147GB':>11}"
    )
    print(f"{args.mb} MB pseudo-random file; new chunks a holder of the old version must fetch")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data.bin")
        path.write_bytes(data)
        for avg in CANDIDATES:
            params = ChunkingParams(avg // 4, avg, avg * 4)
            ids = chunk_ids(params, data)
            old = set(ids)
            ins = new_chunks(params, old, inserted)
            ow = new_chunks(params, old, overwritten)
            spread = [new_chunks(params, old, data[:p] + bytes(KIB) + data[p:]) for p in places]
            spread_n = sum(n for n, _ in spread) / INSERTS
            spread_b = sum(b for _, b in spread) / INSERTS
            mean = size / len(ids)
            per_dataset = DATASET / mean
            home = Path(tmp, f"home-{avg}")
            home.mkdir()
            idx_per_chunk = index_bytes(params, path, home) / len(ids)
            list_per_chunk = chunk_list_bytes(params, data) / len(ids)
            print(
                f"{avg // KIB:>5}Ki {avg // 4 // KIB:>4}Ki {avg * 4 // KIB:>5}Ki {mean / KIB:>5.1f}Ki {len(ids):>6} |"
                f" {ins[0]:>6} {ins[1] / KIB:>5.0f}Ki | {spread_n:>5.2f} {spread_b / KIB:>7.0f}Ki |"
                f" {ow[0]:>5} {ow[1] / KIB:>5.0f}Ki |"
                f" {per_dataset / 1e6:>10.2f} M {idx_per_chunk:>8.0f} {per_dataset * idx_per_chunk / 1e6:>8.0f} MB"
                f" {list_per_chunk:>9.1f} {per_dataset * list_per_chunk / 1e6:>8.1f} MB"
            )


if __name__ == "__main__":
    main()
