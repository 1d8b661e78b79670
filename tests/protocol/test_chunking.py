"""Chunking: parameter checks, chunk bounds, stream = buffer, and the dedup bars."""

import math
from pathlib import Path

import blake3
import pytest

from shoal.protocol.errors import ObjectFormatError
from shoal.protocol.format.chunking import DEFAULT_PARAMS, ChunkingParams, make_chunker
from shoal.protocol.format.hashing import chunk_id

KIB = 1024
MIB = 1024 * KIB
BIG = 100 * 10**6


def pseudo_random(label: str, n: int) -> bytes:
    return blake3.blake3(label.encode()).digest(length=n)


@pytest.fixture(scope="module")
def big() -> bytes:
    return pseudo_random("test_chunking 100 MB", BIG)


@pytest.fixture(scope="module")
def big_ids(big: bytes) -> list[bytes]:
    return ids(big)


def ids(data: bytes, params: ChunkingParams = DEFAULT_PARAMS) -> list[bytes]:
    return [chunk_id(c.data) for c in make_chunker(params).cut_buf(data)]


def new_ids(old: list[bytes], new: list[bytes]) -> int:
    """Chunks of the new version a holder of the old one lacks."""
    known = set(old)
    return sum(1 for i in new if i not in known)


def test_defaults() -> None:
    assert DEFAULT_PARAMS.as_list() == [16 * KIB, 64 * KIB, 256 * KIB]


@pytest.mark.parametrize(
    "params",
    [
        (63, 256, 1024),
        (64, 255, 1024),
        (64, 256, 1023),
        (2 * MIB, 2 * MIB, 2 * MIB),  # min above 1 MiB
        (64, 8 * MIB, 16 * MIB),  # avg above 4 MiB
        (64, 256, 17 * MIB),  # max above 16 MiB
        (512, 256, 1024),  # min > avg
        (64, 2048, 1024),  # avg > max
        (64.0, 256, 1024),
        (True, 256, 1024),
        ("64", 256, 1024),
    ],
)
def test_invalid_params_rejected(params: tuple) -> None:
    with pytest.raises(ObjectFormatError):
        ChunkingParams(*params)


def test_extreme_valid_params() -> None:
    for params in ((64, 256, 1024), (MIB, 4 * MIB, 16 * MIB), (1024, 1024, 1024)):
        ChunkingParams(*params)


def test_chunks_cover_the_data_within_bounds() -> None:
    data = pseudo_random("bounds", 8 * MIB)
    chunks = list(make_chunker(DEFAULT_PARAMS).cut_buf(data))
    assert b"".join(bytes(c.data) for c in chunks) == data
    assert [c.offset for c in chunks] == [sum(c.length for c in chunks[:i]) for i in range(len(chunks))]
    assert all(16 * KIB <= c.length <= 256 * KIB for c in chunks[:-1])
    # The real mean is avg + min (cut-point skipping), not avg: 80 KiB for the defaults.
    mean = len(data) / len(chunks)
    assert 70 * KIB < mean < 90 * KIB


def test_short_and_empty_inputs() -> None:
    chunker = make_chunker(DEFAULT_PARAMS)
    assert list(chunker.cut_buf(b"")) == []
    one = list(chunker.cut_buf(b"x" * (16 * KIB)))
    assert [c.length for c in one] == [16 * KIB]


def test_constant_data_is_cut_at_max() -> None:
    # Zeros never match a mask, so a file of zeros is all maximum-size chunks.
    lengths = [c.length for c in make_chunker(DEFAULT_PARAMS).cut_buf(bytes(MIB + 5))]
    assert lengths == [256 * KIB] * 4 + [5]


def test_stream_and_buffer_cut_alike(tmp_path: Path) -> None:
    # The scanner cuts files as streams; the spec defines cuts over the whole content.
    data = pseudo_random("stream", 3 * MIB + 12345)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    for params in (DEFAULT_PARAMS, ChunkingParams(64, 256, 1024)):
        with open(path, "rb", buffering=0) as f:
            streamed = [(c.offset, c.length, chunk_id(c.data)) for c in make_chunker(params).cut_stream(f)]
        whole = [(c.offset, c.length, chunk_id(c.data)) for c in make_chunker(params).cut_buf(data)]
        assert streamed == whole


def test_chunks_depend_on_content_not_position() -> None:
    data = pseudo_random("shift", 4 * MIB)
    base = ids(data)
    shifted = ids(pseudo_random("prefix", 12345) + data)
    assert new_ids(shifted, base) <= 2  # only the chunks before resynchronisation differ


@pytest.mark.parametrize("at", [0, 1000, 20_000, 100_000])
def test_1k_insert_near_the_start_changes_at_most_3_chunks(big: bytes, big_ids: list[bytes], at: int) -> None:
    edited = big[:at] + pseudo_random("insert", KIB) + big[at:]
    after = ids(edited)
    assert new_ids(big_ids, after) <= 3
    assert new_ids(after, big_ids) <= 3  # and at most 3 old ones are gone


def test_1m_overwrite_in_the_middle_changes_a_bounded_number_of_chunks(big: bytes, big_ids: list[bytes]) -> None:
    mid = BIG // 2
    edited = big[:mid] + pseudo_random("overwrite", MIB) + big[mid + MIB :]
    after = ids(edited)
    bound = math.ceil(MIB / (64 * KIB)) + 2
    assert new_ids(big_ids, after) <= bound
    assert new_ids(after, big_ids) <= bound  # everything else is kept
