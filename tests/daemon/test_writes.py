"""write_at: every byte lands where it belongs, a piece at a time, short writes resumed,
whether the writes are uncached (pwritev with RWF_DONTCACHE) or plain (pwrite)."""

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.daemon.store import writes
from shoal.daemon.store.writes import WRITE_PIECE, write_at

#: A stand-in for the system call: (fd, piece, offset) -> bytes written.
Write = Callable[[int, memoryview, int], int]


def written(path: Path, data: bytes, offset: int) -> bytes:
    """What `path` holds after write_at put `data` at `offset` of it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        write_at(fd, data, offset)
    finally:
        os.close(fd)
    return path.read_bytes()


@pytest.fixture(params=["uncached", "plain"])
def patch_write(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[Write], None]:
    """Replaces the call write_at makes in each mode by `fake`."""

    def patch(fake: Write) -> None:
        if request.param == "uncached":
            monkeypatch.setattr(writes, "UNCACHED", 0x80)
            monkeypatch.setattr(writes.os, "pwritev", lambda fd, pieces, offset, flags: fake(fd, pieces[0], offset))
        else:
            monkeypatch.setattr(writes, "UNCACHED", 0)
            monkeypatch.setattr(writes.os, "pwrite", fake)

    return patch


def test_a_run_is_written_whole_in_pieces(tmp_path: Path, patch_write: Callable[[Write], None]) -> None:
    data = os.urandom(3 * WRITE_PIECE + 12345)
    sizes: list[int] = []
    real = os.pwrite

    def recording(fd: int, piece: memoryview, offset: int) -> int:
        sizes.append(len(piece))
        return real(fd, piece, offset)

    patch_write(recording)
    assert written(tmp_path / "f", data, 100) == bytes(100) + data
    assert sizes == [WRITE_PIECE] * 3 + [12345]


def test_short_writes_go_on_from_where_they_stopped(tmp_path: Path, patch_write: Callable[[Write], None]) -> None:
    data = os.urandom(50_000)
    real = os.pwrite
    patch_write(lambda fd, piece, offset: real(fd, piece[:777], offset))
    assert written(tmp_path / "f", data, 0) == data


def test_a_write_that_takes_nothing_is_an_error(tmp_path: Path, patch_write: Callable[[Write], None]) -> None:
    patch_write(lambda fd, piece, offset: 0)
    with pytest.raises(OSError) as raised:
        written(tmp_path / "f", b"abc", 0)
    assert raised.value.errno == errno.EIO
