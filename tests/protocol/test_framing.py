"""Length-prefixed frames: encoding, incremental decoding, and the size limit."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.protocol.errors import FrameTooLarge, LocalProtocolError, ProtocolError
from shoal.protocol.wire.framing import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    OWN_BUFFER_SIZE,
    SPARE_BUFFERS,
    SPARE_SIZE,
    FrameDecoder,
    encode_frame,
)


def frames_of(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_encode_frame_prefixes_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(bytearray(300)) == b"\x00\x00\x01\x2c" + bytes(300)
    assert encode_frame(memoryview(b"xyz")[1:]) == b"\x00\x00\x00\x02yz"


def test_encode_frame_refuses_oversized_payload() -> None:
    assert encode_frame(bytes(10), max_size=10) == b"\x00\x00\x00\x0a" + bytes(10)
    with pytest.raises(LocalProtocolError):
        encode_frame(bytes(11), max_size=10)


def test_decoder_yields_frames_fed_one_byte_at_a_time() -> None:
    wire = encode_frame(b"first") + encode_frame(b"") + encode_frame(b"third")
    decoder = FrameDecoder()
    frames = []
    for byte in wire:
        decoder.feed(bytes([byte]))
        frames += frames_of(decoder)
    assert frames == [b"first", b"", b"third"]
    assert decoder.buffered == 0


def test_decoder_holds_a_partial_frame_until_complete() -> None:
    wire = encode_frame(b"payload")
    decoder = FrameDecoder()
    decoder.feed(wire[:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == len(wire) - 1
    decoder.feed(wire[-1:])
    assert decoder.next_frame() == b"payload"


def test_decoder_refuses_oversized_declared_length_before_the_payload_arrives() -> None:
    decoder = FrameDecoder(max_size=1000)
    decoder.feed((1001).to_bytes(HEADER_SIZE, "big"))
    with pytest.raises(FrameTooLarge) as caught:
        decoder.next_frame()
    assert caught.value.code == "frame-too-large"


def test_decoder_default_limit_is_max_frame_size() -> None:
    decoder = FrameDecoder()
    decoder.feed(MAX_FRAME_SIZE.to_bytes(HEADER_SIZE, "big"))
    assert decoder.next_frame() is None
    decoder = FrameDecoder()
    decoder.feed((MAX_FRAME_SIZE + 1).to_bytes(HEADER_SIZE, "big"))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_any_split_of_the_stream_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(p) for p in payloads)
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    decoder = FrameDecoder()
    frames = []
    for start, end in zip(bounds, bounds[1:]):
        decoder.feed(wire[start:end])
        frames += frames_of(decoder)
    assert frames == payloads


@given(st.lists(st.binary(max_size=64), max_size=10))
def test_random_bytes_only_ever_raise_protocol_errors(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_size=256)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            for frame in frames_of(decoder):
                assert len(frame) <= 256
    except ProtocolError:
        pass


@pytest.mark.parametrize("piece", [1000, 65519, 300_000, 5_000_000])
def test_a_large_frame_comes_whole_in_a_buffer_of_its_own(piece: int) -> None:
    """Frames of OWN_BUFFER_SIZE or more are handed out in a buffer the caller keeps,
    however the stream is cut, with the frames around them intact."""
    large = bytes(range(256)) * (OWN_BUFFER_SIZE // 256 + 17)
    payloads = [b"before", large, b"after", large[::-1], b""]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    kept: list[memoryview] = []
    fed = 0
    for start in range(0, len(stream), piece):
        decoder.feed(stream[start : start + piece])
        fed += len(stream[start : start + piece])
        while (view := decoder.next_view()) is not None:
            got.append(bytes(view))
            if not decoder.owns(view):
                kept.append(view)
            else:
                view.release()
        assert decoder.buffered == fed - sum(len(p) + HEADER_SIZE for p in got)
    assert got == payloads
    if piece < OWN_BUFFER_SIZE:  # (a feed holding a whole large frame leaves it in the shared buffer)
        assert [bytes(v) for v in kept] == [large, large[::-1]]  # still intact after later feeds


def _large_frame(decoder: FrameDecoder, payload: bytes) -> memoryview:
    """Feed `payload` as one frame, a record's worth at a time, as a connection does; its view."""
    stream = encode_frame(payload)
    view = None
    for start in range(0, len(stream), 65519):
        assert view is None
        decoder.feed(stream[start : start + 65519])
        view = decoder.next_view()
    assert view is not None and not decoder.owns(view)
    return view


def test_a_large_frame_reuses_a_buffer_no_view_refers_to_any_more() -> None:
    """A buffer is received into again once the views of its frame are gone, never while
    one is held: what a view shows stays as it was."""
    payloads = [bytes([i]) * (OWN_BUFFER_SIZE + 1000 * i) for i in range(SPARE_BUFFERS + 2)]
    decoder = FrameDecoder()
    first = _large_frame(decoder, payloads[0])
    buffer = id(first.obj)  # (the buffer itself, held here, would count as in use)
    run = first[10:20]  # a run cut from the frame holds the buffer as the frame's view does
    del first
    held = [run] + [_large_frame(decoder, p) for p in payloads[1:]]
    assert len({id(view.obj) for view in held}) == len(held)
    assert [bytes(view) for view in held[1:]] == payloads[1:] and bytes(run) == payloads[0][10:20]
    del run, held
    again = _large_frame(decoder, payloads[3])
    assert id(again.obj) == buffer and bytes(again) == payloads[3]


def test_cleared_spares_or_frames_larger_than_a_spare_leave_no_buffer_kept() -> None:
    decoder = FrameDecoder()
    _large_frame(decoder, b"a" * OWN_BUFFER_SIZE).release()
    assert len(decoder.spares) == 1
    decoder.spares.clear()
    assert len(decoder.spares) == 0
    huge = _large_frame(decoder, b"c" * (SPARE_SIZE + 1))
    assert len(huge.obj) == SPARE_SIZE + 1 and bytes(huge) == b"c" * (SPARE_SIZE + 1)
    assert len(decoder.spares) == 0


def test_small_frames_arriving_a_record_at_a_time_move_little(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames of a small file each, fed as records of 64 KiB: the unread tail is moved
    to the front of the buffer once every many records, not before nearly every one."""
    moved = []
    compact = FrameDecoder._compact

    def counted(self: FrameDecoder) -> None:
        moved.append(self._end - self._pos)
        compact(self)

    monkeypatch.setattr(FrameDecoder, "_compact", counted)
    payloads = [bytes([i % 251]) * (60_000 + (i * 7919) % 3000) for i in range(500)]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got = []
    records = range(0, len(stream), 65519)
    for start in records:
        decoder.feed(stream[start : start + 65519])
        while (view := decoder.next_view()) is not None:
            with view:
                got.append(bytes(view))
    assert got == payloads
    assert len(moved) * 8 < len(records), (len(moved), len(records))
    assert sum(moved) * 8 < len(stream)
