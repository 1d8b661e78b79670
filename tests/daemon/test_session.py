"""The daemon's session layer (establish, PeerSession) over in-memory trio streams,
against a hand-driven peer that sends whatever a test asks."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.net.session import KEEPALIVE_INTERVAL, MAX_UNANSWERED_PINGS, PeerSession, establish
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.identity import public_key_bytes, sign
from shoal.protocol.wire.channel import Role, SecureChannel, auth_transcript
from shoal.protocol.wire.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    HelloReceived,
    MessageReceived,
    PeerAuthenticated,
)
from shoal.protocol.wire.framing import FrameDecoder, encode_frame
from shoal.protocol.wire.messages import PROTOCOL_VERSION, Auth, Error, Hello, Message, decode_message, encode_message

pytestmark = pytest.mark.trio


class RawInitiator:
    """A peer with a real channel and key, driven by hand over a trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.key = Ed25519PrivateKey.generate()
        self.channel = SecureChannel(Role.INITIATOR)
        self.frames = FrameDecoder()

    async def secure(self) -> None:
        self.channel.start()
        await self.stream.send_all(self.channel.data_to_send())
        while not self.channel.established:
            self.channel.receive_data(await self.stream.receive_some(65536))
            self.channel.read()

    def auth(self) -> Auth:
        transcript = auth_transcript(Role.INITIATOR, self.channel.handshake_hash)
        return Auth(public_key_bytes(self.key), sign(self.key, transcript))

    async def send(self, *messages: Message) -> None:
        for message in messages:
            self.channel.write(encode_frame(encode_message(message)))
        await self.stream.send_all(self.channel.data_to_send())

    async def send_raw(self, plaintext: bytes) -> None:
        self.channel.write(plaintext)
        await self.stream.send_all(self.channel.data_to_send())

    async def messages_until_closed(self) -> list[Message]:
        """Everything the daemon sends until it closes the stream."""
        while data := await self.stream.receive_some(65536):
            self.channel.receive_data(data)
            for plaintext in self.channel.read():
                self.frames.feed(plaintext)
        received = []
        while (frame := self.frames.next_frame()) is not None:
            received.append(decode_message(frame))
        return received


async def _responder(stream: trio.abc.Stream, failures: list[ProtocolError]) -> None:
    try:
        await establish(stream, Role.RESPONDER, Ed25519PrivateKey.generate(), lambda peer: True, None)
    except ProtocolError as e:
        failures.append(e)
    finally:
        await stream.aclose()


async def _auth_then_hello(peer: RawInitiator, hello: Hello) -> None:
    await peer.send(peer.auth())
    await peer.send(hello)


PRE_HELLO_VIOLATIONS = {
    # A frame whose declared length is over the 4,096-byte limit before HELLO.
    "frame-too-large": lambda peer: peer.send_raw((4097).to_bytes(4, "big")),
    # AUTH with a 31-byte key: not a valid message.
    "bad-message": lambda peer: peer.send_raw(encode_frame(b"\x93\x01\xc4\x1f" + bytes(31) + b"\xc4\x40" + bytes(64))),
    # A well-formed AUTH whose signature is not over this channel.
    "bad-auth": lambda peer: peer.send(Auth(public_key_bytes(peer.key), bytes(64))),
    # HELLO before AUTH.
    "unexpected-message": lambda peer: peer.send(Hello(PROTOCOL_VERSION, "eager", None)),
    "unsupported-version": lambda peer: _auth_then_hello(peer, Hello(1, "old", None)),
}


@pytest.mark.parametrize("code", list(PRE_HELLO_VIOLATIONS))
async def test_violation_before_hello_is_reported_to_the_peer_with_error(code: str) -> None:
    """SPEC "Closing and errors": ERROR(code, message) once the channel is established, then close."""
    ours, theirs = trio.testing.memory_stream_pair()
    failures: list[ProtocolError] = []
    peer = RawInitiator(theirs)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_responder, ours, failures)
            await peer.secure()
            await PRE_HELLO_VIOLATIONS[code](peer)
            received = await peer.messages_until_closed()
    assert [f.code for f in failures] == [code]
    errors = [m for m in received if isinstance(m, Error)]
    assert [e.code for e in errors] == [code], received
    assert isinstance(received[-1], Error)


