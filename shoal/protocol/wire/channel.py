"""The encrypted channel: a Noise NN handshake, then length-prefixed AES-GCM records.

Sans-I/O: received bytes go in through `receive_data`, decrypted plaintext comes
out of `read` (or is decrypted straight into a frame decoder by `read_into`),
plaintext to send goes in through `write` and the wire bytes come out of
`data_to_send`. Noise NN proves no identity; `auth_transcript` gives the
bytes each side signs with its Ed25519 key to bind its identity to this very
handshake, so a signature cannot be replayed into another session or reflected
back at its author.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage

from shoal.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from shoal.protocol.wire.framing import SPARE_SIZE, FrameDecoder
from shoal.protocol.wire.spares import SpareBuffers

NOISE_PROTOCOL = b"Noise_NN_25519_AESGCM_SHA256"
PROLOGUE = b"shoal/1"
LENGTH_SIZE = 2
TAG_SIZE = 16
MAX_RECORD = 65535
MAX_RECORD_PLAINTEXT = MAX_RECORD - TAG_SIZE
#: Handshake messages carry no payload: msg1 is the initiator's ephemeral key,
#: msg2 the responder's ephemeral key and the tag of an empty payload.
HANDSHAKE_SIZES = (32, 32 + TAG_SIZE)
#: Noise reserves the all-ones nonce; reaching it ends the channel.
MAX_NONCE = 2**64 - 1
AUTH_LABEL = b"shoal-auth-v1\x00"
#: Records sealed into one buffer of at least this size (a run's) go into a kept one
#: (spares.py); SEAL_SPARES of them may wait to be sent at once, as many as a
#: daemon serves runs to a peer at the same time and one more.
SEAL_SPARE_MIN = 1024 * 1024
SEAL_SPARES = 4


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class HandshakeFailed(RemoteProtocolError):
    """The peer's handshake message is malformed or does not verify."""

    code = "handshake-failed"


class BadRecord(RemoteProtocolError):
    """A transport record is malformed or fails authentication (tampered or forged)."""

    code = "bad-record"


class NonceExhausted(ProtocolError):
    """A direction of the channel used every nonce; the channel must end."""

    code = "nonce-exhausted"


def auth_transcript(role: Role, handshake_hash: bytes) -> bytes:
    """The bytes a side in `role` signs to prove its identity in this channel."""
    return AUTH_LABEL + role.value.encode("ascii") + b"\x00" + handshake_hash


