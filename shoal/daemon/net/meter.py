"""A peer session's current transfer rate, as `shoal peers` and the TUI show it.

Counted as bytes move, not sampled when asked: a rate worked out between two
calls would average over however long nobody asked, and still read megabytes
per second a minute after the last byte.
"""

from collections.abc import Callable

#: The span the rate is averaged over, in seconds; it reads 0 this long after the last byte.
WINDOW = 1.0


class RateMeter:
    """Bytes per second over the last WINDOW, from the counts of this window and the one before.

    The previous window's count is weighted by how much of it still lies within
    the last WINDOW seconds: a sliding average in constant memory.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        """`clock`: seconds, monotonic (time.monotonic; tests pass their own)."""
        self._clock = clock
        self._slot = int(clock() / WINDOW)
        self._current = 0
        self._previous = 0

    def add(self, n: int) -> None:
        """Count `n` bytes moved now."""
        self._roll(self._clock())
        self._current += n

    def rate(self) -> float:
        """Bytes per second moved over the last WINDOW seconds."""
        now = self._clock()
        self._roll(now)
        elapsed = now / WINDOW - self._slot
        return (self._previous * (1.0 - elapsed) + self._current) / WINDOW

    def _roll(self, now: float) -> None:
        slot = int(now / WINDOW)
        if slot != self._slot:
            self._previous = self._current if slot == self._slot + 1 else 0
            self._current = 0
            self._slot = slot
