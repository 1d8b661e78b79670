"""A chunk a version holds at several places crosses the network once, between real
daemons: a file with a long zero-filled region (every max-size chunk of zeros has the
same id), and the same block in two files (issue 19, loose end 1)."""

import os
from pathlib import Path

import pytest
from linked import files_of, linked_daemons, ok

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def test_a_repeated_chunk_is_fetched_once_and_copied_to_its_other_places(tmp_path: Path) -> None:
    zeros, twins = tmp_path / "zeros", tmp_path / "twins"
    zeros.mkdir()
    twins.mkdir()
    with open(zeros / "disk.img", "wb") as f:
        f.write(os.urandom(MiB // 2))
        f.write(bytes(64 * MiB))
        f.write(os.urandom(MiB // 2))
    block = os.urandom(6 * MiB)
    (twins / "a.bin").write_bytes(block)
    (twins / "b.bin").write_bytes(os.urandom(MiB) + block)

    with linked_daemons(2) as (sender, receiver):
        ok(sender("share", str(zeros)))
        ok(sender("share", str(twins)))

        got = receiver.json("fetch", "zeros", str(tmp_path / "got-zeros"))
        assert files_of(tmp_path / "got-zeros") == files_of(zeros)
        # The random MiB, one 256 KiB chunk of zeros, and the chunks where zeros meet random bytes.
        assert got["bytes_received"] < 3 * MiB, got

        got = receiver.json("fetch", "twins", str(tmp_path / "got-twins"))
        assert files_of(tmp_path / "got-twins") == files_of(twins)
        # The block once, b.bin's own MiB, and the chunks where the two meet.
        assert got["bytes_received"] < 8 * MiB, got
