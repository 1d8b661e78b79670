"""write_at: every byte lands where it belongs, a piece at a time, short writes resumed."""

import errno
import os
from pathlib import Path

import pytest

from shoal.daemon.store import writes
from shoal.daemon.store.writes import WRITE_PIECE, write_at


def written(path: Path, data: bytes, offset: int) -> bytes:
    """What `path` holds after write_at put `data` at `offset` of it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        write_at(fd, data, offset)
    finally:
        os.close(fd)
    return path.read_bytes()


def test_a_run_is_written_whole_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * WRITE_PIECE + 12345)
    sizes: list[int] = []
    real = os.pwrite

    def recording(fd: int, piece: memoryview, offset: int) -> int:
        sizes.append(len(piece))
        return real(fd, piece, offset)

    monkeypatch.setattr(writes.os, "pwrite", recording)
    assert written(tmp_path / "f", data, 100) == bytes(100) + data
    assert sizes == [WRITE_PIECE] * 3 + [12345]


def test_short_writes_go_on_from_where_they_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(50_000)
    real = os.pwrite
    monkeypatch.setattr(writes.os, "pwrite", lambda fd, piece, offset: real(fd, piece[:777], offset))
    assert written(tmp_path / "f", data, 0) == data


def test_a_write_that_takes_nothing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes.os, "pwrite", lambda fd, piece, offset: 0)
    with pytest.raises(OSError) as raised:
        written(tmp_path / "f", b"abc", 0)
    assert raised.value.errno == errno.EIO
