"""Sharing with files held at their previous version's entry, as a watch does for files still being written.

Each expected root is built from a second folder laid out as the version should be,
by test_library's independent walk, not by the scanner.
"""

import os
import shutil
from pathlib import Path

import pytest
from test_library import expected_root, home, lib  # noqa: F401 - fixtures

from shoal.daemon.library.datasets import Library

pytestmark = pytest.mark.trio


@pytest.fixture
def run(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    (root / "logs").mkdir(parents=True)
    (root / "config.json").write_text('{"lr": 0.1}')
    (root / "logs" / "train.log").write_text("step 1\n")
    (root / "tool").write_text("#!/bin/sh\n")
    os.chmod(root / "tool", 0o755)
    os.symlink("config.json", root / "link")
    return root


def as_it_was(run: Path, tmp_path: Path) -> Path:
    """A copy of the folder as it is now, to compare a later version against."""
    copy = tmp_path / "expected"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, symlinks=True)
    return copy


async def test_held_files_keep_their_previous_entry_and_new_ones_stay_out(lib: Library, run: Path, tmp_path: Path) -> None:
    first = await lib.share(run, name="run")
    expected = as_it_was(run, tmp_path)
    with open(run / "logs" / "train.log", "a") as log:
        log.write("step 2 (half a li")
    (run / "logs" / "events.out").write_bytes(b"\x00" * 5000)
    (run / "ckpt.pt").write_bytes(os.urandom(70_000))
    os.chmod(run / "tool", 0o644)
    os.unlink(run / "link")
    os.symlink("tool", run / "link")
    shutil.copy2(run / "ckpt.pt", expected / "ckpt.pt")
    held = await lib.share(run, name="run", hold=["logs/train.log", "logs/events.out", "tool", "link"])
    assert held.created and held.version.parents == (first.version.id,)
    assert (held.version.root, held.version.size, held.version.files) == expected_root(expected)
    assert held.files_rehashed == 1, "a held file is not read at all"
    # Nothing is cached from the held scan: without the hold, every held file is seen as it is.
    released = await lib.share(run, name="run")
    assert released.created and released.version.root == expected_root(run)[0]
    assert (await lib.share(run, name="run")).created is False


async def test_a_held_file_unchanged_on_disk_and_a_held_directory(lib: Library, run: Path) -> None:
    first = await lib.share(run, name="run")
    again = await lib.share(run, name="run", hold=["logs/train.log", "logs", "config.json"])
    assert again.created is False and again.version.id == first.version.id
    (run / "logs" / "train.log").write_text("step 1\nstep 2\n")
    (run / "new-dir").mkdir()
    (run / "new-dir" / "a.bin").write_bytes(b"a" * 10)
    unchanged = await lib.share(run, name="run", hold=["logs/train.log", "new-dir"])
    # The log is held; a path that is a directory on disk is never held, so new-dir comes in whole.
    assert unchanged.created and unchanged.version.files == first.version.files + 1
    assert unchanged.version.size == first.version.size + 10


async def test_holding_on_a_first_share_leaves_the_file_out(lib: Library, run: Path) -> None:
    result = await lib.share(run, name="run", hold=["logs/train.log", "no/such/file"])
    assert result.version.files == 2 and result.version.size == len('{"lr": 0.1}') + len("#!/bin/sh\n") + len("config.json")
