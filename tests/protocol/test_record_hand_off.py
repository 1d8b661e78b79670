"""Lending a large frame's records to other code (the daemon's record pump) and taking them
back; deferring a run's seals to other code.

The borrower here keeps the pump's contract without its socket: open whole
records in order into the room, stop before a record that does not fit or does
not open, hand back the rest.
"""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal.protocol.errors import LocalProtocolError
from shoal.protocol.wire.channel import (
    LENGTH_SIZE,
    MAX_RECORD,
    MAX_RECORD_PLAINTEXT,
    TAG_SIZE,
    RecordHandOff,
    RecordOpener,
    SealJob,
    TransportCipher,
)
from shoal.protocol.wire.connection import NEED_DATA, Connection, ConnectionClosed, MessageReceived
from shoal.protocol.wire.messages import DataRuns, GetRuns, Ping, Pong, Run
from tests.protocol.test_connection import deliver, drain, open_pair

RUN_SIZE = 3 * 1024 * 1024 + 12345
FIRST = bytes([0xAB]) * 32
WIRE_SIZE = LENGTH_SIZE + MAX_RECORD + 256 * 1024


def borrow(room: memoryview, handoff: RecordHandOff, wire: bytearray, more: bytes) -> tuple[int, int, bytes]:
    """Open what `wire` holds and `more` brings, as the pump does: (records, written, left)."""
    data = bytes(wire[: handoff.have]) + more
    aead = AESGCM(handoff.key)
    pos = records = written = 0
    while len(data) - pos >= LENGTH_SIZE:
        size = int.from_bytes(data[pos : pos + LENGTH_SIZE], "big")
        if size < TAG_SIZE or len(data) - pos < LENGTH_SIZE + size or size - TAG_SIZE > len(room) - written:
            break
        nonce = bytes(4) + (handoff.nonce + records).to_bytes(8, "big")
        try:
            plain = aead.decrypt(nonce, data[pos + LENGTH_SIZE : pos + LENGTH_SIZE + size], None)
        except InvalidTag:
            break
        room[written : written + len(plain)] = plain
        written += len(plain)
        records += 1
        pos += LENGTH_SIZE + size
    return records, written, data[pos:]


def asked_for_run(size: int) -> tuple[Connection, Connection]:
    """(receiver, sender), the receiver having asked for one run of `size` bytes."""
    receiver, sender = open_pair()
    request = GetRuns(7, (Run((FIRST,), (size,)),))
    receiver.send(request)
    assert deliver(receiver, sender) == [MessageReceived(request)]
    return receiver, sender


def large_frame_pair(size: int = RUN_SIZE) -> tuple[Connection, Connection, bytes, bytes]:
    """(sender, receiver, the run's bytes, the wire bytes of DATA_RUNS then a PING), the receiver
    asked for the run of `size` bytes."""
    receiver, sender = asked_for_run(size)
    run = os.urandom(size)
    sender.send_data_runs(7, (FIRST,), bytearray(run))
    sender.send(Ping(5))
    return sender, receiver, run, bytes(sender.data_to_send())


def test_a_large_frames_records_opened_elsewhere_arrive_as_the_same_message() -> None:
    sender, receiver, run, stream = large_frame_pair()
    # The first read holds the frame's header and a partial record: the frame is then a large one.
    room, handoff, wire = lend_after(receiver, stream[:100_000])
    assert handoff.have == receiver_buffered_before(stream[:100_000])
    assert 0 < len(room) < RUN_SIZE + 100
    records, written, left = borrow(room, handoff, wire, stream[100_000:])
    # The borrower stopped where the frame ends: the last record holds its end and the PING.
    assert records > 40 and written < len(room) and left
    receiver.take_back_records(records, written, left)
    assert drain(receiver) == [MessageReceived(DataRuns(7, (FIRST,), run))]
    assert receiver.next_event() is NEED_DATA
    # The PING after the frame was opened in Python and answered.
    assert deliver(receiver, sender) == [MessageReceived(Pong(5))]


def lend_after(receiver: Connection, head: bytes) -> tuple[memoryview, RecordHandOff, bytearray]:
    """Feed `head` (a large frame's start), then lend the records: (room, hand-off, wire buffer)."""
    receiver.receive_data(head)
    assert drain(receiver) == []
    wire = bytearray(WIRE_SIZE)
    lent = receiver.hand_off_records(wire)
    assert lent is not None
    return lent[0], lent[1], wire


def receiver_buffered_before(head: bytes) -> int:
    """Bytes of `head` after its last whole record: what the channel holds unopened."""
    pos = 0
    while len(head) - pos >= LENGTH_SIZE:
        size = int.from_bytes(head[pos : pos + LENGTH_SIZE], "big")
        if len(head) - pos < LENGTH_SIZE + size:
            break
        pos += LENGTH_SIZE + size
    return len(head) - pos


def test_records_after_a_hand_off_open_with_the_nonces_that_follow() -> None:
    sender, receiver, run, stream = large_frame_pair()
    room, handoff, wire = lend_after(receiver, stream[:70_000])
    records, written, left = borrow(room, handoff, wire, stream[70_000:])
    receiver.take_back_records(records, written, left)
    assert drain(receiver) == [MessageReceived(DataRuns(7, (FIRST,), run))]
    assert deliver(receiver, sender) == [MessageReceived(Pong(5))]
    # Records sealed after the run open in Python with the nonces after the borrowed ones.
    sender.send(Ping(9))
    assert deliver(sender, receiver) == []
    assert deliver(receiver, sender) == [MessageReceived(Pong(9))]


