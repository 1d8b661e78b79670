"""The C batches of small-file system calls (store/_filebatch.c) do what the same calls made
one by one from Python do, report each item's errno, and keep going after a failed item."""

import errno
import os
import stat
from pathlib import Path

import pytest

from shoal.daemon.store._filebatch import read_into, replace, will_need, write_new

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def write_new_in_python(files: list[tuple[str, int, bytes | bytearray | memoryview]]) -> list[int]:
    """write_new made of os calls (which tests can make fail): each item's errno, 0 if written."""
    errors = []
    for path, mode, data in files:
        try:
            fd = os.open(path, NEW_FILE, mode)
            try:
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)
            errors.append(0)
        except OSError as e:
            errors.append(e.errno)
    return errors


def replace_in_python(moves: list[tuple[str, str]]) -> list[tuple[int, int, int, int, int]]:
    """replace made of os calls: (errno, size, mtime_ns, ctime_ns, inode) for each move."""
    rows = []
    for source, target in moves:
        try:
            os.replace(source, target)
            st = os.lstat(target)
            rows.append((0, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        except OSError as e:
            rows.append((e.errno, 0, 0, 0, 0))
    return rows


def test_write_new_creates_each_file_whole_with_its_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        files = [
            (str(tmp_path / "a"), 0o644, b"abc"),
            (str(tmp_path / "b"), 0o600, bytearray(os.urandom(300_000))),
            (str(tmp_path / "c"), 0o777, memoryview(b"xyz" * 1000)[5:]),
            (str(tmp_path / "empty"), 0o644, b""),
        ]
        assert write_new(files) == [0, 0, 0, 0]
    finally:
        os.umask(umask)
    for path, mode, data in files:
        assert Path(path).read_bytes() == bytes(data)
        assert stat.S_IMODE(os.lstat(path).st_mode) == mode & ~0o022


def test_write_new_truncates_an_old_partial_file_and_never_follows_a_symlink(tmp_path: Path) -> None:
    old = tmp_path / "old.part"
    old.write_bytes(b"x" * 10_000)
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    link = tmp_path / "link.part"
    link.symlink_to(outside)
    assert write_new([(str(old), 0o644, b"new"), (str(link), 0o644, b"evil")]) == [0, errno.ELOOP]
    assert old.read_bytes() == b"new"
    assert outside.read_bytes() == b"keep"


def test_a_failed_item_is_reported_and_the_rest_still_written(tmp_path: Path) -> None:
    files = [
        (str(tmp_path / "one"), 0o644, b"1"),
        (str(tmp_path / "missing" / "two"), 0o644, b"2"),
        (str(tmp_path / "three"), 0o644, b"3"),
    ]
    assert write_new(files) == [0, errno.ENOENT, 0]
    assert (tmp_path / "three").read_bytes() == b"3"
    assert write_new(files) == write_new_in_python(files)


def test_replace_moves_each_file_and_returns_its_lstat(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old").write_bytes(b"replaced")
    (tmp_path / "dest" / "dir").mkdir()
    moves = []
    for name in ("new", "old", "dir", "gone"):
        if name != "gone":
            (tmp_path / f"{name}.part").write_bytes(name.encode() * 3)
        moves.append((str(tmp_path / f"{name}.part"), str(tmp_path / "dest" / name)))
    rows = replace(moves)
    assert [row[0] for row in rows] == [0, 0, errno.EISDIR, errno.ENOENT]
    for (_, target), row in zip(moves[:2], rows[:2]):
        st = os.lstat(target)
        assert row == (0, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        assert Path(target).read_bytes() == Path(target).name.encode() * 3
    assert rows[2:] == [(errno.EISDIR, 0, 0, 0, 0), (errno.ENOENT, 0, 0, 0, 0)]
    assert (tmp_path / "dir.part").exists()
    assert replace(moves[2:]) == replace_in_python(moves[2:])


def test_read_into_fills_each_buffer_from_its_file_and_offset(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(b"short")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    buf = bytearray(80_000)
    view = memoryview(buf)
    reads = [
        (str(tmp_path / "a"), 0, view[:1000]),
        (str(tmp_path / "a"), 99_000, view[1000:3000]),  # the same file again, past its end
        (str(tmp_path / "missing"), 0, view[3000:4000]),
        (str(tmp_path / "link"), 0, view[4000:5000]),
        (str(tmp_path / "b"), 1, view[5000:5010]),
        (str(tmp_path / "a"), 50_000, view[10_000:80_000]),
    ]
    assert read_into(reads) == [1000, 1000, -errno.ENOENT, -errno.ELOOP, 4, 50_000]
    assert buf[:1000] == data[:1000]
    assert buf[1000:2000] == data[99_000:]
    assert buf[5000:5004] == b"hort"
    assert buf[10_000:60_000] == data[50_000:]


def test_will_need_skips_what_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10_000)
    assert will_need([(str(tmp_path / "a"), 0, 10_000), (str(tmp_path / "missing"), 0, 1), (str(tmp_path / "a"), 5, 5)]) is None


@pytest.mark.parametrize(
    "call, items",
    [
        (write_new, [("path", 0o644)]),
        (write_new, [("path", "mode", b"")]),
        (write_new, [("path", 0o644, "text is not bytes")]),
        (write_new, [(b"nul\0in path", 0o644, b"")]),
        (write_new, None),
        (replace, [("only one path",)]),
        (replace, [("a", 5)]),
        (replace, 7),
        (read_into, [("path", 0, b"bytes are read-only")]),
        (read_into, [("path", 0)]),
        (will_need, [("path", "offset", 1)]),
    ],
)
def test_items_of_the_wrong_shape_are_refused_before_any_call(tmp_path: Path, call, items) -> None:
    before = sorted(os.listdir(tmp_path))
    with pytest.raises((TypeError, ValueError)):
        call(items)
    assert sorted(os.listdir(tmp_path)) == before
