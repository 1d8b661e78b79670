"""A session's data path in worker threads, over real sockets: a large frame's records read
and opened by the pump give the connection the same messages as its own reading would;
runs sealed and sent from threads arrive whole; many waiting pumps and a closed session
leave the daemon's threads and descriptors as they were."""

from __future__ import annotations

import os
import struct

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.net.record_pump import CALL_SECONDS, RecordPump, seal, send
from shoal.daemon.net.session import PeerSession, establish
from shoal.protocol.wire.channel import LENGTH_SIZE, MAX_RECORD, Role
from shoal.protocol.wire.connection import NEED_DATA, Connection, ConnectionClosed, MessageReceived
from shoal.protocol.wire.messages import DataRuns, Pong
from tests.daemon.test_session import DrivenPeer
from tests.protocol.test_connection import deliver
from tests.protocol.test_record_hand_off import FIRST, asked_for_run, large_frame_pair

pytestmark = pytest.mark.trio


async def receive_all(receiver: Connection, sock: trio.socket.SocketType, pump: RecordPump) -> tuple[list, int]:
    """Events until the connection closes, pumping where it can; and the records the pump opened."""
    events: list = []
    pumped = 0
    while True:
        event = receiver.next_event()
        if event is NEED_DATA:
            done = await pump.pump(receiver)
            if done is not None and (done.received or done.closed):
                pumped += done.records
                continue
            receiver.receive_data(await sock.recv(256 * 1024))
            continue
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events, pumped


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    with memoryview(data) as view:
        sent = 0
        while sent < len(view):
            sent += await sock.send(view[sent:])


async def send_slowly(sock: trio.socket.SocketType, data: bytes, piece: int, pause: float) -> None:
    for start in range(0, len(data), piece):
        await send_all(sock, data[start : start + piece])
        await trio.sleep(pause)
    sock.shutdown(trio.socket.SHUT_WR)


@pytest.mark.parametrize("size", [1024 * 1024, 4 * 1024 * 1024 + 17, 16 * 1024 * 1024])
async def test_pumped_frames_arrive_whole_and_in_order(size: int) -> None:
    sender, receiver, run, wire = large_frame_pair(size)
    left, right = trio.socket.socketpair()
    with left, right:
        pump = RecordPump(right.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly, left, wire, 300_000, 0)
            events, pumped = await receive_all(receiver, right, pump)
    assert events[0] == MessageReceived(DataRuns(7, (FIRST,), run))
    assert isinstance(events[1], ConnectionClosed) and events[1].by_peer
    # Every record of the frame but those of the first read (which finds the frame large)
    # and the one holding its end was opened by the pump, not by the connection.
    assert pumped >= (size - 256 * 1024) // 65519 - 1
    assert deliver(receiver, sender) == [MessageReceived(Pong(5))]


async def test_a_call_receives_no_more_than_it_is_asked_for() -> None:
    # Under a bandwidth cap the session asks for about 0.1 s of it a call, and pays after.
    _, receiver, run, wire = large_frame_pair(4 * 1024 * 1024)
    left, right = trio.socket.socketpair()
    with left, right:
        pump = RecordPump(right.fileno())
        calls: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly, left, wire, 1024 * 1024, 0)
            while (event := receiver.next_event()) is NEED_DATA:
                done = await pump.pump(receiver, 100_000)
                if done is None:
                    receiver.receive_data(await right.recv(256 * 1024))
                else:
                    calls.append(done.received)
    assert event == MessageReceived(DataRuns(7, (FIRST,), run))
    assert max(calls) == 100_000 and sum(calls) > 3 * 1024 * 1024


async def test_a_slow_peer_is_pumped_in_pieces_within_the_call_time() -> None:
    _, receiver, run, wire = large_frame_pair(2 * 1024 * 1024)
    left, right = trio.socket.socketpair()
    with left, right:
        pump = RecordPump(right.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly, left, wire, 200_000, CALL_SECONDS * 0.6)
            events, pumped = await receive_all(receiver, right, pump)
    assert events[0] == MessageReceived(DataRuns(7, (FIRST,), run))
    assert pumped > 20


