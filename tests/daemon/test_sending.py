"""Sending sealed buffers as they are: cut into paid slices, each with one sendmsg."""

import os
import socket

import pytest
import trio
import trio.testing

from shoal.daemon.net.sending import send_views, slices


def test_slices_cover_the_parts_in_order_at_the_slice_size() -> None:
    parts = [os.urandom(n) for n in (0, 1, 1000, 70_000, 0, 3 * 65_536 + 5, 17)]
    cut = list(slices(parts, 65_536))
    assert b"".join(b"".join(views) for views, _ in cut) == b"".join(parts)
    assert [length for _, length in cut[:-1]] == [65_536] * (len(cut) - 1)
    assert all(length == sum(len(v) for v in views) for views, length in cut)
    assert all(len(v) for views, _ in cut for v in views)
    assert list(slices([b"", bytearray()], 10)) == []


def socket_streams() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    # Small kernel buffers: a few MB go out in many partial sendmsg calls.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


@pytest.mark.trio
async def test_many_buffers_arrive_whole_and_in_order_through_partial_sends() -> None:
    parts = [os.urandom(n) for n in (5, 1 << 20, 100, 700_000, 3, 2 << 20)] + [os.urandom(10)] * 600
    sender, receiver = socket_streams()
    got = bytearray()

    async def read_all() -> None:
        while len(got) < sum(map(len, parts)):
            got.extend(await receiver.receive_some(8192))
            await trio.sleep(0)

    async with sender, receiver, trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        for views, _ in slices(parts, 1 << 20):
            await send_views(sender, views)
    assert bytes(got) == b"".join(parts)


@pytest.mark.trio
async def test_a_peer_gone_is_a_broken_stream() -> None:
    sender, receiver = socket_streams()
    await receiver.aclose()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):
            await send_views(sender, [memoryview(os.urandom(1 << 16))])
    await sender.aclose()


@pytest.mark.trio
async def test_a_stream_that_is_no_socket_gets_each_view_in_turn() -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    parts = [b"abc", os.urandom(100_000), b"z"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_views, sender, [memoryview(p) for p in parts])
        got = bytearray()
        while len(got) < sum(map(len, parts)):
            got.extend(await receiver.receive_some())
    assert bytes(got) == b"".join(parts)
