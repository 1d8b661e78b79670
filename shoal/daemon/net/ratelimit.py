"""Bandwidth caps: token buckets that peer sessions pay into for every byte they move.

A session pays for the bytes it has just received (so the next read waits and
TCP pushes back on the sender) and for the bytes it is about to send. The rate
is read on every payment, so `config set bandwidth.*` applies without a restart.
"""

from collections.abc import Callable

import trio

#: How much unused allowance a bucket saves up, in seconds of its rate: enough to
#: absorb one burst of reads without letting an idle minute turn into a flood.
BURST_SECONDS = 0.1


class TokenBucket:
    """A byte allowance refilled at `rate()` bytes per second; a rate of 0 means no cap."""

    def __init__(self, rate: Callable[[], int]) -> None:
        self._rate = rate
        self._balance = 0.0
        self._stamp: float | None = None

    def rate(self) -> int:
        """The cap now, in bytes/s; 0: none."""
        return self._rate()

    async def pay(self, n: int) -> None:
        """Take `n` bytes of allowance, sleeping off any debt.

        Concurrent payers each add to the debt and sleep their own share of it, so
        together they move at the rate without a queue.
        """
        rate = self._rate()
        now = trio.current_time()
        if rate <= 0:
            self._balance, self._stamp = 0.0, now
            return
        saved = self._balance + (now - self._stamp) * rate if self._stamp is not None else 0.0
        self._balance = min(saved, rate * BURST_SECONDS) - n
        self._stamp = now
        if self._balance < 0:
            await trio.sleep(-self._balance / rate)


#: Under a cap, a session moves about this many seconds of it between two payments, so
#: capped data flows steadily instead of a group of runs arriving in one burst after a long wait.
SLICE_SECONDS = 0.1
#: The least it moves between payments under a low cap: a thread call per record would cost more than the cap saves.
MIN_SLICE = 64 * 1024


class Throttle:
    """The buckets a session pays into (e.g. the daemon's and one peer's)."""

    def __init__(self, *buckets: TokenBucket) -> None:
        self._buckets = buckets

    async def pay(self, n: int) -> None:
        """Pay `n` bytes into every bucket."""
        for bucket in self._buckets:
            await bucket.pay(n)

    def slice(self, most: int) -> int:
        """How many bytes to move before the next payment, at most `most`: all of them
        without a cap (one worker-thread call), else about SLICE_SECONDS of the tightest."""
        caps = [rate for bucket in self._buckets if (rate := bucket.rate()) > 0]
        if not caps:
            return most
        return min(most, max(MIN_SLICE, int(min(caps) * SLICE_SECONDS)))
