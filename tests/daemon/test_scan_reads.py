"""How the scanner reads files: large files in blocks, with the kernel reading ahead.

A large file is read a block at a time into one buffer and chunked block by
block; its chunks must be exactly those of the protocol's reference cut of the
whole content, however the blocks fall. Blocks are made small here so that
files of a few MiB span many of them.
"""

import os
from pathlib import Path

import pytest

from shoal.daemon.library import scanner
from shoal.daemon.library.datasets import Library
from shoal.protocol.format.chunking import DEFAULT_PARAMS, make_chunker
from shoal.protocol.format.hashing import chunk_id
from tests.daemon.test_library import KEY, MIB, expected_root, expected_root_without, noise

pytestmark = pytest.mark.trio

MAX = DEFAULT_PARAMS.max_size
BLOCK = 64 * 1024


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 64 KiB, read-ahead of 256 KiB, and every file over 1 MiB read in blocks."""
    monkeypatch.setattr(scanner, "READ_BLOCK", BLOCK)
    monkeypatch.setattr(scanner, "READ_AHEAD", 4 * BLOCK)
    monkeypatch.setattr(scanner, "SMALL_FILE", MIB)


@pytest.fixture
def lib(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    library = Library.open(home, KEY)
    yield library
    library.close()


def reference(data: bytes) -> list[tuple[int, int, bytes]]:
    return [(c.offset, c.length, chunk_id(c.data)) for c in make_chunker(DEFAULT_PARAMS).cut_buf(data)]


def block_cuts(path: Path) -> list[tuple[int, int, bytes]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(offset, len(chunk), chunk_id(chunk)) for offset, chunk in scanner.read_in_blocks(fd, DEFAULT_PARAMS)]
    finally:
        os.close(fd)


CONTENTS = {
    "1 byte": b"x",
    "one block": noise("one", BLOCK),
    "exactly block + max": noise("edge", BLOCK + MAX),
    "one byte past block + max": noise("edge+1", BLOCK + MAX + 1),
    "random, many blocks": noise("random", 3 * MIB + 12345),
    # Runs of zeros have no content-defined cut: every chunk there is cut at max_size,
    # so the cuts land at every offset relative to the blocks.
    "zeros and noise": noise("a", 700_000) + bytes(2 * MIB + 77) + noise("b", 900_001),
}


@pytest.mark.parametrize("name", list(CONTENTS))
async def test_block_reads_cut_as_the_whole_content(small_blocks: None, tmp_path: Path, name: str) -> None:
    data = CONTENTS[name]
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    chunks = block_cuts(path)
    assert chunks == reference(data)
    assert sum(length for _, length, _ in chunks) == len(data)


async def test_default_blocks_cut_as_the_whole_content(tmp_path: Path) -> None:
    """At the shipped block size, a file spanning several blocks."""
    data = noise("default", 2 * scanner.READ_BLOCK + 3 * MAX + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert block_cuts(path) == reference(data)


async def test_share_of_large_files_read_in_blocks(small_blocks: None, tmp_path: Path, lib: Library) -> None:
    """Files read in blocks, beside a 1-byte and an empty file: the version is the reference's, and verifies."""
    ds = tmp_path / "ds"
    ds.mkdir()
    for name, data in CONTENTS.items():
        (ds / name).write_bytes(data)
    (ds / "empty").write_bytes(b"")
    result = await lib.share(ds)
    assert result.warnings == () and result.version.files == len(CONTENTS) + 1
    assert result.version.root == expected_root(ds)[0]
    assert (await lib.verify(ds.name)).problems == ()
    again = await lib.share(ds)
    assert not again.created and again.files_rehashed == 0


async def test_file_rewritten_while_read_in_blocks_is_not_published(
    small_blocks: None, tmp_path: Path, lib: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer rewrites the end of a large file while its first blocks are hashed: the
    share never records a mix of old and new bytes; it leaves the file out and says so."""
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "other.bin").write_bytes(noise("other", 2 * MIB))
    target = ds / "target.bin"
    target.write_bytes(noise("target", 3 * MIB))
    real = scanner.make_chunker
    writes = 0

    class RewritingChunker:
        """The real chunker; the first block of target.bin's every read attempt triggers a rewrite of its tail."""

        def __init__(self, params) -> None:  # noqa: ANN001
            self._inner = real(params)
            self._blocks = 0

        def cut_buf(self, data):  # noqa: ANN001, ANN202
            self._blocks += 1
            if self._blocks == 1 and len(data) > BLOCK:
                rewrite()
            return self._inner.cut_buf(data)

    def rewrite() -> None:
        nonlocal writes
        writes += 1
        with open(target, "r+b") as f:
            f.seek(2 * MIB)
            f.write(noise(f"rewrite {writes}", MIB))

    monkeypatch.setattr(scanner, "make_chunker", RewritingChunker)
    result = await lib.share(ds)
    monkeypatch.setattr(scanner, "make_chunker", real)
    assert writes >= 2  # every attempt saw a rewrite; read_in_blocks makes a chunker per file
    assert len(result.warnings) == 1 and "target.bin" in result.warnings[0] and "changing" in result.warnings[0]
    assert result.version.root == expected_root_without(ds, "target.bin")

    after = await lib.share(ds)
    assert after.warnings == () and after.files_rehashed == 1
    assert after.version.root == expected_root(ds)[0]
    assert (await lib.verify(ds.name)).problems == ()


async def test_file_gone_before_its_turn(tmp_path: Path, lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file deleted after the listing, before it is read ahead, is left out with a warning."""
    monkeypatch.setattr(scanner, "AHEAD_FILES", 4)
    ds = tmp_path / "ds"
    ds.mkdir()
    for i in range(20):
        (ds / f"{i:02d}.bin").write_bytes(noise(f"f{i}", 20_000))
    real = scanner.hash_file

    def deleting_hash_file(index, root, rel, name, params, dir_fd):  # noqa: ANN001, ANN202
        if name == "00.bin":
            (ds / "15.bin").unlink()
        return real(index, root, rel, name, params, dir_fd)

    monkeypatch.setattr(scanner, "hash_file", deleting_hash_file)
    result = await lib.share(ds)
    assert result.version.files == 19
    assert len(result.warnings) == 1 and "15.bin" in result.warnings[0] and "disappeared" in result.warnings[0]
    assert result.version.root == expected_root(ds)[0]