# --- keepalive (SPEC "Keepalive"), on trio's virtual clock ------------------------------


class DrivenPeer:
    """An honest Connection over a trio stream that speaks only when the test lets it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())

    async def flush(self) -> None:
        if data := self.conn.data_to_send():
            await self.stream.send_all(data)

    async def open(self) -> None:
        self.conn.start()
        while True:
            event = self.conn.next_event()
            await self.flush()
            if event is NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, PeerAuthenticated):
                self.conn.accept()
                self.conn.send(Hello(PROTOCOL_VERSION, "driven", None))
            elif isinstance(event, HelloReceived):
                return
            else:
                raise AssertionError(event)

    async def listen(self, *, answer: bool, arrivals: list[float]) -> ConnectionClosed:
        """Read until the session ends, noting when bytes arrive; with `answer`, send the
        PONGs the Connection queues for the daemon's PINGs (which it does not surface)."""
        start = trio.current_time()
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                if answer:
                    await self.flush()
                data = await self.stream.receive_some(65536)
                arrivals.append(trio.current_time() - start)
                self.conn.receive_data(data)
            elif isinstance(event, MessageReceived):
                raise AssertionError(f"the daemon sent {event.message}")
            elif isinstance(event, ConnectionClosed):
                return event


async def _daemon_session(stream: trio.abc.Stream, reasons: list[str]) -> None:
    conn, peer = await establish(stream, Role.RESPONDER, Ed25519PrivateKey.generate(), lambda peer: True, None)
    session = PeerSession(conn, stream, peer, "memory", index=None, on_catalog=lambda s: None)  # type: ignore[arg-type]
    reasons.append(await session.run())


async def _open_session(nursery: trio.Nursery, reasons: list[str]) -> DrivenPeer:
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(_daemon_session, ours, reasons)
    peer = DrivenPeer(theirs)
    await peer.open()
    return peer


async def test_a_silent_peer_is_pinged_then_dropped_with_timeout(autojump_clock) -> None:
    reasons: list[str] = []
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        peer = await _open_session(nursery, reasons)
        closed = await peer.listen(answer=False, arrivals=arrivals)
    # A PING after each interval of silence, then the ERROR one interval after the last.
    expected = [KEEPALIVE_INTERVAL * n for n in range(1, MAX_UNANSWERED_PINGS + 2)]
    assert arrivals == pytest.approx(expected, abs=1)
    assert (closed.error_code, closed.by_peer) == ("timeout", True)
    assert "answered none" in reasons[0]


async def test_a_peer_that_answers_pings_keeps_its_session(autojump_clock) -> None:
    reasons: list[str] = []
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        peer = await _open_session(nursery, reasons)
        with trio.move_on_after(20 * KEEPALIVE_INTERVAL):
            await peer.listen(answer=True, arrivals=arrivals)
        assert reasons == []
        nursery.cancel_scope.cancel()
    assert len(arrivals) >= 19


async def test_a_peer_stalled_inside_a_frame_is_dropped_after_one_interval(autojump_clock) -> None:
    reasons: list[str] = []
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        peer = await _open_session(nursery, reasons)
        peer.conn._channel.write((4000).to_bytes(4, "big") + b"half a frame")
        await peer.flush()
        closed = await peer.listen(answer=False, arrivals=arrivals)
    assert closed.error_code == "timeout" and "middle of a frame" in closed.reason
    # No PING (the peer could not answer one mid-frame): only the ERROR.
    assert arrivals == pytest.approx([KEEPALIVE_INTERVAL], abs=1)
