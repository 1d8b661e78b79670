"""Writing bytes at an offset of a file: all of them, in pieces the page cache takes cheaply."""

import errno
import os
import sys

#: The most one pwrite takes. On Linux 6.18 (ext4, this project's 2-vCPU VM) a 4 MiB
#: write of a run cost 2-4x the system time of the same bytes written 1 MiB at a time
#: (1.4 GB: 0.55-1.37 s against 0.33-0.36 s over five interleaved runs; the time is
#: the kernel's copy into the new page-cache folios, which a larger write makes larger);
#: from 1 MiB down to 256 KiB it is the same, below that the calls start to count.
WRITE_PIECE = 1 << 20

#: Uncached buffered writes (pwritev2 RWF_DONTCACHE, Linux 6.14; not yet named by
#: Python's os): the bytes go through the page cache as usual, the kernel starts
#: their writeback, and the pages leave the cache once written. A fetch writes data
#: once and has verified it from its own buffer, so keeping it cached only pushes
#: other files out (a 147 GB fetch would evict everything else) and makes the
#: kernel take fresh pages for every write. On this project's VM, whose free memory
#: goes back to the host, fresh pages were most of a fetch's write cost: 2 GB written
#: 1 MiB at a time took 5.2 and 2.4 s of system time plain, 0.6 s uncached (/tmp
#: script, two alternating pairs; dropping written pages with fadvise did the same:
#: 0.6-0.8 s against 1.3-6.1 s over five pairs). Pages cached before stay; a file system without
#: it refuses the flag before writing, and the write is made plain (_filebatch.c does
#: the same for reads; small files are written plain and dropped after a background
#: flush of many, fetch/flusher.py).
UNCACHED = 0x80 if sys.platform == "linux" else 0


def write_at(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` of `fd`, uncached where the file system can; a short
    write goes on from where it stopped."""
    flags = UNCACHED
    with memoryview(data) as view:
        done, size = 0, len(view)
        while done < size:
            piece = view[done : done + WRITE_PIECE]
            if flags:
                try:
                    n = os.pwritev(fd, [piece], offset + done, flags)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    flags = 0
                    continue
            else:
                n = os.pwrite(fd, piece, offset + done)
            if n == 0:
                raise OSError(errno.EIO, "the file system took no bytes of a write")
            done += n
