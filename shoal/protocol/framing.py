"""Length-prefixed frames: a 4-byte big-endian length, then that many payload bytes.

The same framing carries the peer wire protocol (inside the encrypted channel) and
the control socket. A declared length is checked against the limit before a single
payload byte is buffered, so a hostile length cannot make us allocate.
"""

from shoal.protocol.errors import FrameTooLarge, LocalProtocolError

HEADER_SIZE = 4
#: Largest frame payload: one chunk of the largest allowed size plus its header.
MAX_FRAME_SIZE = 16 * 1024 * 1024 + 4096


def encode_frame(payload: bytes | bytearray | memoryview, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """Return `payload` with its length prefix."""
    n = len(payload)
    if n > max_size:
        raise LocalProtocolError(f"frame of {n} bytes exceeds the {max_size}-byte limit")
    return n.to_bytes(HEADER_SIZE, "big") + bytes(payload)


class FrameDecoder:
    """Buffers bytes and yields complete frame payloads, one at a time."""

    def __init__(self, *, max_size: int = MAX_FRAME_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """Return the next complete payload, or None if more bytes are needed.

        Raises FrameTooLarge as soon as a header declares an oversized frame.
        """
        if self.buffered < HEADER_SIZE:
            self._compact()
            return None
        start = self._pos
        n = int.from_bytes(self._buf[start : start + HEADER_SIZE], "big")
        if n > self.max_size:
            raise FrameTooLarge(f"peer declared a {n}-byte frame; the limit is {self.max_size}")
        end = start + HEADER_SIZE + n
        if len(self._buf) < end:
            self._compact()
            return None
        with memoryview(self._buf) as view:
            payload = bytes(view[start + HEADER_SIZE : end])
        self._pos = end
        return payload

    def _compact(self) -> None:
        # Dropping consumed bytes only when a frame is incomplete keeps the
        # common many-frames-per-read case free of repeated memmoves.
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
