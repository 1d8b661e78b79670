"""A session's bulk records off the event loop, in worker threads.

The event loop would otherwise read every 256 KiB and open every 64 KiB record of
every peer's data itself, and seal and send every record of every run it serves:
about 1 s of its CPU per GB either way, which bound a daemon to one core however
many peers it had. Here a session's worker thread reads and opens its large
frames' whole records, seals the runs it serves and sends them; the loop sees a
call per frame of runs (without a bandwidth cap; about 0.1 s of the cap with one).
The system calls and the AES-GCM calls (cryptography's) release the GIL, so N
peers' data moves on N cores; what holds the GIL is a few microseconds of Python
per 64 KiB record.

Why not C: a loop of our own would link the system's libcrypto, whose AES-GCM
sealed 4.53 GB/s where cryptography's bundled OpenSSL (with its VAES code path)
sealed 9.56 GB/s in one thread and 18.91 GB/s in two (`bench/aes_threads.py`,
AMD EPYC, 2 vCPUs): the slower AES costs more CPU than the Python around
cryptography's (README, "Cores").
"""

import errno
import os
import select
import time
from dataclasses import dataclass

import trio

from shoal.daemon.net.sending import IOV_BATCH, unsent
from shoal.protocol.wire.channel import LENGTH_SIZE, MAX_RECORD, RecordOpener, SealJob
from shoal.protocol.wire.connection import Connection

#: The work buffer a pump reads into: a record and the 256 KiB reads after it.
WIRE_SIZE = LENGTH_SIZE + MAX_RECORD + 256 * 1024
#: The most a call receives: more than a frame of runs (4 MiB and its records' framing),
#: so without a cap a frame comes in one call (a call a MiB cost each daemon about 0.5 s
#: of CPU in a 2 GB fetch: thread hand-offs). The session pays the caps after each call,
#: as for a read of its own, and under a cap asks for less (Throttle.slice).
CALL_BYTES = 8 * 1024 * 1024
#: The longest a call waits for bytes (or room to send): a peer that goes quiet is
#: then watched by the session's keepalive again, and closing a session waits at most this.
CALL_SECONDS = 0.2
#: Slices at least this large are sent from a worker thread; a smaller one (a request,
#: an END) costs less sent from the loop than a thread's hand-off.
SEND_MIN = 256 * 1024


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


@dataclass(slots=True)
class _Progress:
    """A pump call's socket side, filled in the worker thread."""

    #: Received bytes not opened, at the head of the work buffer.
    left: int
    received: int = 0
    closed: bool = False
    failed: str | None = None


class RecordPump:
    """One session's pump: its socket and its work buffer."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        #: The work buffer, made at the first large frame: a session that only asks and
        #: answers small messages (most of a daemon's peers) never needs one.
        self._wire = bytearray()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        #: A call may wait CALL_SECONDS for the peer: not with one of the threads trio's default
        #: limiter shares among the daemon's disk and index calls (40), which many peers would take.
        self._limiter = trio.CapacityLimiter(1)

    async def pump(self, conn: Connection, max_bytes: int = CALL_BYTES) -> Pumped | None:
        """Receive and open records into the large frame `conn` is receiving, in a worker
        thread; None when `conn` has no such frame now (read as usual)."""
        if not self._wire:
            self._wire = bytearray(WIRE_SIZE)
        lent = conn.hand_off_records(self._wire)
        if lent is None:
            return None
        room, handoff = lent
        opener = RecordOpener(handoff, room)
        progress = _Progress(handoff.have)
        # Shielded: a cancelled call would lose the records it opened; it returns within CALL_SECONDS.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._fill, opener, len(room), max_bytes, progress, limiter=self._limiter)
        # A record that failed to open (tampered, too short) is among those left: the
        # connection opens it again and fails on it as it does on any other.
        with memoryview(self._wire) as wire:
            conn.take_back_records(opener.records, opener.written, wire[: progress.left])
        if progress.closed:
            conn.receive_data(b"")
        return Pumped(progress.received, opener.records, progress.closed, progress.failed)

    def trim(self) -> None:
        """Give the work buffer back (a quiet session's); the next large frame makes another."""
        self._wire = bytearray()

    def _fill(self, opener: RecordOpener, room: int, max_bytes: int, progress: _Progress) -> None:
        """Open whole records into the room (`room` bytes), reading more whenever none is left,
        until the room is full or its next record cannot be opened here, `max_bytes` are
        received, or CALL_SECONDS have passed. In a worker thread."""
        deadline = time.monotonic() + CALL_SECONDS
        end, pos = progress.left, 0
        with memoryview(self._wire) as wire:
            while True:
                pos = opener.open(wire[:end], pos)
                if opener.blocked or opener.written == room or progress.received >= max_bytes:
                    break
                if pos:
                    wire[: end - pos] = wire[pos:end]
                    end, pos = end - pos, 0
                n = self._receive(wire[end : end + max_bytes - progress.received], deadline, progress)
                if not n:
                    break
                end += n
            if pos:
                wire[: end - pos] = wire[pos:end]
        progress.left = end - pos

    def _receive(self, into: memoryview, deadline: float, progress: _Progress) -> int:
        """Read into `into`, waiting until `deadline` at most; the bytes read (0: stop)."""
        while True:
            try:
                n = os.readv(self._fd, [into])
            except BlockingIOError:
                rest = deadline - time.monotonic()
                if rest <= 0 or not self._poll.poll(rest * 1000):
                    return 0
                continue
            except InterruptedError:
                continue
            except OSError as e:
                progress.failed = f"connection lost: {e}"
                return 0
            if n == 0:
                progress.closed = True
            progress.received += n
            return n


def seal(jobs: list[SealJob]) -> None:
    """Run deferred seals (call in a worker thread: the AES calls release the GIL); their
    plaintext views are released after, so the buffer they came from may be reused."""
    for job in jobs:
        job.run()
        job.plaintext.release()


async def send(fd: int, views: list[memoryview], limiter: trio.CapacityLimiter) -> None:
    """Send `views` in order from a worker thread of `limiter` (the session's own: a call may
    wait CALL_SECONDS for the peer), in calls of at most CALL_SECONDS; errors as trio's
    SocketStream raises them."""
    while views:
        sent = await trio.to_thread.run_sync(_send_some, fd, views, limiter=limiter)
        views = unsent(views, sent)


def _send_some(fd: int, views: list[memoryview]) -> int:
    """Send what the socket takes of `views` within CALL_SECONDS; the bytes sent."""
    deadline = time.monotonic() + CALL_SECONDS
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    sent = 0
    while views:
        try:
            n = os.writev(fd, views[:IOV_BATCH])
        except BlockingIOError:
            rest = deadline - time.monotonic()
            if rest <= 0 or not poller.poll(rest * 1000):
                break
            continue
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno == errno.EBADF:
                raise trio.ClosedResourceError("the connection was closed") from None
            raise trio.BrokenResourceError(f"the connection broke: {e}") from e
        sent += n
        views = unsent(views, n)
    return sent
