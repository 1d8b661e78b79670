"""The bottleneck a transfer reports comes from measured busy time, interval by interval."""

from pathlib import Path

import pytest

from shoal.daemon.fetch.state import FetchSpec, PeerStats, Transfer

NO_CAPS = {"rate limit (receiver)": 0, "rate limit (sender)": 0}
MB = 1_000_000


def running(phase: str = "data") -> Transfer:
    transfer = Transfer(FetchSpec("ds", None, Path("/tmp/x")))
    transfer.phase = phase
    transfer.peers["P"] = PeerStats()
    transfer._sample_bottleneck(100.0, 0.0, NO_CAPS)
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
    transfer._sample_bottleneck(101.0, 0.0, NO_CAPS)
    assert transfer.bottleneck == expected
    assert transfer.to_json()["bottleneck"] == expected


def test_only_the_latest_interval_counts() -> None:
    transfer = running()
    transfer.busy.hashing += 0.95
    transfer._sample_bottleneck(101.0, 0.0, NO_CAPS)
    assert transfer.bottleneck == "hashing"
    transfer._sample_bottleneck(102.0, 0.0, NO_CAPS)
    assert transfer.bottleneck == "network"


def test_no_peer_and_pause_are_named_as_such() -> None:
    waiting = running(phase="resolving")
    waiting._sample_bottleneck(101.0, 0.0, NO_CAPS)
    assert waiting.bottleneck == "waiting for peers"
    dropped = running()
    dropped.peers["P"].dropped = "sent wrong bytes"
    dropped._sample_bottleneck(101.0, 0.0, NO_CAPS)
    assert dropped.bottleneck == "waiting for peers"
    paused = running()
    paused.pause()
    paused.busy.hashing += 0.99
    paused._sample_bottleneck(101.0, 0.0, NO_CAPS)
    assert paused.bottleneck == "paused"


@pytest.mark.parametrize(
    "received, ours, theirs, expected",
    [
        (1.9 * MB, 2 * MB, 0, "rate limit (receiver)"),
        (1.9 * MB, 0, 2 * MB, "rate limit (sender)"),
        (1.9 * MB, 8 * MB, 2 * MB, "rate limit (sender)"),
        (1.9 * MB, 2 * MB, 8 * MB, "rate limit (receiver)"),
        (1.0 * MB, 2 * MB, 2 * MB, "network"),
        (50 * MB, 0, 0, "network"),
    ],
)
def test_a_cap_the_data_arrives_at_is_named_the_lower_of_both_sides(received, ours, theirs, expected) -> None:
    transfer = running()
    transfer._sample_bottleneck(101.0, received, {"rate limit (receiver)": ours, "rate limit (sender)": theirs})
    assert transfer.bottleneck == expected


def test_a_transfer_waiting_for_a_peer_shows_no_rate_nor_eta_and_says_why() -> None:
    transfer = running()
    transfer.bytes_total, transfer.rate = 10 * MB, 2.0 * MB
    assert transfer.to_json()["eta"] == 5.0
    assert not transfer.stalled(), "the first look has nothing to compare with"
    assert transfer.stalled()
    transfer.starve("waiting for a peer that has ds@1 (gpu-box is offline since 10:42)")
    shown = transfer.to_json()
    assert (shown["rate"], shown["eta"], shown["bottleneck"]) == (0, None, "waiting for peers")
    assert shown["waiting"] == "waiting for a peer that has ds@1 (gpu-box is offline since 10:42)"
    transfer.bytes_done += 1
    assert not transfer.stalled()


def test_a_sender_cap_whose_data_arrives_in_bursts_is_named_at_every_sample_once_the_window_fills() -> None:
    # A capped sender pays for 16 chunks, then sends them: 4 MB every 2 s at 2 MB/s, sampled every 0.5 s.
    transfer = running()
    caps = {"rate limit (receiver)": 0, "rate limit (sender)": 2 * MB}
    seen = []
    for step in range(40):
        now = 100.0 + step * 0.5
        if step % 4 == 3:
            transfer.bytes_received += 4 * MB
        transfer._sample_bottleneck(now, transfer._window_rate(now), caps)
        seen.append(transfer.bottleneck)
    assert set(seen[16:]) == {"rate limit (sender)"}, seen
