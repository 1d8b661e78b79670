"""bandwidth.global_limit and bandwidth.per_peer_limit cap real transfers between real daemons."""

import os
from pathlib import Path

import pytest
from linked import linked_daemons, ok

pytestmark = pytest.mark.slow


MB = 1_000_000
SIZE = 6 * MB
LIMIT = 2 * MB


def fetch_seconds(cli, name: str, dest: Path) -> float:
    fetched = cli.json("fetch", name, str(dest), "--timeout", "60")
    assert fetched["bytes_received"] >= SIZE
    return fetched["seconds"]


def share_random(cli, folder: Path) -> None:
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(SIZE))
    ok(cli("share", str(folder)))


def test_a_cap_on_either_side_slows_the_transfer_to_it_and_lifting_it_applies_at_once(tmp_path: Path) -> None:
    with linked_daemons(2) as (sender, receiver):
        # The receiver caps what it takes from each peer: 6 MB at 2 MB/s is about 3 s.
        ok(receiver("config", "set", "bandwidth.per_peer_limit", "2MB/s"))
        share_random(sender, tmp_path / "one")
        capped = fetch_seconds(receiver, "one", tmp_path / "got-one")
        assert capped >= 0.8 * SIZE / LIMIT, capped

        # The sender caps everything it moves, whoever asks.
        ok(receiver("config", "set", "bandwidth.per_peer_limit", "0"))
        ok(sender("config", "set", "bandwidth.global_limit", "2MB/s"))
        share_random(sender, tmp_path / "two")
        assert fetch_seconds(receiver, "two", tmp_path / "got-two") >= 0.8 * SIZE / LIMIT

        ok(sender("config", "set", "bandwidth.global_limit", "0"))
        share_random(sender, tmp_path / "three")
        free = fetch_seconds(receiver, "three", tmp_path / "got-three")
        assert free < capped / 2, (free, capped)


def test_a_capped_peer_whose_runs_take_longer_than_the_timeout_is_kept_while_its_bytes_flow(tmp_path: Path) -> None:
    with linked_daemons(2) as (sender, receiver):
        ok(sender("config", "set", "bandwidth.global_limit", "2MB/s"))
        folder = tmp_path / "slow"
        folder.mkdir()
        (folder / "weights.bin").write_bytes(os.urandom(2 * SIZE))
        ok(sender("share", str(folder)))
        # The sender serves two 4 MiB runs at once, sharing 2 MB/s: each arrives whole after
        # about 4 s, longer than the timeout, yet the peer never falls silent.
        fetched = receiver.json("fetch", "slow", str(tmp_path / "got"), "--timeout", "3")
        assert fetched["warnings"] == [] and fetched["bytes_received"] == 2 * SIZE, fetched
