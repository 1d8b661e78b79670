"""The daemon's session layer (establish, PeerSession) over in-memory trio streams,
against a hand-driven peer that sends whatever a test asks."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.session import establish
from shoal.protocol.channel import Role, SecureChannel, auth_transcript
from shoal.protocol.errors import ProtocolError
from shoal.protocol.framing import FrameDecoder, encode_frame
from shoal.protocol.identity import public_key_bytes, sign
from shoal.protocol.messages import Auth, Error, Hello, Message, decode_message, encode_message

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
    "unexpected-message": lambda peer: peer.send(Hello(1, "eager", None)),
    "unsupported-version": lambda peer: _auth_then_hello(peer, Hello(2, "future", None)),
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
