"""The run data path without a network: how the copier cuts runs, and how the writer
verifies a received run chunk by chunk and writes it whole or not at all."""

import os
from pathlib import Path

from shoal.daemon.fetch.copier import RUN_BYTES, runs_of
from shoal.daemon.fetch.job import FileTask, open_partial
from shoal.daemon.fetch.puller import Arrival
from shoal.daemon.fetch.schedule import Batch
from shoal.daemon.fetch.state import Busy
from shoal.daemon.fetch.writer import verify_and_write
from shoal.daemon.store.fdlimit import FilePool
from shoal.protocol.format.hashing import chunk_id
from shoal.protocol.format.objects import FileEntry, Ref
from shoal.protocol.wire.messages import Run


def ref(data: bytes) -> Ref:
    return Ref(len(data), chunk_id(data))


def test_runs_split_at_holes_and_at_the_run_size() -> None:
    a, b, c, d = (ref(bytes([n]) * 1000) for n in range(4))
    big = Ref(RUN_BYTES - 500, chunk_id(b"x"))
    # c is already here (a hole at 2000..3000); neither d nor the a after it fits beside big.
    segment = [(0, a), (1000, b), (3000, d), (4000, big), (4000 + big.size, a)]
    assert list(runs_of(segment)) == [
        (0, Run((a.id, b.id), (1000, 1000))),
        (3000, Run((d.id,), (1000,))),
        (4000, Run((big.id,), (big.size,))),
        (4000 + big.size, Run((a.id,), (1000,))),
    ]


def test_a_single_chunk_larger_than_the_run_size_is_a_run_of_its_own() -> None:
    huge = Ref(RUN_BYTES + 1, b"\x01" * 32)
    assert list(runs_of([(0, huge)])) == [(0, Run((huge.id,), (huge.size,)))]


def arrival(task: FileTask, offset: int, chunks: list[bytes], sent: bytes) -> Arrival:
    run = Run(tuple(chunk_id(c) for c in chunks), tuple(len(c) for c in chunks))
    batch: Batch = Batch()
    batch.add_run(run, (task, offset))
    return Arrival(batch, "peer", run.ids[0], run, sent, [(task, offset)])


def test_a_run_is_written_whole_only_when_every_chunk_matches(tmp_path: Path) -> None:
    chunks = [os.urandom(5000), os.urandom(7000), os.urandom(3000)]
    task = FileTask(("f",), FileEntry("f", 40_000, b"\x02" * 32), tmp_path / "f.part", 40_000, True)
    files = FilePool(4, open_partial)
    good = arrival(task, 20_000, chunks, b"".join(chunks))
    # The last chunk's bytes are wrong: nothing of the run may be kept.
    bad = arrival(task, 0, chunks, b"".join(chunks[:2]) + bytes(3000))
    short = arrival(task, 5000, chunks, b"".join(chunks)[:-1])
    long = arrival(task, 10_000, chunks, b"".join(chunks) + b"x")
    try:
        assert verify_and_write([bad, good, short, long], Busy(), files) == ([False, True, False, False], [])
    finally:
        files.close_all()
    written = (tmp_path / "f.part").read_bytes()
    assert written[:20_000] == bytes(20_000)
    assert written[20_000:] == b"".join(chunks)
