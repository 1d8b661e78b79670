"""Sending a connection's sealed buffers as they are: no joined copy, one `sendmsg` a slice."""

import errno
from collections.abc import Iterator, Sequence

import trio

#: Buffers one sendmsg is given (Linux takes up to 1,024).
IOV_BATCH = 512

Buffer = bytes | bytearray | memoryview


def slices(parts: Sequence[Buffer], size: int) -> Iterator[tuple[list[memoryview], int]]:
    """`parts` cut into consecutive slices of `size` bytes (the last may be shorter), each as
    the views of the parts it spans and its length."""
    batch: list[memoryview] = []
    filled = 0
    for part in parts:
        view = memoryview(part)
        while view:
            piece = view[: size - filled]
            batch.append(piece)
            filled += len(piece)
            view = view[len(piece) :]
            if filled == size:
                yield batch, filled
                batch, filled = [], 0
    if filled:
        yield batch, filled


async def send_views(stream: trio.abc.Stream, views: list[memoryview]) -> None:
    """Send `views` in order: on a socket with `sendmsg` (one call when the kernel takes
    it all), on another stream one `send_all` each. Errors as SocketStream raises them."""
    if not isinstance(stream, trio.SocketStream):
        for view in views:
            await stream.send_all(view)
        return
    try:
        while views:
            sent = await stream.socket.sendmsg(views[:IOV_BATCH])
            views = unsent(views, sent)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("the connection was closed") from None
        raise trio.BrokenResourceError(f"the connection broke: {exc}") from exc


def unsent(views: list[memoryview], sent: int) -> list[memoryview]:
    """What of `views` is left after the first `sent` bytes went out."""
    for i, view in enumerate(views):
        if sent < len(view):
            return [view[sent:], *views[i + 1 :]]
        sent -= len(view)
    return []
