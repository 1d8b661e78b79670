"""Read buffers for serving runs, shared by every session of a daemon.

A run is read into a buffer, verified, and sealed into the session's outgoing
records (a copy) before the buffer goes back: the pool bounds the daemon's read
memory by its size, not by the number of peers it serves at once.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

#: A run up to this size is read into a pooled buffer; a larger one gets its own.
RUN_BUFFER = 4 * 1024 * 1024
#: Reads in flight at once across all peers: two read while another is verified and sealed.
POOL_BUFFERS = 3


class RunBuffers:
    """At most `count` buffers of `size` bytes, each reused run after run (a fresh
    4 MiB bytearray per run would cost its page faults every time)."""

    def __init__(self, count: int = POOL_BUFFERS, size: int = RUN_BUFFER) -> None:
        self.size = size
        self._slots = trio.Semaphore(count)
        self._free: list[bytearray] = []

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[bytearray]:
        """A buffer of `size` bytes, waiting for one to come back when all are out."""
        async with self._slots:
            buf = self._free.pop() if self._free else bytearray(self.size)
            try:
                yield buf
            finally:
                self._free.append(buf)
