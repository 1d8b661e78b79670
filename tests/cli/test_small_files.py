"""A fetch of many small files, each written whole by one write (fetch/writer.py): a
receiver killed with SIGKILL half way shows only complete files, each with its mode,
and the next fetch completes the folder."""

import os
import stat
import time
from pathlib import Path

import pytest
from test_faults import NAME, Pair, daemon_pid, finish, kill_hard, start_fetch, transfers, wait_until
from trees import PARTIAL, digests

from shoal.client.blocking import ControlClient
from shoal.home import socket_path

pytestmark = pytest.mark.slow

FILES = 3000
FOLDERS = 30
#: Modes other than the default that some files carry, each kept on the receiver less its umask.
MODES = {7: 0o755, 11: 0o600, 13: 0o664}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_small_files(root: Path) -> dict[str, int]:
    """FILES files of 1..40 KB in FOLDERS folders; returns each file's permission bits."""
    modes = {}
    for i in range(FILES):
        folder = root / f"{i % FOLDERS:02}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05}.bin"
        path.write_bytes(os.urandom(1000 + (i * 7919) % 40_000))
        mode = next((m for k, m in MODES.items() if i % k == 0), 0o644)
        path.chmod(mode)
        modes[f"{i % FOLDERS:02}/{i:05}.bin"] = mode
    return modes


def assert_complete_with_modes(dest: Path, original: dict[str, str], modes: dict[str, int]) -> dict[str, str]:
    """Every file in DEST is a whole file of the version, with the version's mode less the umask."""
    present = digests(dest)
    assert set(present) <= set(original), sorted(set(present) - set(original))[:5]
    wrong = sorted(p for p, d in present.items() if d != original[p])
    assert not wrong, f"half-written or wrong files in DEST: {wrong[:5]}"
    mask = _umask()
    bad = {p: oct(stat.S_IMODE(os.lstat(dest / p).st_mode)) for p in present
           if stat.S_IMODE(os.lstat(dest / p).st_mode) != modes[p] & ~mask}
    assert not bad, f"files with the wrong mode: {sorted(bad.items())[:5]}"
    return present


def freeze_sender_midway(pair: Pair) -> dict:
    """Freeze A once B has received a third of the bytes; B's transfer once it has settled."""
    with ControlClient.connect(socket_path(pair.b.home)) as client:
        wait_until(lambda: _received_share(client.call("status", timeout=10)["transfers"]) >= 0.35, 60,
                   "a third of the bytes to arrive")
    pair.freeze(pair.pid_a)
    previous = None
    while True:
        time.sleep(0.3)
        current = transfers(pair.b)
        assert current, "B's transfer vanished while A was frozen"
        snapshot = (current[0]["bytes_done"], current[0]["files_done"])
        if snapshot == previous:
            return current[0]
        previous = snapshot


def _received_share(current: list[dict]) -> float:
    if not current or not current[0]["bytes_total"]:
        return 0.0
    return current[0]["bytes_received"] / current[0]["bytes_total"]


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def test_many_small_files_killed_half_way_show_only_whole_files_and_resume(pair: Pair, tmp_path: Path) -> None:
    root = tmp_path / "data"
    modes = make_small_files(root)
    original = digests(root)
    version = pair.share(root)
    dest = tmp_path / "copy"
    fetch = start_fetch(pair.b, dest, "--timeout", "30")
    first = freeze_sender_midway(pair)
    # Files written whole wait beside DEST until the whole manifest is checked.
    waiting = [p for p in (dest / PARTIAL).iterdir() if p.suffix == ".part"]
    assert waiting and first["bytes_done"] < first["bytes_total"], first

    kill_hard(pair.homes[1], daemon_pid(pair.b))
    pair.thaw(pair.pid_a)
    code, out, _ = finish(fetch, 15)
    assert code != 0 and out == ""
    assert len(assert_complete_with_modes(dest, original, modes)) < len(original)

    started = pair.b("daemon", "start")
    assert started.returncode == 0, started.stderr
    second = pair.b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert second["version"]["id"] == version["id"]
    assert assert_complete_with_modes(dest, original, modes) == original
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    assert pair.b.json("verify", NAME)["ok"] is True
    # What was written before the kill was checked and kept, not fetched again.
    assert second["bytes_received"] <= first["bytes_total"] - first["bytes_done"] + 0.05 * first["bytes_total"]
