"""Fetches at a user's limits and after a user's mistakes: real daemons, real files.

- many small, identical and empty files under a limit of 256 open files (both daemons);
- a fetch run again repairs DEST: deleted, edited, truncated files and a deleted DEST;
- a dataset in several folders here, each at its own version.
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from linked import files_of, linked_daemons, ok

pytestmark = pytest.mark.slow


#: The open-file limit of a macOS shell, the lowest a user meets.
LOW_NOFILE = 256


def _wait_remote(cli, name: str, seq: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        heads = {d["name"]: d["head"]["seq"] for d in cli.json("ls", "--remote")["datasets"]}
        if heads.get(name) == seq:
            return
        assert time.monotonic() < deadline, f"never saw {name}@{seq} offered: {heads}"
        time.sleep(0.1)


def _wait_kept(cli, versions: int) -> None:
    deadline = time.monotonic() + 15
    while (retention := cli.json("status")["retention"])["kept"] < versions:
        assert time.monotonic() < deadline, f"retention never kept {versions} version(s): {retention}"
        time.sleep(0.1)


def test_many_files_under_a_low_open_file_limit(tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    for d in range(4):
        sub = data / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(750):
            (sub / f"{i:04}.txt").write_bytes(os.urandom(100 + i))
    same = data / "same"
    same.mkdir()
    for i in range(1500):
        (same / f"{i:04}.bin").write_bytes(b"x")
    empty = data / "empty"
    empty.mkdir()
    for i in range(500):
        (empty / f"{i:04}").write_bytes(b"")
    with linked_daemons(2, nofile=LOW_NOFILE) as (a, b):
        ok(a("share", str(data), "--name", "tiny"))
        _wait_remote(b, "tiny", 1)
        dest = tmp_path / "copy"
        fetched = b.json("fetch", "tiny", str(dest), "--timeout", "60")
        assert fetched["files_written"] == 5000
        assert files_of(dest) == files_of(data)


def test_fetch_again_repairs_dest(tmp_path: Path) -> None:
    data = tmp_path / "ds"
    (data / "train").mkdir(parents=True)
    (data / "model.pt").write_bytes(os.urandom(3_000_000))
    for i in range(20):
        (data / "train" / f"{i:02}.jpg").write_bytes(os.urandom(5_000 + i))
    with linked_daemons(2) as (a, b):
        ok(a("share", str(data), "--name", "ds"))
        _wait_remote(b, "ds", 1)
        dest = tmp_path / "copy"
        b.json("fetch", "ds", str(dest), "--timeout", "30")
        assert files_of(dest) == files_of(data)

        (dest / "train" / "03.jpg").unlink()
        (dest / "train" / "04.jpg").write_bytes(b"edited by hand")
        with open(dest / "model.pt", "r+b") as f:
            f.truncate(1_000_000)
        again = b.json("fetch", "ds", str(dest), "--timeout", "30")
        assert files_of(dest) == files_of(data)
        assert again["files_written"] == 3
        # The big file's first megabyte was still here: only the rest moved.
        assert again["bytes_received"] < 2_500_000

        # An edit that keeps the size is caught by its new mtime and ctime.
        with open(dest / "train" / "05.jpg", "r+b") as f:
            f.write(b"\0" * 16)
        assert b.json("fetch", "ds", str(dest), "--timeout", "30")["files_written"] == 1
        assert files_of(dest) == files_of(data)

        _wait_remote(a, "ds", 1)  # B offers what it fetched
        shutil.rmtree(dest)
        assert b.json("ls")["datasets"][0]["present"] is False
        ok(b("daemon", "stop"))
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "x").write_text("B's own")
        ok(b("share", str(tmp_path / "other")))  # starts B again; A hears B's catalog once it has "other"
        _wait_remote(a, "other", 1)
        assert [d["name"] for d in a.json("ls", "--remote")["datasets"]] == ["other"], "B offers a folder that is gone"
        rebuilt = b.json("fetch", "ds", str(dest), "--timeout", "30")
        assert b.json("ls")["datasets"][0]["present"] is True
        assert files_of(dest) == files_of(data)
        assert rebuilt["files_written"] == 21

        untouched = b.json("fetch", "ds", str(dest), "--timeout", "30", "--verify")
        assert untouched["files_written"] == 0 and untouched["bytes_received"] == 0


def test_one_dataset_in_several_folders(tmp_path: Path) -> None:
    data = tmp_path / "ds"
    data.mkdir()
    (data / "weights.bin").write_bytes(os.urandom(2_000_000))
    (data / "config.json").write_text('{"lr": 0.1}')
    with linked_daemons(2) as (a, b):
        ok(a("share", str(data), "--name", "ds"))
        first = files_of(data)
        # Kept before it is edited: @1 then stays servable from the pack store.
        _wait_kept(a, 1)
        (data / "config.json").write_text('{"lr": 0.01}')
        (data / "notes.txt").write_text("second run")
        ok(a("share", str(data), "--name", "ds"))
        second = files_of(data)
        _wait_remote(b, "ds", 2)

        one, two = tmp_path / "at1", tmp_path / "at2"
        b.json("fetch", "ds@2", str(two), "--timeout", "30")
        at1 = b.json("fetch", "ds@1", str(one), "--timeout", "30")
        assert files_of(one) == first and files_of(two) == second
        # The second folder's weights came from the first one, not the network.
        assert at1["bytes_received"] < 100_000

        # The publisher can keep its own checkout of an older version too.
        mine = tmp_path / "publisher-at1"
        a.json("fetch", "ds@1", str(mine), "--timeout", "30")
        assert files_of(mine) == first
        assert a.json("ls")["datasets"][0]["head"]["seq"] == 2

        # Each folder keeps its version when the other is fetched again.
        b.json("fetch", "ds@2", str(two), "--timeout", "30")
        assert files_of(one) == first and files_of(two) == second
        checkouts = {c["path"]: c["version"]["seq"] for c in b.json("ls")["datasets"][0]["checkouts"]}
        assert checkouts == {str(one): 1, str(two): 2}