async def test_a_quiet_peer_ends_the_call_with_nothing_received() -> None:
    _, receiver, run, wire = large_frame_pair(2 * 1024 * 1024)
    left, right = trio.socket.socketpair()
    with left, right:
        await send_all(left, wire[:200_000])
        receiver.receive_data(await right.recv(200_000))
        assert receiver.next_event() is NEED_DATA
        pump = RecordPump(right.fileno())
        start = trio.current_time()
        done = await pump.pump(receiver)
        assert done is not None and (done.received, done.records, done.closed) == (0, 0, False)
        assert trio.current_time() - start >= CALL_SECONDS * 0.9
        # The connection is as it was, and the pump's buffer may go while the session is
        # quiet: the rest arriving later completes the frame.
        pump.trim()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly, left, wire[200_000:], 300_000, 0)
            events, pumped = await receive_all(receiver, right, pump)
    assert events[0] == MessageReceived(DataRuns(7, (FIRST,), run)) and pumped > 20


async def receive_altered(receiver: Connection, wire: bytearray) -> tuple[list, int]:
    """`receive_all` of `wire` (altered so that the connection fails on it), the rest never read."""
    left, right = trio.socket.socketpair()
    with left, right:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly, left, bytes(wire), 300_000, 0)
            received = await receive_all(receiver, right, RecordPump(right.fileno()))
            nursery.cancel_scope.cancel()
    return received


async def test_a_tampered_record_fails_the_connection_as_it_would_in_python() -> None:
    _, receiver, _, stream = large_frame_pair(3 * 1024 * 1024)
    wire = bytearray(stream)
    wire[1_500_000] ^= 0x01
    events, pumped = await receive_altered(receiver, wire)
    assert pumped > 10
    assert len(events) == 1 and events[0].error_code == "bad-record"


async def test_a_record_shorter_than_its_tag_fails_the_connection_as_it_would_in_python() -> None:
    _, receiver, _, stream = large_frame_pair(3 * 1024 * 1024)
    wire = bytearray(stream)
    # Every record but the last is whole (MAX_RECORD bytes after its length): the tenth's
    # length, well past the first read, now says 5.
    at = 10 * (LENGTH_SIZE + MAX_RECORD)
    assert int.from_bytes(wire[at : at + LENGTH_SIZE], "big") == MAX_RECORD
    wire[at : at + LENGTH_SIZE] = (5).to_bytes(LENGTH_SIZE, "big")
    events, pumped = await receive_altered(receiver, wire)
    assert pumped > 3
    assert len(events) == 1 and events[0].error_code == "bad-record" and "shorter than its tag" in events[0].reason


async def test_a_peer_closing_inside_the_frame_is_a_truncated_connection() -> None:
    _, receiver, _, wire = large_frame_pair(3 * 1024 * 1024)
    left, right = trio.socket.socketpair()
    with left, right:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly, left, wire[:2_000_000], 300_000, 0)
            events, _ = await receive_all(receiver, right, RecordPump(right.fileno()))
    assert len(events) == 1 and events[0].error_code == "truncated"


async def test_a_reset_connection_ends_the_session_with_its_error() -> None:
    _, receiver, _, wire = large_frame_pair(2 * 1024 * 1024)
    listener = trio.socket.socket()
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        left = trio.socket.socket()
        await left.connect(listener.getsockname())
        right, _ = await listener.accept()
        with right:
            await send_all(left, wire[:200_000])
            receiver.receive_data(await right.recv(200_000))
            assert receiver.next_event() is NEED_DATA
            # Closed with a zero linger: the peer's socket is reset, not shut down.
            left.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
            left.close()
            done = await RecordPump(right.fileno()).pump(receiver)
    assert done is not None and done.failed is not None and "Connection reset" in done.failed


