"""Length-prefixed frames: a 4-byte big-endian length, then that many payload bytes.

The same framing carries the peer wire protocol (inside the encrypted channel) and
the control socket. A declared length is checked against the limit before a single
payload byte is buffered, so a hostile length cannot make us allocate.
"""

from shoal.protocol.errors import FrameTooLarge, LocalProtocolError
from shoal.protocol.wire.spares import SpareBuffers

HEADER_SIZE = 4
#: Largest frame payload: one chunk of the largest allowed size plus its header.
MAX_FRAME_SIZE = 16 * 1024 * 1024 + 4096
#: Frames of at least this size are received into a buffer of their own, which
#: `next_view` hands out: a run's bytes then reach the writer without a copy.
OWN_BUFFER_SIZE = 1024 * 1024
#: Own buffers kept to receive later large frames into (spares.py): at most five were
#: in use at once in a fetch (its open requests' frames and the writer's batch).
SPARE_BUFFERS = 6
#: A kept buffer's size: a frame of a 4 MiB run (the most the reference daemon asks
#: for in one) and its message header. A larger frame gets a buffer of its own size.
SPARE_SIZE = 4 * 1024 * 1024 + 64 * 1024


def encode_frame(payload: bytes | bytearray | memoryview, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """Return `payload` with its length prefix."""
    n = len(payload)
    if n > max_size:
        raise LocalProtocolError(f"frame of {n} bytes exceeds the {max_size}-byte limit")
    return n.to_bytes(HEADER_SIZE, "big") + bytes(payload)


class FrameDecoder:
    """Buffers bytes and yields complete frame payloads, one at a time.

    The buffer keeps its spare room between calls, so that bytes can be written
    straight into it (`reserve` and `commit`, as the channel decrypts) without
    growing and shrinking it for every record. A frame of OWN_BUFFER_SIZE or
    more, once its header is in, gets a buffer of its own that the rest of its
    bytes go straight into, and that the caller keeps (`owns` tells which).
    """

    def __init__(self, *, max_size: int = MAX_FRAME_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0
        self._end = 0
        #: The large frame being received into its own buffer: the buffer, the frame's size, how much of it is in.
        self._own: bytearray | None = None
        self._own_size = 0
        self._own_filled = 0
        self._reserved_own = False
        self.spares = SpareBuffers(SPARE_BUFFERS, SPARE_SIZE)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        n = len(data)
        with self.reserve(n) as space:
            space[:] = data
        self.commit(n)

    def reserve(self, n: int) -> memoryview:
        """A writable view of the next `n` bytes of the buffer; release it, then `commit` what was written."""
        own = self._own
        self._reserved_own = own is not None and self._own_size - self._own_filled >= n
        if own is not None and self._reserved_own:
            return memoryview(own)[self._own_filled : self._own_filled + n]
        if len(self._buf) - self._end < n:
            self._compact()
            if len(self._buf) - self._end < n:
                size = max(self._end + max(n, len(self._buf)), _MIN_BUFFER)
                self._buf.extend(bytes(size - len(self._buf)))
        return memoryview(self._buf)[self._end : self._end + n]

    def commit(self, n: int) -> None:
        """Count `n` bytes written into the last reserved view as received."""
        if self._reserved_own:
            self._own_filled += n
            return
        self._end += n
        own = self._own
        if own is not None:
            # The bytes straddled the end of the large frame: its part moves over.
            rest = min(self._own_size - self._own_filled, self._end - self._pos)
            own[self._own_filled : self._own_filled + rest] = self._buf[self._pos : self._pos + rest]
            self._own_filled += rest
            self._pos += rest

    def own_room(self) -> int:
        """How many bytes the large frame being received into its own buffer still lacks (0: none is)."""
        return self._own_size - self._own_filled if self._own is not None else 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        own = self._own_filled + HEADER_SIZE if self._own is not None else 0
        return self._end - self._pos + own

    def owns(self, view: memoryview) -> bool:
        """Whether `view` (from `next_view`) lies in the shared buffer, valid only until more bytes
        are fed; otherwise it is the frame's own buffer, the caller's to keep."""
        return view.obj is self._buf

    def next_frame(self) -> bytes | None:
        """Return the next complete payload, or None if more bytes are needed.

        Raises FrameTooLarge as soon as a header declares an oversized frame.
        """
        view = self.next_view()
        if view is None:
            return None
        with view:
            return bytes(view)

    def next_view(self) -> memoryview | None:
        """Like `next_frame`, but a view into the buffer, saving the copy of a payload
        that is parsed at once; release it before feeding more bytes."""
        own = self._own
        if own is not None:
            if self._own_filled < self._own_size:
                return None
            self._own = None
            return memoryview(own)[: self._own_size]
        start = self._pos
        if self._end - start < HEADER_SIZE:
            return None
        n = int.from_bytes(self._buf[start : start + HEADER_SIZE], "big")
        if n > self.max_size:
            raise FrameTooLarge(f"peer declared a {n}-byte frame; the limit is {self.max_size}")
        end = start + HEADER_SIZE + n
        if self._end < end:
            if n >= OWN_BUFFER_SIZE:
                self._start_own(n)
            return None
        payload = memoryview(self._buf)[start + HEADER_SIZE : end]
        self._pos = end
        if end == self._end and len(self._buf) > _KEEP:
            # Everything read: give back a buffer that one large frame grew (the
            # view keeps the old one alive until it is released).
            self._buf = bytearray()
            self._pos = self._end = 0
        return payload

    def _start_own(self, n: int) -> None:
        """Move the frame begun at `_pos` (its header in, not all its payload) into a buffer of its own."""
        have = self._end - self._pos - HEADER_SIZE
        own = self.spares.take(n)
        own[:have] = self._buf[self._pos + HEADER_SIZE : self._end]
        self._own, self._own_size, self._own_filled = own, n, have
        self._pos = self._end

    def _compact(self) -> None:
        # Only the unread tail, at most one partial frame, moves to the front.
        if self._pos:
            self._buf[: self._end - self._pos] = self._buf[self._pos : self._end]
            self._end -= self._pos
            self._pos = 0


#: The least the shared buffer grows to. Compacting moves the unread tail (a partial
#: frame) to the front before a record is decrypted behind it; in a buffer of a
#: few records that happened for nearly every record of small frames (a tenth of
#: the receiving loop's time in a fetch of small files), in this one every ~15.
_MIN_BUFFER = 1024 * 1024

#: Spare buffer kept between frames: room for a run-sized frame (the reference
#: daemon asks for runs of up to 4 MiB) and the records after it, so that the
#: buffer is not given back and grown again (zeroed, faulted in) for every run.
_KEEP = 8 * 1024 * 1024
