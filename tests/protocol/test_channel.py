"""The secure channel: the spec's handshake vector, record framing, and tampering."""


import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.protocol.errors import LocalProtocolError
from shoal.protocol.format.identity import public_key_bytes, sign, verify
from shoal.protocol.wire.channel import (
    LENGTH_SIZE,
    MAX_NONCE,
    MAX_RECORD,
    MAX_RECORD_PLAINTEXT,
    SEAL_SPARE_MIN,
    SEAL_SPARES,
    TAG_SIZE,
    BadRecord,
    HandshakeFailed,
    NonceExhausted,
    Role,
    SecureChannel,
    TransportCipher,
    auth_transcript,
)
from shoal.protocol.wire.framing import FrameDecoder, encode_frame
from shoal.protocol.wire.messages import Auth, decode_message, encode_message
from tests.protocol.spec_vectors import spec_vectors


def established_pair() -> tuple[SecureChannel, SecureChannel]:
    initiator, responder = SecureChannel(Role.INITIATOR), SecureChannel(Role.RESPONDER)
    initiator.start()
    responder.receive_data(initiator.data_to_send())
    assert responder.read() == []
    initiator.receive_data(responder.data_to_send())
    assert initiator.read() == []
    assert initiator.established and responder.established
    return initiator, responder


def records_of(wire: bytes) -> list[bytes]:
    records = []
    while wire:
        size = int.from_bytes(wire[:2], "big")
        records.append(wire[2 : 2 + size])
        wire = wire[2 + size :]
    return records


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
@pytest.mark.parametrize("vector", spec_vectors("handshake"))
def test_spec_handshake_vector(vector: dict[str, str]) -> None:
    hexed = {k: bytes.fromhex(v) for k, v in vector.items()}
    initiator = SecureChannel(Role.INITIATOR, ephemeral_private_key=hexed["initiator-ephemeral-key"])
    responder = SecureChannel(Role.RESPONDER, ephemeral_private_key=hexed["responder-ephemeral-key"])
    initiator.start()
    message_1 = initiator.data_to_send()
    assert message_1.hex() == vector["message-1"]
    responder.receive_data(message_1)
    responder.read()
    message_2 = responder.data_to_send()
    assert message_2.hex() == vector["message-2"]
    initiator.receive_data(message_2)
    initiator.read()
    assert initiator.handshake_hash.hex() == responder.handshake_hash.hex() == vector["handshake-hash"]

    for role, channel, peer, key_name, direction in (
        (Role.INITIATOR, initiator, responder, "initiator", "initiator-to-responder-key"),
        (Role.RESPONDER, responder, initiator, "responder", "responder-to-initiator-key"),
    ):
        identity = Ed25519PrivateKey.from_private_bytes(hexed[f"{key_name}-identity-key"])
        signature = sign(identity, auth_transcript(role, channel.handshake_hash))
        assert signature.hex() == vector[f"{key_name}-auth-signature"]
        channel.write(encode_frame(encode_message(Auth(public_key_bytes(identity), signature))))
        record = channel.data_to_send()
        assert record.hex() == vector[f"{key_name}-auth-record"]
        # The spec's transport key alone must open the record: nonce 0, empty associated data.
        plaintext = TransportCipher(hexed[direction]).open(record[2:])
        peer.receive_data(record)
        assert peer.read() == [plaintext]
        auth = decode_message(plaintext[4:])
        assert verify(auth.public_key, auth_transcript(role, peer.handshake_hash), auth.signature)


def test_spec_handshake_vector_exists() -> None:
    assert len(spec_vectors("handshake")) == 1


def test_auth_transcript_layout() -> None:
    h = bytes(range(32))
    assert auth_transcript(Role.INITIATOR, h) == b"shoal-auth-v1\x00initiator\x00" + h
    assert auth_transcript(Role.RESPONDER, h) == b"shoal-auth-v1\x00responder\x00" + h


def test_handshake_messages_have_fixed_sizes_and_hashes_agree() -> None:
    initiator, responder = SecureChannel(Role.INITIATOR), SecureChannel(Role.RESPONDER)
    initiator.start()
    first = initiator.data_to_send()
    assert first[:2] == b"\x00\x20" and len(first) == 34
    responder.receive_data(first)
    responder.read()
    second = responder.data_to_send()
    assert second[:2] == b"\x00\x30" and len(second) == 50
    initiator.receive_data(second)
    initiator.read()
    assert initiator.handshake_hash == responder.handshake_hash
    assert SecureChannel(Role.INITIATOR).established is False


