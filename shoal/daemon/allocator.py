"""The C allocator's settings for a daemon: few heap arenas, and freed run buffers reused.

Chunks are read and hashed in worker threads; with a glibc arena per thread the
freed buffers stay scattered and the daemon's memory grows with the number of
peers it serves: two arenas keep it flat.

Each run a daemon sends or receives passes through a buffer of up to 4 MiB of its
own (the sender's sealed records, the receiver's decrypted run). glibc gives such
blocks back to the kernel when they are freed (the top of its heap is trimmed
beyond 128 KiB, or the block was an `mmap` of its own), so the next run's buffer is
mapped and zero-filled page by page again: 100,000+ page faults a daemon for 1.4 GB.
Keeping up to 32 MiB of freed memory at the heap's top, and serving blocks up to
32 MiB from the heap, lets the next buffer take the pages the last one left.
"""

import ctypes

#: mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
#: Freed memory kept, and the largest block served from the heap: a few run buffers.
KEEP_BYTES = 32 * 1024 * 1024


def tune_allocator() -> bool:
    """Set glibc's malloc for the daemon; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = [mallopt(M_ARENA_MAX, ARENAS), mallopt(M_TRIM_THRESHOLD, KEEP_BYTES), mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)]
    return all(applied)
