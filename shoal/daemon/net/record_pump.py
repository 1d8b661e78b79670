"""A large frame's records read from the socket and opened in a worker thread (_recordpump.c).

The event loop would otherwise read every 256 KiB and open every 64 KiB record of
every peer's data itself, about 1 s of its CPU per GB, which binds a receiving
daemon to one core however many peers send. Here each session's worker thread
reads and opens its large frames' whole records with the GIL released, so N
peers' data is opened on N cores; the loop sees one call per MiB. Where the
module is not built (no libcrypto headers) sessions read as before.
"""

import os
from dataclasses import dataclass

import trio

from shoal.protocol.wire.channel import LENGTH_SIZE, MAX_RECORD
from shoal.protocol.wire.connection import Connection

try:
    from shoal.daemon.net import _recordpump
except ImportError:
    AVAILABLE = False
else:
    #: Whether sessions over TCP open large frames' records off the event loop.
    AVAILABLE = True
#: The work buffer a pump reads into: a record and the 256 KiB reads after it.
WIRE_SIZE = LENGTH_SIZE + MAX_RECORD + 256 * 1024
#: The most a call receives: the session pays the bandwidth caps for it afterwards,
#: as for a read of its own, and one call a MiB costs the event loop next to nothing.
CALL_BYTES = 1024 * 1024
#: The longest a call waits for bytes: a peer that goes quiet is then watched by the
#: session's keepalive again, and closing a session waits for at most this long.
CALL_MS = 200
#: A call opens far fewer records than this; the cap keeps the count a C ssize_t.
_MAX_CALL_RECORDS = 2**62


@dataclass(frozen=True, slots=True)
class Pumped:
    """What one call did."""

    #: Bytes read from the socket.
    received: int
    #: Records opened into the frame.
    records: int
    #: The peer closed its side (the connection knows: its next event says how it ended).
    closed: bool = False
    #: Why the session must end at once (the socket failed), or None.
    failed: str | None = None


class RecordPump:
    """One session's pump: its socket and its work buffer."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wire = bytearray(WIRE_SIZE)

    async def pump(self, conn: Connection, max_bytes: int = CALL_BYTES) -> Pumped | None:
        """Receive and open records into the large frame `conn` is receiving, in a worker
        thread; None when `conn` has no such frame now (read as usual)."""
        lent = conn.hand_off_records(self._wire)
        if lent is None:
            return None
        room, handoff = lent
        # Shielded: a cancelled call would lose the records it opened; it returns within CALL_MS.
        with trio.CancelScope(shield=True):
            status, error, written, records, left, received = await trio.to_thread.run_sync(
                _recordpump.pump, self._fd, handoff.key, handoff.nonce, min(handoff.max_records, _MAX_CALL_RECORDS),
                max_bytes, room, self._wire, handoff.have, CALL_MS,
            )
        # A record that failed to open (BAD_TAG, SHORT) is among those left: the
        # connection opens it again and fails on it as it does for any other.
        with memoryview(self._wire) as wire:
            conn.take_back_records(records, written, wire[:left])
        closed = status == _recordpump.CLOSED
        if closed:
            conn.receive_data(b"")
        failed = f"connection lost: [Errno {error}] {os.strerror(error)}" if status == _recordpump.FAILED else None
        return Pumped(received, records, closed, failed)