@pytest.mark.parametrize("size", [0, 1, MAX_RECORD_PLAINTEXT, MAX_RECORD_PLAINTEXT + 1, 3 * MAX_RECORD_PLAINTEXT + 17])
def test_stream_round_trips_in_records_of_at_most_65535_bytes(size: int) -> None:
    initiator, responder = established_pair()
    data = bytes(i % 251 for i in range(size))
    initiator.write(data[: size // 3], data[size // 3 :])
    wire = initiator.data_to_send()
    records = records_of(wire)
    assert all(16 <= len(r) <= MAX_RECORD for r in records)
    assert len(records) == -(-size // MAX_RECORD_PLAINTEXT)
    responder.receive_data(wire)
    assert b"".join(responder.read()) == data


def test_every_buffered_record_is_decrypted_in_one_read() -> None:
    initiator, responder = established_pair()
    wire = b""
    for word in (b"one", b"two", b"three"):
        responder.write(word)
        wire += responder.data_to_send()
    initiator.receive_data(wire)
    assert initiator.read() == [b"one", b"two", b"three"]


def test_partial_record_waits_for_the_rest() -> None:
    initiator, responder = established_pair()
    initiator.write(b"hello")
    wire = initiator.data_to_send()
    for byte in wire[:-1]:
        responder.receive_data(bytes([byte]))
        assert responder.read() == []
    responder.receive_data(wire[-1:])
    assert responder.read() == [b"hello"]
    assert responder.buffered == 0


def test_tampered_record_fails_authentication() -> None:
    initiator, responder = established_pair()
    initiator.write(b"transfer 10 shells")
    wire = bytearray(initiator.data_to_send())
    wire[10] ^= 0x01
    responder.receive_data(bytes(wire))
    with pytest.raises(BadRecord) as caught:
        responder.read()
    assert caught.value.code == "bad-record"


def test_replayed_record_fails_authentication() -> None:
    initiator, responder = established_pair()
    initiator.write(b"once")
    wire = initiator.data_to_send()
    responder.receive_data(wire)
    assert responder.read() == [b"once"]
    responder.receive_data(wire)
    with pytest.raises(BadRecord):
        responder.read()


def test_record_shorter_than_its_tag_is_refused() -> None:
    _, responder = established_pair()
    responder.receive_data(b"\x00\x0f" + bytes(15))
    with pytest.raises(BadRecord):
        responder.read()


def test_records_from_another_session_fail() -> None:
    initiator, _ = established_pair()
    _, stranger = established_pair()
    initiator.write(b"secret")
    stranger.receive_data(initiator.data_to_send())
    with pytest.raises(BadRecord):
        stranger.read()


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n", b"\x00\x21" + bytes(33), b"\x00\x20" + bytes(32)])
def test_bad_first_handshake_message_is_refused(first: bytes) -> None:
    responder = SecureChannel(Role.RESPONDER)
    responder.receive_data(first)
    with pytest.raises(HandshakeFailed):
        responder.read()
    assert responder.data_to_send() == b""


def test_tampered_second_handshake_message_is_refused() -> None:
    initiator, responder = SecureChannel(Role.INITIATOR), SecureChannel(Role.RESPONDER)
    initiator.start()
    responder.receive_data(initiator.data_to_send())
    responder.read()
    second = bytearray(responder.data_to_send())
    second[-1] ^= 0x80
    initiator.receive_data(bytes(second))
    with pytest.raises(HandshakeFailed):
        initiator.read()


def test_initiator_refuses_bytes_before_it_started() -> None:
    initiator = SecureChannel(Role.INITIATOR)
    assert initiator.read() == []
    initiator.receive_data(b"\x00\x30")
    with pytest.raises(HandshakeFailed):
        initiator.read()


def test_misuse_is_a_local_error() -> None:
    initiator, responder = SecureChannel(Role.INITIATOR), SecureChannel(Role.RESPONDER)
    with pytest.raises(LocalProtocolError):
        responder.start()
    with pytest.raises(LocalProtocolError):
        initiator.write(b"too early")
    with pytest.raises(LocalProtocolError):
        _ = initiator.handshake_hash
    initiator.start()
    with pytest.raises(LocalProtocolError):
        initiator.start()


def seal(cipher: TransportCipher, plaintext: bytes) -> bytes:
    out = bytearray(len(plaintext) + TAG_SIZE)
    cipher.seal_into(memoryview(plaintext), memoryview(out))
    return bytes(out)


def test_record_nonce_is_four_zero_bytes_and_a_big_endian_counter() -> None:
    key = bytes(range(32))
    cipher = TransportCipher(key, nonce=5)
    expected = AESGCM(key).encrypt(b"\x00" * 4 + (5).to_bytes(8, "big"), b"x", None)
    assert seal(cipher, b"x") == expected
    assert seal(cipher, b"x") != expected


def test_a_forged_record_uses_no_nonce() -> None:
    sender, receiver = TransportCipher(bytes(32)), TransportCipher(bytes(32))
    genuine = seal(sender, b"genuine")
    with pytest.raises(BadRecord):
        receiver.open(bytes(len(genuine)))
    assert receiver.open(genuine) == b"genuine"


def test_nonce_exhaustion_raises_instead_of_wrapping() -> None:
    key = bytes(32)
    sender = TransportCipher(key, nonce=MAX_NONCE - 1)
    receiver = TransportCipher(key, nonce=MAX_NONCE - 1)
    assert receiver.open(seal(sender, b"last")) == b"last"
    with pytest.raises(NonceExhausted):
        seal(sender, b"one too many")
    with pytest.raises(NonceExhausted):
        receiver.open(bytes(16))


def test_frames_cross_record_boundaries() -> None:
    initiator, responder = established_pair()
    frames = [bytes([n]) * (40_000 + n) for n in range(5)]
    for frame in frames:
        initiator.write(encode_frame(frame))
    responder.receive_data(initiator.data_to_send())
    decoder = FrameDecoder()
    for plaintext in responder.read():
        decoder.feed(plaintext)
    assert [decoder.next_frame() for _ in frames] == frames


@pytest.mark.parametrize("pending", [0, 1, 65519, 70000])
def test_a_large_write_is_sealed_as_the_same_records_as_small_ones(pending: int) -> None:
    """A run's bytes are sealed from where they lie; the wire bytes are those of the
    same stream written piece by piece."""
    data = os.urandom(pending), os.urandom(5 * 65519 + 123)
    whole, pieces = established_pair()[0], established_pair()[0]
    for channel in (whole, pieces):
        channel._send = TransportCipher(bytes(32))
    whole.write(*data)
    stream = b"".join(data)
    for start in range(0, len(stream), 1000):
        pieces.write(stream[start : start + 1000])
    wire = whole.data_to_send()
    assert wire == pieces.data_to_send()
    receiver = TransportCipher(bytes(32))
    assert b"".join(receiver.open(r) for r in records_of(bytes(wire))) == stream


def test_sealed_runs_reuse_a_buffer_only_once_sent() -> None:
    """Runs sealed into kept buffers: one still waiting to be sent (or being sent) is
    never sealed into again, and every record opens to its run."""
    sender, receiver = established_pair()
    runs = [bytes([i]) * (SEAL_SPARE_MIN + 1000 * i) for i in range(SEAL_SPARES + 2)]
    waiting = []
    for run in runs:
        sender.write(run)
        waiting.append(sender.data_to_send_parts())
    buffers = [part.obj for parts in waiting for part in parts if isinstance(part, memoryview)]
    assert len({id(b) for b in buffers}) == len(buffers) == len(runs)
    assert len(sender.sealed) == SEAL_SPARES  # the last two were not kept
    receiver.receive_data(b"".join(part for parts in waiting for part in parts))
    assert b"".join(receiver.read()) == b"".join(runs)
    reused = id(buffers[0])
    del waiting, buffers
    sender.write(runs[1])
    parts = sender.data_to_send_parts()  # the run's full records, then its tail's
    assert isinstance(parts[0], memoryview) and id(parts[0].obj) == reused
    receiver.receive_data(b"".join(parts))
    assert b"".join(receiver.read()) == runs[1]


def _sealed_stream(sizes: list[int]) -> tuple[SecureChannel, bytes, list[bytes]]:
    """A receiver and the wire bytes of one record per size (sealed one write each)."""
    initiator, responder = established_pair()
    plaintexts = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    wire = b""
    for plaintext in plaintexts:
        initiator.write(plaintext)
        wire += initiator.data_to_send()
    return responder, wire, plaintexts


@given(
    sizes=st.lists(st.integers(0, 3 * MAX_RECORD_PLAINTEXT), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 4 * MAX_RECORD), max_size=8),
    kinds=st.lists(st.sampled_from(["bytes", "bytearray", "memoryview"]), min_size=1),
    reads=st.lists(st.booleans(), min_size=1),
)
@settings(max_examples=60, deadline=None)
def test_records_come_out_the_same_however_the_bytes_are_cut_and_held(
    sizes: list[int], cuts: list[int], kinds: list[str], reads: list[bool]
) -> None:
    """Any split of the wire into received pieces of any kind, read after some of them and
    not others, opens the same plaintexts; `buffered` counts what is left."""
    responder, wire, plaintexts = _sealed_stream(sizes)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    got: list[bytes] = []
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        piece = wire[start:end]
        kind = kinds[i % len(kinds)]
        responder.receive_data(piece if kind == "bytes" else bytearray(piece) if kind == "bytearray" else memoryview(piece))
        if reads[i % len(reads)]:
            got.extend(responder.read())
        opened = sum(len(p) for p in got)
        assert responder.buffered <= len(wire) - opened
    got.extend(responder.read())
    assert b"".join(got) == b"".join(plaintexts)
    assert responder.buffered == 0


def test_received_bytes_are_copied_only_to_complete_a_partial_record() -> None:
    """Records that straddle received pieces: a piece's head completes the partial record
    (copied), the records after it are opened from the piece itself, and only the
    tail that starts the next record is copied, not the whole piece."""
    responder, wire, plaintexts = _sealed_stream([MAX_RECORD_PLAINTEXT] * 8)
    piece = 4 * MAX_RECORD + 1000
    got = []
    for start in range(0, len(wire), piece):
        responder.receive_data(wire[start : start + piece])
        assert len(responder._inbound) <= LENGTH_SIZE + MAX_RECORD
        got.extend(responder.read())
    assert got == plaintexts
