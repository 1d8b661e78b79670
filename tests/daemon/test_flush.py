"""Flushing fetched data: syncfs and early writeback reach the block device (shoal.daemon.store.flush)."""

import errno
import os
import time
from pathlib import Path

import pytest

from shoal.daemon.store.flush import start_writeback, sync_filesystem

SIZE = 32 * 1024 * 1024
SECTOR = 512


def sectors_written(path: Path) -> int:
    """The count of sectors written to the block device holding `path` (from /sys)."""
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    if not stat.exists():
        pytest.skip(f"{path} is not on a block device (device {os.major(dev)}:{os.minor(dev)}), so writes cannot be counted")
    return int(stat.read_text().split()[6])


def dirty_file(tmp_path: Path) -> int:
    """A file of SIZE fresh bytes in the page cache, not yet written back; its open fd."""
    fd = os.open(tmp_path / "data.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.pwrite(fd, os.urandom(SIZE), 0)
    return fd


def test_syncing_through_a_folder_puts_its_files_dirty_pages_on_the_device(tmp_path: Path) -> None:
    before = sectors_written(tmp_path)
    os.close(dirty_file(tmp_path))
    # As a fetch does: through DEST, not through each file. An fsync of the folder
    # (what the fetch did before) leaves the files' data in memory.
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_filesystem(fd)
    finally:
        os.close(fd)
    assert (sectors_written(tmp_path) - before) * SECTOR >= SIZE


def test_start_writeback_writes_without_being_asked_to_wait(tmp_path: Path) -> None:
    before = sectors_written(tmp_path)
    fd = dirty_file(tmp_path)
    try:
        start_writeback(fd)
        deadline = time.monotonic() + 10
        while (sectors_written(tmp_path) - before) * SECTOR < SIZE and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.close(fd)
    assert (sectors_written(tmp_path) - before) * SECTOR >= SIZE


def test_a_failed_flush_is_an_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)
    with pytest.raises(OSError) as caught:
        sync_filesystem(fd)
    assert caught.value.errno == errno.EBADF
