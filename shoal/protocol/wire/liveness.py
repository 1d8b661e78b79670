"""The keepalive rule of SPEC "Keepalive": when to PING a quiet peer and when to give up.

Sans-I/O like the Connection, and clock-free: the caller says when bytes last
arrived (`heard`), asks when to wake up (`deadline`), and at that time asks
what to do (`expire`): send the PING it returns, or end the session on the
PeerTimedOut it raises. Whether a frame is half-received comes from the
Connection (`inside_frame`), since a peer in the middle of a frame cannot
answer a PING and must simply go on sending.

The rule, with I = KEEPALIVE_INTERVAL and N = MAX_UNANSWERED_PINGS:

* nothing received for I, 2I, ... NI: send a PING each time;
* nothing received for (N + 1)·I, i.e. N PINGs unanswered: close (`timeout`);
* inside a frame or record, nothing received for I: close (`timeout`).
"""

from __future__ import annotations

from shoal.protocol.errors import RemoteProtocolError
from shoal.protocol.wire.messages import Ping

#: Seconds without a byte from the peer before we PING it.
KEEPALIVE_INTERVAL = 30.0
#: PINGs in a row without a byte in reply before the session is given up.
MAX_UNANSWERED_PINGS = 3


class PeerTimedOut(RemoteProtocolError):
    """The peer sent nothing for too long, or stopped in the middle of a frame."""

    code = "timeout"


class Liveness:
    """One session's keepalive state (either side)."""

    def __init__(
        self, now: float, *, interval: float = KEEPALIVE_INTERVAL, max_unanswered: int = MAX_UNANSWERED_PINGS
    ) -> None:
        self.interval = interval
        self.max_unanswered = max_unanswered
        self._heard = now
        self._pings = 0
        self._nonce = 0

    @property
    def unanswered(self) -> int:
        """PINGs sent since the peer was last heard."""
        return self._pings

    def heard(self, now: float) -> None:
        """Bytes from the peer arrived at `now`: it is alive."""
        self._heard = now
        self._pings = 0

    def deadline(self, *, inside_frame: bool) -> float:
        """When `expire` has something to do, if nothing arrives before."""
        if inside_frame:
            return self._heard + self.interval
        return self._heard + self.interval * (self._pings + 1)

    def expire(self, now: float, *, inside_frame: bool) -> Ping | None:
        """The PING to send now, or None if the deadline has not come yet.

        Raises PeerTimedOut when the peer has stalled inside a frame for an
        interval, or stayed silent through MAX_UNANSWERED_PINGS PINGs.
        """
        if now < self.deadline(inside_frame=inside_frame):
            return None
        if inside_frame:
            raise PeerTimedOut(f"the peer stopped for {self.interval:g}s in the middle of a frame")
        if self._pings >= self.max_unanswered:
            silent = self.interval * (self._pings + 1)
            raise PeerTimedOut(f"the peer sent nothing for {silent:g}s and answered none of {self._pings} PINGs")
        self._pings += 1
        self._nonce += 1
        return Ping(self._nonce)