class TransportCipher:
    """One direction of the record layer: AES-256-GCM with a counting nonce."""

    def __init__(self, key: bytes, nonce: int = 0) -> None:
        self.key = key
        self._aead = AESGCM(key)
        self._nonce = nonce

    @property
    def nonce(self) -> int:
        """The next record's nonce counter."""
        return self._nonce

    def skip(self, records: int) -> None:
        """Count `records` opened (or sealed) with this key elsewhere, in order from `nonce`."""
        if records < 0 or self._nonce + records > MAX_NONCE:
            raise LocalProtocolError(f"cannot skip {records} records from nonce {self._nonce}")
        self._nonce += records

    def seal_into(self, plaintext: memoryview, out: memoryview) -> None:
        """Encrypt the next record's plaintext into `out` (its size plus the tag)."""
        self._aead.encrypt_into(self._current_nonce(), plaintext, None, out)
        self._nonce += 1

    def open(self, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt the next record; BadRecord (and no nonce used) if the peer did not seal it so."""
        try:
            plaintext = self._aead.decrypt(self._current_nonce(), ciphertext, None)
        except InvalidTag:
            raise BadRecord(f"record {self._nonce} failed authentication: tampered or forged") from None
        self._nonce += 1
        return plaintext

    def open_into(self, ciphertext: memoryview, out: memoryview) -> None:
        """Decrypt the next record into `out` (its plaintext size); BadRecord as `open`."""
        try:
            self._aead.decrypt_into(self._current_nonce(), ciphertext, None, out)
        except InvalidTag:
            raise BadRecord(f"record {self._nonce} failed authentication: tampered or forged") from None
        self._nonce += 1

    def _current_nonce(self) -> bytes:
        if self._nonce >= MAX_NONCE:
            raise NonceExhausted("the channel has used all 2^64-1 record nonces")
        return b"\x00\x00\x00\x00" + self._nonce.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class RecordHandOff:
    """The opening of the next received records, lent to other code (SecureChannel.hand_off)."""

    #: The receiving direction's AES-256-GCM key.
    key: bytes
    #: The nonce counter of the next record; record i after it uses nonce + i.
    nonce: int
    #: How many received, unopened bytes were moved to the head of the borrower's buffer.
    have: int


class RecordOpener:
    """The borrower's side of a hand-off: opens whole records, in order, into the lent room,
    and stops before one it cannot open there (shorter than its tag, larger than the room
    left, failing authentication, past the last nonce). The channel meets that record again
    when the rest is given back, and fails on it as on any other."""

    def __init__(self, handoff: RecordHandOff, room: memoryview) -> None:
        self._cipher = TransportCipher(handoff.key, handoff.nonce)
        self._first = handoff.nonce
        self._room = room
        #: Plaintext bytes put in the room.
        self.written = 0
        #: The next record cannot be opened here.
        self.blocked = False

    @property
    def records(self) -> int:
        """Records opened."""
        return self._cipher.nonce - self._first

    def open(self, wire: memoryview, pos: int) -> int:
        """Open the whole records of `wire` from `pos`; where the first not opened starts."""
        room = self._room
        while len(wire) - pos >= LENGTH_SIZE:
            size = (wire[pos] << 8) | wire[pos + 1]
            if len(wire) - pos < LENGTH_SIZE + size:
                break
            plain = size - TAG_SIZE
            if plain < 0 or plain > len(room) - self.written:
                self.blocked = True
                break
            record = wire[pos + LENGTH_SIZE : pos + LENGTH_SIZE + size]
            try:
                self._cipher.open_into(record, room[self.written : self.written + plain])
            except ProtocolError:  # BadRecord, NonceExhausted
                self.blocked = True
                break
            self.written += plain
            pos += LENGTH_SIZE + size
        return pos


@dataclass(frozen=True, slots=True)
class SealJob:
    """Records whose sealing was deferred (SecureChannel.defer_seals): `plaintext` sealed into
    `out` (already queued for sending) as records of MAX_RECORD_PLAINTEXT bytes, each its
    length, ciphertext and tag, record i with nonce `nonce` + i."""

    key: bytes
    nonce: int
    plaintext: memoryview
    out: memoryview

    def run(self) -> None:
        """Seal the records (a daemon runs this in a worker thread: the AES calls release the GIL)."""
        cipher = TransportCipher(self.key, self.nonce)
        pos = 0
        for start in range(0, len(self.plaintext), MAX_RECORD_PLAINTEXT):
            piece = self.plaintext[start : start + MAX_RECORD_PLAINTEXT]
            size = len(piece) + TAG_SIZE
            self.out[pos : pos + LENGTH_SIZE] = size.to_bytes(LENGTH_SIZE, "big")
            cipher.seal_into(piece, self.out[pos + LENGTH_SIZE : pos + LENGTH_SIZE + size])
            pos += LENGTH_SIZE + size


class SecureChannel:
    """The handshake and record layer of one connection, without any I/O."""

    def __init__(self, role: Role, *, ephemeral_private_key: bytes | None = None) -> None:
        """`ephemeral_private_key` exists for reproducible test vectors; leave it unset."""
        self.role = role
        self._noise = NoiseConnection.from_name(NOISE_PROTOCOL)
        self._noise.set_prologue(PROLOGUE)
        if ephemeral_private_key is not None:
            self._noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private_key)
        if role is Role.INITIATOR:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        self._noise.start_handshake()
        self._started = False
        self._inbound = bytearray()
        # Received bytes not yet read, kept as they came (from `_held_at` on): the
        # partial record buffered before them is completed in `_inbound` with a copy
        # of their head, the records after it are opened straight from them, and
        # only a trailing partial record is copied into `_inbound`.
        self._held: bytes | None = None
        self._held_at = 0
        self._plain_out = bytearray()
        self._wire_out: list[bytes | bytearray | memoryview] = []
        self.sealed = SpareBuffers(SEAL_SPARES, SPARE_SIZE)
        #: Whether the records of large pieces written are sealed later, by whoever takes
        #: `take_seal_jobs` (or by `data_to_send`): the pieces must then stay unchanged until then.
        self.defer_seals = False
        self._seal_jobs: list[SealJob] = []
        self._send: TransportCipher | None = None
        self._recv: TransportCipher | None = None
        self._handshake_hash: bytes | None = None

    @property
    def established(self) -> bool:
        """Whether the handshake is complete and records can flow."""
        return self._handshake_hash is not None

    @property
    def handshake_hash(self) -> bytes:
        """Noise's h after the handshake: what AUTH signatures bind to."""
        if self._handshake_hash is None:
            raise LocalProtocolError("the handshake is not complete")
        return self._handshake_hash

    @property
    def buffered(self) -> int:
        """Received bytes not yet making up a whole handshake message or record."""
        return len(self._inbound) + (len(self._held) - self._held_at if self._held is not None else 0)

    def start(self) -> None:
        """Queue the initiator's first handshake message."""
        if self.role is not Role.INITIATOR or self._started:
            raise LocalProtocolError("only an initiator starts a channel, once")
        self._started = True
        self._queue_handshake(self._noise.write_message(b""))

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the peer."""
        if self._held is not None:
            self._inbound += memoryview(self._held)[self._held_at :]
            self._held = None
        # Only immutable bytes are kept by reference: a caller may reuse its buffer.
        if type(data) is bytes and self.established:
            head = self._partial_rest()
            if head is not None and head < len(data):
                if head:
                    self._inbound += memoryview(data)[:head]
                self._held, self._held_at = data, head
                return
        self._inbound += data

    def _partial_rest(self) -> int | None:
        """How many more bytes complete the one partial record buffered (0: none is), or
        None where that is not known (its length is not all in, or more is buffered)."""
        have = len(self._inbound)
        if not have:
            return 0
        if have < LENGTH_SIZE:
            return None
        rest = LENGTH_SIZE + int.from_bytes(self._inbound[:LENGTH_SIZE], "big") - have
        return rest if rest > 0 else None

    def read(self) -> list[bytes]:
        """Advance the handshake and return the plaintexts of every complete buffered record."""
        if not self.established and not self._advance_handshake():
            return []
        plaintexts: list[bytes] = []
        assert self._recv is not None
        for record in self._records():
            plaintexts.append(self._recv.open(record))
        return plaintexts

    def read_into(self, frames: FrameDecoder) -> bool:
        """Advance the handshake and decrypt every complete buffered record straight
        into `frames` (saving a copy of every received byte); whether anything progressed."""
        if not self.established:
            return self._advance_handshake()
        assert self._recv is not None
        progressed = False
        for record in self._records():
            with frames.reserve(len(record) - TAG_SIZE) as space:
                self._recv.open_into(record, space)
            frames.commit(len(record) - TAG_SIZE)
            progressed = True
        return progressed

    def hand_off(self, wire: bytearray | memoryview) -> RecordHandOff:
        """Lend the opening of the next records to other code (a worker thread's reader): the
        received bytes not yet opened move to the head of `wire`. Give back with `take_back`."""
        if self._recv is None:
            raise LocalProtocolError("the handshake is not complete")
        have = self.buffered
        if have > len(wire):
            raise LocalProtocolError(f"{have} buffered bytes do not fit a {len(wire)}-byte buffer")
        inbound = len(self._inbound)
        wire[:inbound] = self._inbound
        del self._inbound[:]
        if self._held is not None:
            wire[inbound:have] = memoryview(self._held)[self._held_at :]
            self._held = None
        return RecordHandOff(self._recv.key, self._recv.nonce, have)

    def take_back(self, records: int, left: bytes | bytearray | memoryview) -> None:
        """End a hand-off: `records` were opened elsewhere, `left` (received, not opened) is buffered again."""
        assert self._recv is not None
        self._recv.skip(records)
        self._inbound += left

    def write(self, *pieces: bytes | bytearray | memoryview) -> None:
        """Queue plaintext pieces; they are sealed into records by the next `data_to_send`."""
        if not self.established:
            raise LocalProtocolError("cannot send application data before the handshake completes")
        for piece in pieces:
            if len(piece) >= 2 * MAX_RECORD_PLAINTEXT:
                self._write_large(piece)
            else:
                self._plain_out += piece
        if len(self._plain_out) >= MAX_RECORD_PLAINTEXT:
            # Sealing full records as they fill keeps the plaintext buffer small and cache-warm.
            self._seal_records(full_only=True)

    def data_to_send(self) -> bytes | bytearray:
        """Seal queued plaintext and return every byte due to the peer."""
        parts = self.data_to_send_parts()
        if len(parts) == 1 and not isinstance(parts[0], memoryview):
            return parts[0]
        return b"".join(parts)

    def take_seal_jobs(self) -> list[SealJob]:
        """The deferred seals not yet done; run each before the queued bytes are sent."""
        jobs, self._seal_jobs = self._seal_jobs, []
        return jobs

    def data_to_send_parts(self) -> list[bytes | bytearray | memoryview]:
        """Like `data_to_send`, as the buffers the records were sealed into, to be sent in
        this order (one `sendmsg`): joining them would copy every byte once more."""
        for job in self.take_seal_jobs():
            job.run()
        if self._plain_out:
            self._seal_records(full_only=False)
        parts = self._wire_out
        self._wire_out = []
        return parts

    def _write_large(self, piece: bytes | bytearray | memoryview) -> None:
        """Queue a large piece (a run's bytes), sealing its full records from where it
        is: only the head that completes a pending record and the tail are copied."""
        with memoryview(piece) as view:
            head = -len(self._plain_out) % MAX_RECORD_PLAINTEXT
            self._plain_out += view[:head]
            self._seal_records(full_only=True)
            body = view[head:]
            full = len(body) - len(body) % MAX_RECORD_PLAINTEXT
            if self.defer_seals:
                self._defer_seal(body[:full])
            else:
                self._seal(body[:full])
            self._plain_out += body[full:]

    def _queue_handshake(self, message: bytes | bytearray) -> None:
        self._wire_out.append(len(message).to_bytes(LENGTH_SIZE, "big") + bytes(message))

    def _advance_handshake(self) -> bool:
        """Consume the one handshake message due from the peer, if it is all here."""
        if self.role is Role.INITIATOR and not self._started:
            if self._inbound:
                raise HandshakeFailed("the peer spoke before our handshake began")
            return False
        expected = HANDSHAKE_SIZES[0] if self.role is Role.RESPONDER else HANDSHAKE_SIZES[1]
        if len(self._inbound) < LENGTH_SIZE:
            return False
        size = int.from_bytes(self._inbound[:LENGTH_SIZE], "big")
        if size != expected:
            raise HandshakeFailed(f"handshake message of {size} bytes; a shoal/1 peer sends {expected}")
        if len(self._inbound) < LENGTH_SIZE + size:
            return False
        message = bytes(self._inbound[LENGTH_SIZE : LENGTH_SIZE + size])
        del self._inbound[: LENGTH_SIZE + size]
        try:
            payload = self._noise.read_message(message)
            if self.role is Role.RESPONDER:
                self._queue_handshake(self._noise.write_message(b""))
        except (InvalidTag, NoiseInvalidMessage, ValueError) as exc:
            raise HandshakeFailed(f"handshake message does not verify: {exc or type(exc).__name__}") from None
        if payload:
            raise HandshakeFailed("handshake messages must carry no payload")
        self._finish_handshake()
        return True

    def _finish_handshake(self) -> None:
        # noiseprotocol keeps the split keys in its CipherStates; the record layer
        # is ours so that one call can decrypt many records without re-entering it.
        state = self._noise.noise_protocol
        self._send = TransportCipher(state.cipher_state_encrypt.k)
        self._recv = TransportCipher(state.cipher_state_decrypt.k)
        self._handshake_hash = bytes(self._noise.get_handshake_hash())

    def _records(self) -> Iterator[memoryview]:
        """Each complete buffered record (without its length), in order; consumed
        once the caller has opened them all. A record that fails to open leaves
        the buffer as it was: the channel is dead anyway."""
        if self._inbound:
            yield from self._records_in(self._inbound, 0)
        if self._held is not None:
            # receive_data completed the record buffered before the held bytes with
            # their head, so they go on at a record's start.
            yield from self._records_in(self._held, self._held_at)

    def _records_in(self, buf: bytes | bytearray, pos: int) -> Iterator[memoryview]:
        """The complete records of `buf` from `pos` (`_inbound` or the held bytes); what is left
        after them stays in, or is copied to, `_inbound`."""
        with memoryview(buf) as view:
            while len(buf) - pos >= LENGTH_SIZE:
                size = int.from_bytes(view[pos : pos + LENGTH_SIZE], "big")
                if size < TAG_SIZE:
                    raise BadRecord(f"record of {size} bytes is shorter than its tag")
                end = pos + LENGTH_SIZE + size
                if len(buf) < end:
                    break
                with view[pos + LENGTH_SIZE : end] as record:
                    yield record
                pos = end
            if buf is not self._inbound:
                self._held = None
                self._inbound += view[pos:]
        if buf is self._inbound:
            del self._inbound[:pos]

    def _seal_records(self, *, full_only: bool) -> None:
        size = len(self._plain_out)
        end = size - size % MAX_RECORD_PLAINTEXT if full_only else size
        if end:
            with memoryview(self._plain_out) as view:
                self._seal(view[:end])
            del self._plain_out[:end]

    def _defer_seal(self, plaintext: memoryview) -> None:
        """Queue the buffer `plaintext`'s records will be sealed into, and take their nonces."""
        assert self._send is not None
        records = -(-len(plaintext) // MAX_RECORD_PLAINTEXT)
        total = len(plaintext) + records * (LENGTH_SIZE + TAG_SIZE)
        out = memoryview(self.sealed.take(total) if total >= SEAL_SPARE_MIN else bytearray(total))[:total]
        self._seal_jobs.append(SealJob(self._send.key, self._send.nonce, plaintext, out))
        self._send.skip(records)
        self._wire_out.append(out)

    def _seal(self, plaintext: memoryview) -> None:
        """Seal `plaintext` as records of MAX_RECORD_PLAINTEXT bytes (the last may be
        shorter), encrypted in place into one buffer queued for sending."""
        assert self._send is not None
        n = len(plaintext)
        if not n:
            return
        records = -(-n // MAX_RECORD_PLAINTEXT)
        total = n + records * (LENGTH_SIZE + TAG_SIZE)
        out = self.sealed.take(total) if total >= SEAL_SPARE_MIN else bytearray(total)
        pos = 0
        with memoryview(out) as wire:
            for start in range(0, n, MAX_RECORD_PLAINTEXT):
                piece = plaintext[start : start + MAX_RECORD_PLAINTEXT]
                size = len(piece) + TAG_SIZE
                wire[pos : pos + LENGTH_SIZE] = size.to_bytes(LENGTH_SIZE, "big")
                self._send.seal_into(piece, wire[pos + LENGTH_SIZE : pos + LENGTH_SIZE + size])
                pos += LENGTH_SIZE + size
        self._wire_out.append(out if len(out) == total else memoryview(out)[:total])
