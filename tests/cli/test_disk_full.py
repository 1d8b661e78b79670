"""A fetch into a destination that has or keeps too little space, then resumes once space is freed.

DEST lives on a small tmpfs mounted for the test (root only). The tmpfs is larger
than the dataset. First a filler file leaves less room than the dataset: the fetch
is refused before it writes anything. Then the filler is written while a fetch runs:
the fetch must fail with a one-line error about space (exit 1, README's "error"),
leave nothing half-written where the data belongs (only inside DEST/.shoal-partial),
and keep the daemon up. Deleting the filler frees the space; the same fetch then
resumes, completes byte-identical and does not fetch again what was already
verified in the partial files.
"""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ShoalCli, make_home, remove_home
from trees import PARTIAL, digests

from shoal.client.blocking import ControlClient
from shoal.home import socket_path

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]

NAME = "big"
MB = 1_000_000
#: tmpfs size, filler and what is left for DEST: 64 MB free for a 100 MB dataset.
FS_SIZE = 192 * MB
FILLER = 128 * MB
FILES = 4
FILE_SIZE = 25 * MB


def allocated(root: Path) -> int:
    """Bytes really stored below root (sparse holes do not count)."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextmanager
def tmpfs(options: str) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="shoal-df-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "shoal-df", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


@pytest.fixture
def small_fs():
    with tmpfs(f"size={FS_SIZE}") as mnt:
        yield mnt


@pytest.fixture
def pair():
    homes = [make_home(), make_home()]
    a, b = (ShoalCli(h) for h in homes)
    try:
        for cli in (a, b):
            started = cli("daemon", "start")
            assert started.returncode == 0, started.stderr
        id_a, id_b = a.json("id")["peer_id"], b.json("id")["peer_id"]
        listen_a = a.json("status")["listen"]
        assert a("trust", id_b).returncode == 0
        assert b("trust", id_a, "--addr", listen_a).returncode == 0
        yield a, b
    finally:
        for cli, home in zip((a, b), homes):
            cli("daemon", "stop", timeout=20)
            remove_home(home)


def fill(path: Path) -> None:
    """Write zeros to `path` until the disk is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * MB)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def wait_for_landed(dest: Path, fetch: subprocess.Popen, wanted: int) -> None:
    deadline = time.monotonic() + 60
    while not (dest.exists() and allocated(dest) >= wanted):
        assert fetch.poll() is None, fetch.communicate()
        assert time.monotonic() < deadline, "the fetch never got far enough"
        time.sleep(0.05)


def test_fetch_into_full_disk_fails_cleanly_then_resumes(pair, small_fs: Path, tmp_path: Path) -> None:
    a, b = pair
    data = tmp_path / "data"
    data.mkdir()
    for i in range(FILES):
        (data / f"part{i}.bin").write_bytes(os.urandom(FILE_SIZE))
    original = digests(data)
    size = FILES * FILE_SIZE
    version = a.json("share", str(data), "--name", NAME)["version"]
    assert version["size"] == size
    dest = small_fs / "dest"
    pid_b = b.json("daemon", "status")["pid"]

    # 1. Too little room from the start: refused before anything is written.
    filler = small_fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * FILLER)  # really allocated: tmpfs has no compression
    assert free_bytes(small_fs) < 0.7 * size
    refused = b("fetch", NAME, str(dest), "--timeout", "30", timeout=90)
    assert refused.returncode == 1, (refused.returncode, refused.stdout, refused.stderr)
    assert refused.stderr.count("\n") == 1 and "free some space" in refused.stderr, refused.stderr
    assert f"needs {size:,} bytes" in refused.stderr, refused.stderr
    assert not dest.exists() or allocated(dest) == 0
    filler.unlink()

    # 2. The disk fills up while the fetch runs (slowed down so the test can catch it midway).
    assert a("config", "set", "bandwidth.global_limit", "25MB/s").returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
    fetch = subprocess.Popen(
        [sys.executable, "-m", "shoal", "--home", str(b.home), "fetch", NAME, str(dest), "--json", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    t0 = time.monotonic()
    wait_for_landed(dest, fetch, int(0.35 * size))
    fill(filler)
    out, err = fetch.communicate(timeout=90)
    failed_after = time.monotonic() - t0
    assert fetch.returncode == 1, (fetch.returncode, out, err)
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("shoal: ") and "Traceback" not in err, err
    # Checked at the end, so that the resume below runs anyway.
    says_space = "space" in err.lower()
    assert a("config", "set", "bandwidth.global_limit", "0").returncode == 0
    # Nothing half-written where the data belongs: every file outside .shoal-partial
    # is a complete, exact file of the version.
    present = digests(dest) if dest.exists() else {}
    assert set(present) <= set(original), present
    assert all(original[p] == d for p, d in present.items()), "a half-written or wrong file in DEST"
    assert len(present) < FILES
    strays = [p for p in dest.rglob("*") if p.is_file() and PARTIAL not in p.relative_to(dest).parts
              and str(p.relative_to(dest)) not in original] if dest.exists() else []
    assert not strays, strays

    # The daemon stays up, answers, and has dropped the failed transfer.
    with ControlClient.connect(socket_path(b.home)) as client:
        status = client.call("status", timeout=5)
    assert status["pid"] == pid_b
    assert status["transfers"] == []
    landed = allocated(dest) if dest.exists() else 0  # verified files + partial chunks
    assert landed > 0.3 * size, f"only {landed} bytes landed before the disk was full"

    # 2. Space is freed; the same fetch resumes.
    filler.unlink()
    second = b.json("fetch", NAME, str(dest), "--timeout", "30")
    assert second["version"]["id"] == version["id"]
    assert digests(dest) == original
    assert not (dest / PARTIAL).exists() or not any((dest / PARTIAL).iterdir())
    # What had landed (less at most one torn chunk per file and some slack) is not fetched again.
    slack = 0.05 * size
    assert second["bytes_received"] <= size - landed + slack, (landed, second)
    kept = len(present) * FILE_SIZE  # files already in place are kept, neither reused nor received
    assert kept + second["bytes_reused"] + second["bytes_received"] >= size - slack, (kept, second)
    assert b.json("verify", NAME)["ok"] is True
    assert b.json("daemon", "status")["pid"] == pid_b
    print(
        f"\ndisk full: failed after {failed_after:.1f}s with {landed / MB:.1f} MB landed of {size / MB:.0f} MB;"
        f" stderr {err.strip()!r}; resume received {second['bytes_received'] / MB:.1f} MB,"
        f" reused {second['bytes_reused'] / MB:.1f} MB from .shoal-partial, kept {len(present)} complete files,"
        f" in {second['seconds']:.1f}s"
    )
    assert says_space, f"the error does not say the disk is full: {err!r}"


def test_more_files_than_the_disk_has_inodes_for_is_refused_before_writing(pair, tmp_path: Path) -> None:
    a, b = pair
    data = tmp_path / "empties"
    data.mkdir()
    for i in range(1000):
        (data / f"{i:04}").touch()
    a.json("share", str(data), "--name", "empties")
    with tmpfs("size=16M,nr_inodes=400") as mnt:
        dest = mnt / "dest"
        refused = b("fetch", "empties", str(dest), "--timeout", "30")
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert refused.stderr.count("\n") == 1 and "needs 0 bytes in 1,000 files" in refused.stderr, refused.stderr
        assert not dest.exists() or not any(dest.iterdir())
        # Part of the folder needs room for that part only, not for every file beside it.
        part = b.json("fetch", "empties", str(mnt / "part"), "--include", "0[0-2]*", "--timeout", "30")
        assert (part["files_total"], part["files_written"]) == (300, 300)
