"""Getting written data to the disk: syncfs(2) and early writeback, which Python's os lacks."""

import ctypes
import ctypes.util
import os

_SYNC_FILE_RANGE_WRITE = 2


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None
    if libc is not None and hasattr(libc, "sync_file_range"):
        libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return libc


_LIBC = _load_libc()


def sync_filesystem(fd: int) -> None:
    """Flush every dirty page of the filesystem holding `fd` to the disk.

    One syncfs costs less than an fsync per file of a fetch. Where there is no
    syncfs (not Linux), every filesystem is synced.
    """
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting for them.

    Best effort: where sync_file_range is missing, the final flush does it all.
    """
    sync_file_range = getattr(_LIBC, "sync_file_range", None)
    if sync_file_range is not None:
        sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def free_memory() -> int:
    """Bytes of memory nothing uses, not even the page cache (Linux's MemFree); 0 where unknown."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemFree:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
