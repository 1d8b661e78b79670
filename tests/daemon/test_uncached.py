"""Fetched and served bytes pass through the page cache without staying there
(RWF_DONTCACHE), where the kernel and file system offer it, and are plain writes
and reads where they do not."""

import errno
import os
import subprocess
from pathlib import Path

import pytest

from shoal.daemon.fetch.flusher import flush_and_drop
from shoal.daemon.store import writes
from shoal.daemon.store.filebatch import read_into, write_new
from shoal.daemon.store.writes import UNCACHED, write_at

DATA = os.urandom(3 * 1024 * 1024 + 123)


def cached_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache (util-linux fincore)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def _uncached_here(folder: Path) -> bool:
    """Whether the file system of `folder` takes uncached writes (what write_at tries first)."""
    if not UNCACHED:
        return False
    fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwritev(fd, [b"x"], 0, UNCACHED)
        return True
    except OSError as e:
        assert e.errno in (errno.EOPNOTSUPP, errno.EINVAL)
        return False
    finally:
        os.close(fd)


def _settle(path: Path) -> None:
    """Wait for the file's writeback: uncached pages leave the cache when it completes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_written_files_hold_their_bytes_and_leave_the_cache_where_it_can(tmp_path: Path) -> None:
    whole, at = tmp_path / "whole.bin", tmp_path / "at.bin"
    assert write_new([(str(whole), 0o600, DATA)]) == [0]
    fd = os.open(at, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_at(fd, DATA[:1000], 0)
        write_at(fd, memoryview(DATA)[1000:], 1000)
    finally:
        os.close(fd)
    for path in (whole, at):
        assert path.read_bytes() == DATA
    assert whole.stat().st_mode & 0o777 == 0o600
    if _uncached_here(tmp_path):
        # Reading it back above cached it: write it again to see the write's own effect.
        fd = os.open(at, os.O_WRONLY | os.O_TRUNC)
        try:
            write_at(fd, DATA, 0)
        finally:
            os.close(fd)
        _settle(at)
        assert cached_bytes(at) == 0
    else:
        assert cached_bytes(at) > 0  # a plain write, as it was


def test_small_files_written_whole_leave_the_cache_once_flushed_wherever_they_are_now(tmp_path: Path) -> None:
    """write_new's plain writes stay cached until the fetch's background flush (flusher.py),
    which finds each file where it was written or where it has been installed since."""
    small = DATA[:100_000]
    partials = [tmp_path / f"{i}.partial" for i in range(3)]
    assert write_new([(str(p), 0o644, small) for p in partials]) == [0, 0, 0]
    assert all(cached_bytes(p) >= len(small) for p in partials)
    installed = tmp_path / "installed"
    partials[1].rename(installed)
    places = [(str(p), str(tmp_path / f"{i}.final")) for i, p in enumerate(partials)]
    places[1] = (str(partials[1]), str(installed))
    flush_and_drop(tmp_path, places + [(str(tmp_path / "gone"), str(tmp_path / "gone too"))])
    for path in (partials[0], installed, partials[2]):
        assert cached_bytes(path) == 0
        assert path.read_bytes() == small


def test_reads_leave_only_what_was_cached_before(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    _settle(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        # The file's head is cached before the read (a user's own use of the file): it stays.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # that much and no read-ahead
        os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)
    before = cached_bytes(path)
    buf = bytearray(len(DATA))
    assert read_into([(str(path), 0, memoryview(buf))]) == [len(DATA)]
    assert bytes(buf) == DATA
    if _uncached_here(tmp_path):
        assert 1 << 20 <= before < len(DATA)
        assert cached_bytes(path) == before
    else:
        assert cached_bytes(path) >= len(DATA) - 4096  # a plain read, as it was


def test_a_file_system_that_refuses_the_flag_gets_plain_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refusing(fd: int, buffers: list, offset: int, flags: int = 0) -> int:
        calls.append(flags)
        raise OSError(errno.EOPNOTSUPP, "not here")

    monkeypatch.setattr(writes, "UNCACHED", 0x80)
    monkeypatch.setattr(writes.os, "pwritev", refusing)
    path = tmp_path / "plain.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_at(fd, DATA, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert calls == [0x80]  # tried once, then plain for the rest of the write