def test_no_hand_off_without_a_large_frame_on_the_way() -> None:
    receiver, sender = open_pair()
    wire = bytearray(WIRE_SIZE)
    assert receiver.hand_off_records(wire) is None
    sender.send(Ping(1))
    data = sender.data_to_send()
    receiver.receive_data(data[:-3])
    assert drain(receiver) == []
    assert receiver.hand_off_records(wire) is None


def test_a_record_that_does_not_open_elsewhere_closes_the_connection_as_in_python() -> None:
    _, receiver, _, stream = large_frame_pair()
    room, handoff, wire = lend_after(receiver, stream[:100_000])
    tampered = bytearray(stream[100_000:])
    tampered[300_000] ^= 0x01
    records, written, left = borrow(room, handoff, wire, bytes(tampered))
    assert 0 < records < 40
    receiver.take_back_records(records, written, left)
    (closed,) = drain(receiver)
    assert isinstance(closed, ConnectionClosed) and closed.error_code == "bad-record"


def test_reading_on_while_records_are_lent_is_a_local_error() -> None:
    _, receiver, _, stream = large_frame_pair()
    room, _, wire = lend_after(receiver, stream[:100_000])
    assert receiver.hand_off_records(wire) is None
    with pytest.raises(LocalProtocolError):
        receiver.next_event()
    with pytest.raises(LocalProtocolError):
        receiver.receive_data(b"more")
    with pytest.raises(LocalProtocolError):
        receiver.take_back_records(0, len(room) + 1, b"")
    receiver.take_back_records(0, 0, bytes(wire[: receiver_buffered_before(stream[:100_000])]))
    with pytest.raises(LocalProtocolError):
        receiver.take_back_records(0, 0, b"")


def test_deferred_seals_run_elsewhere_give_the_peer_the_same_messages() -> None:
    receiver, sender = asked_for_run(RUN_SIZE)
    sender.defer_seals()
    data = bytearray(os.urandom(RUN_SIZE))
    sender.send_data_runs(7, (FIRST,), data)
    sender.send(Ping(3))
    jobs = sender.take_seal_jobs()
    # The run's whole records wait for their job; the frame's head and tail did not.
    (job,) = jobs
    assert len(job.plaintext) % MAX_RECORD_PLAINTEXT == 0 and len(job.plaintext) > RUN_SIZE - 2 * MAX_RECORD_PLAINTEXT
    assert sender.take_seal_jobs() == []
    job.run()
    assert deliver(sender, receiver) == [MessageReceived(DataRuns(7, (FIRST,), bytes(data)))]
    assert deliver(receiver, sender) == [MessageReceived(Pong(3))]
    # Records sealed inline after the deferred ones carry the nonces after theirs.
    sender.send(Ping(4))
    assert deliver(sender, receiver) == []
    assert deliver(receiver, sender) == [MessageReceived(Pong(4))]


def test_deferred_seals_not_taken_are_run_before_sending() -> None:
    receiver, sender = asked_for_run(RUN_SIZE)
    sender.defer_seals()
    data = bytearray(os.urandom(RUN_SIZE))
    sender.send_data_runs(7, (FIRST,), data)
    assert deliver(sender, receiver) == [MessageReceived(DataRuns(7, (FIRST,), bytes(data)))]
    assert sender.take_seal_jobs() == []


@pytest.mark.parametrize("size", [1, MAX_RECORD_PLAINTEXT, 3 * MAX_RECORD_PLAINTEXT + 5])
def test_a_seal_job_writes_records_that_open_in_order(size: int) -> None:
    key, plaintext = os.urandom(32), os.urandom(size)
    records = -(-size // MAX_RECORD_PLAINTEXT)
    out = bytearray(size + records * (LENGTH_SIZE + TAG_SIZE))
    SealJob(key, 41, memoryview(plaintext), memoryview(out)).run()
    opener = TransportCipher(key, 41)
    pos, opened = 0, b""
    for _ in range(records):
        length = int.from_bytes(out[pos : pos + LENGTH_SIZE], "big")
        opened += opener.open(bytes(out[pos + LENGTH_SIZE : pos + LENGTH_SIZE + length]))
        pos += LENGTH_SIZE + length
    assert pos == len(out) and opened == plaintext


@pytest.mark.parametrize("tamper", [None, 20_000, 700_000, 3_000_000])
def test_the_record_opener_stops_where_a_borrower_must(tamper: int | None) -> None:
    _, receiver, _, stream = large_frame_pair()
    room, handoff, wire = lend_after(receiver, stream[:100_000])
    rest = bytearray(stream[100_000:])
    if tamper is not None:
        rest[tamper] ^= 0x01
    expected = borrow(memoryview(bytearray(len(room))), handoff, wire, bytes(rest))
    data = bytes(wire[: handoff.have]) + bytes(rest)
    opener = RecordOpener(handoff, room)
    pos = opener.open(memoryview(data), 0)
    assert (opener.records, opener.written, data[pos:]) == expected
    # It stops before the record holding the frame's end (past the room), or the tampered one.
    assert opener.blocked
    receiver.take_back_records(opener.records, opener.written, data[pos:])
    events = drain(receiver)
    if tamper is None:
        assert isinstance(events[0], MessageReceived) and isinstance(events[0].message, DataRuns)
    else:
        assert len(events) == 1 and isinstance(events[0], ConnectionClosed) and events[0].error_code == "bad-record"