async def test_sealed_in_a_worker_thread_the_runs_reach_the_peer_and_their_buffer_is_free() -> None:
    size = 4 * 1024 * 1024
    receiver, sender = asked_for_run(size)
    sender.defer_seals()
    buffer = bytearray(os.urandom(size))
    sender.send_data_runs(7, (FIRST,), buffer)
    await trio.to_thread.run_sync(seal, sender.take_seal_jobs())
    wire = sender.data_to_send()
    buffer.extend(b"x")  # no view of the buffer is left: it may be reused, even resized
    receiver.receive_data(wire)
    assert receiver.next_event() == MessageReceived(DataRuns(7, (FIRST,), bytes(buffer[:size])))


async def test_sent_from_a_worker_thread_every_byte_arrives_in_order() -> None:
    data = os.urandom(9 * 1024 * 1024 + 3)
    views = [memoryview(data)[start : start + 700_001] for start in range(0, len(data), 700_001)]
    left, right = trio.socket.socketpair()
    got = bytearray()
    with left, right:

        async def read_slowly() -> None:
            while len(got) < len(data):
                got.extend(await right.recv(100_000))
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly)
            await send(left.fileno(), views, trio.CapacityLimiter(1))
    assert got == data


async def test_sending_to_a_closed_peer_is_a_broken_connection() -> None:
    left, right = trio.socket.socketpair()
    right.close()
    with left, pytest.raises(trio.BrokenResourceError):
        await send(left.fileno(), [memoryview(bytes(300_000))], trio.CapacityLimiter(1))


async def test_waiting_pumps_leave_the_daemons_worker_threads_to_its_other_work() -> None:
    # More sessions waiting on their peers than trio's default limiter has threads (40):
    # the disk and index calls that share that limiter must not queue behind them.
    pairs, waiting = [], []
    default = trio.to_thread.current_default_thread_limiter()
    async with trio.open_nursery() as nursery:
        for _ in range(int(default.total_tokens) + 5):
            _, receiver, _, wire = large_frame_pair(1024 * 1024)
            left, right = trio.socket.socketpair()
            pairs += [left, right]
            await send_all(left, wire[:200_000])
            receiver.receive_data(await right.recv(200_000))
            assert receiver.next_event() is NEED_DATA
            pump = RecordPump(right.fileno())
            waiting.append(pump)
            nursery.start_soon(pump.pump, receiver)
        await trio.sleep(CALL_SECONDS / 4)
        assert default.borrowed_tokens == 0
        assert await trio.to_thread.run_sync(lambda: "answered") == "answered"
    for sock in pairs:
        sock.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_closing_a_tcp_session_ends_the_connection_at_once_and_leaves_no_descriptor() -> None:
    # The worker threads use a descriptor of their own: closing the session's socket must
    # still end the connection for the peer, and the session's own copy goes with it.
    before = open_descriptors()
    ours, theirs = trio.socket.socketpair()
    sessions: list[PeerSession] = []
    reasons: list[str] = []

    async def daemon_side() -> None:
        stream = trio.SocketStream(ours)
        conn, peer = await establish(stream, Role.RESPONDER, Ed25519PrivateKey.generate(), lambda peer: True, None)
        session = PeerSession(conn, stream, peer, "unix", index=None, on_catalog=lambda s: None)  # type: ignore[arg-type]
        sessions.append(session)
        reasons.append(await session.run())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon_side)
            peer = DrivenPeer(trio.SocketStream(theirs))
            await peer.open()
            while not sessions:
                await trio.sleep(0.01)
            assert open_descriptors() == before + 3  # both ends, and the session's own copy
            await sessions[0].close("done here")
            closed = await peer.listen(answer=False, arrivals=[])
            assert (closed.reason, closed.by_peer) == ("done here", True)
            assert await peer.stream.receive_some(1024) == b""
        await peer.stream.aclose()
    assert reasons and open_descriptors() == before
