"""Reading ahead of the files a peer is served in order.

A sender opens a file for each group of runs it reads, so the kernel keeps no
read-ahead state between them, and asking for just the runs requested leaves the
disk idle between requests: a large file served from a cold cache took 3.6 s
against 3.0 s with the source already cached (bench/JOURNAL.md, the pass of
2026-12-06 from 21:41). Where a run continues what was served of its file, the
kernel is asked for AHEAD bytes past it, so that the next requests find their
bytes read.
"""

import threading
from collections import OrderedDict

#: How far past a run that continues its file's last ones the kernel is asked to read.
AHEAD = 32 * 1024 * 1024
#: Files remembered (per serving session): more than a peer reads from at once.
FILES = 64


class ReadAhead:
    """What was asked of the kernel for each file lately; used from several worker threads."""

    def __init__(self, ahead: int = AHEAD, files: int = FILES) -> None:
        self._ahead = ahead
        self._files = files
        self._lock = threading.Lock()
        #: path -> end of the range asked for so far.
        self._asked: OrderedDict[str, int] = OrderedDict()

    def extents(self, path: str, offset: int, length: int) -> list[tuple[str, int, int]]:
        """(path, offset, length) ranges to ask the kernel for before `length` bytes at `offset`
        are read: the run, and where it starts within or right after what was asked for
        its file, whatever is not asked for yet up to AHEAD past it."""
        end = offset + length
        with self._lock:
            asked = self._asked.pop(path, None)
            if asked is not None and asked - 2 * self._ahead <= offset <= asked:
                start, upto = asked, max(asked, end + self._ahead)
            else:
                start, upto = offset, end
            self._asked[path] = upto
            if len(self._asked) > self._files:
                self._asked.popitem(last=False)
        return [(path, start, upto - start)] if upto > start else []
