"""Large buffers kept for reuse once nothing refers to them any more.

A new 4 MiB bytearray is zeroed and its pages faulted in, on a VM that hands
free memory back to its host a fault there too: receiving or sealing a run into
a fresh buffer each time cost 13-17% of a daemon's event loop (py-spy, fetching
large files). Every view of a buffer, and every C call using one (a Py_buffer),
holds a reference to it, so its reference count tells whether anything still
reads it: a buffer is taken again only when the list of spares alone refers to it.
"""

import sys


class SpareBuffers:
    """At most `count` buffers of `size` bytes, each handed out again once free."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self._kept: list[bytearray] = []

    def take(self, n: int) -> bytearray:
        """A buffer of at least `n` bytes that nothing else refers to: a kept one if one is free,
        else a new one (kept while fewer than `count` are; one over `size` never is)."""
        if n > self.size:
            return bytearray(n)
        kept = self._kept
        for i in range(len(kept)):
            if _references(kept, i) <= _UNREFERENCED:
                return kept[i]
        buffer = bytearray(self.size)
        if len(kept) < self.count:
            kept.append(buffer)
        return buffer

    def clear(self) -> None:
        """Keep none (one still in use goes when its last reference does)."""
        self._kept = []

    def __len__(self) -> int:
        return len(self._kept)


def _references(buffers: list[bytearray], i: int) -> int:
    return sys.getrefcount(buffers[i])


#: What `_references` counts for a buffer only its list refers to, measured the same way
#: (what getrefcount counts of its own call differs between Python versions).
_UNREFERENCED = _references([bytearray()], 0)
