"""Chunk ids of many buffers in one call (_chunkhash, over the `blake3` crate) are the
ids `chunk_id` gives, whatever the buffers' kinds and sizes."""

import os

import pytest

from shoal.daemon.store import chunkhash
from shoal.daemon.store.chunkhash import chunk_ids
from shoal.protocol.format.hashing import chunk_id

# Around BLAKE3's 1 KiB chunk and the sizes where its SIMD paths and the `blake3`
# module's GIL release change, and up to a large chunk.
SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 4096, 16_385, 65_536, 100_003, 1 << 20, (4 << 20) + 7]


def samples() -> list[bytes | bytearray | memoryview]:
    data = [os.urandom(n) for n in SIZES]
    backing = bytearray(os.urandom(300_000))
    return [
        *data,
        bytearray(data[8]),
        memoryview(data[9]),
        memoryview(backing)[1:70_001],
        memoryview(backing)[70_001:70_001],
        memoryview(bytes(backing))[5:299_999],
    ]


def test_the_batch_call_is_built() -> None:
    assert chunkhash.BATCHED, (
        "shoal.daemon.store._chunkhash is not built: install cargo (apt install cargo librust-blake3-dev) "
        "and reinstall shoal (`pip install -e .`)"
    )


def test_batched_ids_are_chunk_ids() -> None:
    buffers = samples()
    assert chunk_ids(buffers) == [chunk_id(data) for data in buffers]
    assert chunk_ids([]) == []


def test_without_the_compiled_module_ids_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    buffers = samples()
    batched = chunk_ids(buffers)
    monkeypatch.setattr(chunkhash, "derive_many", None)
    assert chunk_ids(buffers) == batched


def test_a_buffer_that_is_not_contiguous_is_refused_and_nothing_is_held() -> None:
    backing = bytearray(os.urandom(10_000))
    with pytest.raises(BufferError):
        chunk_ids([memoryview(backing)[:100], memoryview(backing)[::2]])
    # Every buffer taken before the refusal was given back: the bytearray can be resized.
    backing.extend(b"more")
    with pytest.raises(TypeError):
        chunk_ids([b"ok", "text"])  # type: ignore[list-item]
