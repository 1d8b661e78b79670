"""The keepalive rule (SPEC "Keepalive"), clock-free: times are passed in."""

import pytest

from shoal.protocol.wire.liveness import Liveness, PeerTimedOut
from shoal.protocol.wire.messages import Ping


def test_a_silent_peer_gets_pings_then_is_given_up() -> None:
    live = Liveness(100.0, interval=30, max_unanswered=3)
    assert live.deadline(inside_frame=False) == 130
    assert live.expire(129.9, inside_frame=False) is None
    assert live.expire(130, inside_frame=False) == Ping(1)
    assert live.deadline(inside_frame=False) == 160
    assert live.expire(160, inside_frame=False) == Ping(2)
    assert live.expire(190, inside_frame=False) == Ping(3)
    assert live.unanswered == 3
    assert live.expire(219, inside_frame=False) is None
    with pytest.raises(PeerTimedOut, match="120s") as raised:
        live.expire(220, inside_frame=False)
    assert raised.value.code == "timeout"


def test_anything_heard_resets_the_count() -> None:
    live = Liveness(0.0, interval=30, max_unanswered=3)
    assert live.expire(30, inside_frame=False) == Ping(1)
    assert live.expire(60, inside_frame=False) == Ping(2)
    live.heard(61)
    assert live.unanswered == 0
    assert live.deadline(inside_frame=False) == 91
    assert live.expire(91, inside_frame=False) == Ping(3)  # nonces keep counting


def test_a_peer_stalled_inside_a_frame_is_given_up_after_one_interval() -> None:
    live = Liveness(0.0, interval=30, max_unanswered=3)
    live.heard(10)
    assert live.deadline(inside_frame=True) == 40
    assert live.expire(39, inside_frame=True) is None
    with pytest.raises(PeerTimedOut, match="middle of a frame"):
        live.expire(40, inside_frame=True)


def test_a_frame_that_keeps_coming_is_not_a_stall() -> None:
    live = Liveness(0.0, interval=30, max_unanswered=3)
    for now in range(20, 400, 20):
        live.heard(now)
        assert live.expire(now + 29, inside_frame=True) is None
