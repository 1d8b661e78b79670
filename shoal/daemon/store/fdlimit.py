"""Open file descriptors: the daemon's share of RLIMIT_NOFILE, and bounded pools of open files.

A desktop's soft limit is 1,024 (macOS: 256). The daemon raises its soft limit to
the hard one at start, but no part of it relies on that: every part that keeps
files open (a fetch's partial files, a serving call's source files) keeps at most
a fixed number, whatever the number of files in the dataset.
"""

import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

#: Descriptors a pool takes at the most, however high the limit.
POOL_CEILING = 256
#: And at the least, however low: a fetch cannot work with fewer.
POOL_FLOOR = 8


def raise_soft_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def pool_size(share: int = 4) -> int:
    """Descriptors one pool may keep open: 1/`share` of the soft limit, within the floor and ceiling.

    The rest stays for the index, sockets, serving calls and the other pools."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return POOL_CEILING
    return max(POOL_FLOOR, min(POOL_CEILING, soft // share))


class FilePool:
    """Files opened on demand, at most `size` kept open, least recently used closed first.

    Thread-safe. A file is in use between `use()`'s enter and exit and is never
    closed under its user; while every open file is in use, one more may be opened
    above `size` (a pool's users are a handful of threads, so this stays bounded).
    """

    def __init__(self, size: int, opener: Callable[[Hashable], int]) -> None:
        self._size = size
        self._opener = opener
        self._open: OrderedDict[Hashable, int] = OrderedDict()
        self._in_use: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    @contextmanager
    def use(self, key: Hashable) -> Iterator[int]:
        """The descriptor of `key`, opened if it is not open."""
        fd = self._acquire(key)
        try:
            yield fd
        finally:
            self._release(key)

    def close(self, key: Hashable) -> None:
        """Close `key`'s descriptor if it is open; it must not be in use."""
        with self._lock:
            fd = self._open.pop(key, None)
        if fd is not None:
            os.close(fd)

    def close_all(self) -> None:
        with self._lock:
            fds, self._open = list(self._open.values()), OrderedDict()
        for fd in fds:
            os.close(fd)

    def _acquire(self, key: Hashable) -> int:
        with self._lock:
            fd = self._open.get(key)
            if fd is not None:
                self._open.move_to_end(key)
                self._in_use[key] = self._in_use.get(key, 0) + 1
                return fd
        opened = self._opener(key)
        with self._lock:
            fd = self._open.get(key)
            if fd is None:
                fd = self._open[key] = opened
            self._in_use[key] = self._in_use.get(key, 0) + 1
            surplus = self._evict()
        if fd != opened:
            surplus.append(opened)  # another thread opened it meanwhile
        for extra in surplus:
            os.close(extra)
        return fd

    def _release(self, key: Hashable) -> None:
        with self._lock:
            left = self._in_use[key] - 1
            if left:
                self._in_use[key] = left
            else:
                del self._in_use[key]
            surplus = self._evict()
        for fd in surplus:
            os.close(fd)

    def _evict(self) -> list[int]:
        """Take the least recently used files not in use off the pool until it fits; the caller closes them."""
        surplus = []
        if len(self._open) > self._size:
            for key in list(self._open):
                if len(self._open) <= self._size:
                    break
                if key not in self._in_use:
                    surplus.append(self._open.pop(key))
        return surplus
