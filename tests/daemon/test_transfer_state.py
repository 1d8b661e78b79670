"""The bottleneck a transfer reports comes from measured busy time, interval by interval."""

from pathlib import Path

import pytest

from shoal.daemon.fetch.state import FetchSpec, PeerStats, Transfer


def running(phase: str = "data") -> Transfer:
    transfer = Transfer(FetchSpec("ds", None, Path("/tmp/x")))
    transfer.phase = phase
    transfer.peers["P"] = PeerStats()
    transfer._sample_bottleneck(100.0)
    return transfer


@pytest.mark.parametrize(
    "hashing, writing, reading, expected",
    [
        (0.9, 0.05, 0.0, "hashing"),
        (0.1, 0.85, 0.0, "disk write"),
        (0.0, 0.0, 0.95, "disk read"),
        (0.2, 0.3, 0.1, "network"),
    ],
)
def test_the_busiest_stage_over_the_last_interval_is_named(hashing, writing, reading, expected) -> None:
    transfer = running()
    transfer.busy.hashing += hashing
    transfer.busy.disk_write += writing
    transfer.busy.disk_read += reading
    transfer._sample_bottleneck(101.0)
    assert transfer.bottleneck == expected
    assert transfer.to_json()["bottleneck"] == expected


def test_only_the_latest_interval_counts() -> None:
    transfer = running()
    transfer.busy.hashing += 0.95
    transfer._sample_bottleneck(101.0)
    assert transfer.bottleneck == "hashing"
    transfer._sample_bottleneck(102.0)
    assert transfer.bottleneck == "network"


def test_no_peer_and_pause_are_named_as_such() -> None:
    waiting = running(phase="resolving")
    waiting._sample_bottleneck(101.0)
    assert waiting.bottleneck == "waiting for peers"
    dropped = running()
    dropped.peers["P"].dropped = "sent wrong bytes"
    dropped._sample_bottleneck(101.0)
    assert dropped.bottleneck == "waiting for peers"
    paused = running()
    paused.pause()
    paused.busy.hashing += 0.99
    paused._sample_bottleneck(101.0)
    assert paused.bottleneck == "paused"
