"""A chunk a version holds at several places crosses the network once, between real
daemons: a file with a long zero-filled region (every max-size chunk of zeros has the
same id), and the same block in two files; a fetch of them killed half way resumes
(issue 19, loose end 1)."""

import os
import signal
from pathlib import Path

import pytest
from linked import files_of, linked_daemons, ok
from test_honest import background, wait_for
from test_lost_manifest_peer import ended_or

from shoal.home import running_pid

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


def test_a_fetch_of_repeated_chunks_killed_half_way_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros"
    zeros.mkdir()
    with open(zeros / "disk.img", "wb") as f:
        f.write(os.urandom(3 * MiB))
        f.write(bytes(32 * MiB))
        f.write(os.urandom(3 * MiB))
    with linked_daemons(2) as (sender, receiver):
        ok(sender("share", str(zeros)))
        ok(sender("config", "set", "bandwidth.global_limit", "2MB/s"))
        fetch = background(receiver, "fetch", "zeros", str(tmp_path / "got"))
        wait_for("a first MiB to arrive", lambda: ended_or(fetch, receiver, lambda t: t["bytes_received"] >= MiB))
        assert fetch.poll() is None, fetch.communicate()
        pid = running_pid(receiver.home)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        fetch.communicate(timeout=30)

        ok(receiver("daemon", "start"))
        ok(sender("config", "set", "bandwidth.global_limit", "0"))
        wait_for("the sender to be online again", lambda: [p["state"] for p in receiver.json("peers")["peers"]] == ["online"])
        got = receiver.json("fetch", "zeros", str(tmp_path / "got"))
        assert files_of(tmp_path / "got") == files_of(zeros)
        assert got["bytes_received"] < 8 * MiB, got
