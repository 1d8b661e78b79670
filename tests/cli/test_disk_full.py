"""A fetch into a destination that runs out of space, then resumes once space is freed.

DEST lives on a small tmpfs mounted for the test (root only). The tmpfs is larger
than the dataset, but a filler file written first leaves only FREE bytes, less
than the dataset: the fetch must fail with a one-line error about space (exit 1,
README's "error"), leave nothing half-written where the data belongs (only inside
DEST/.shoal-partial), and keep the daemon up. Deleting the filler frees the space;
the same fetch then resumes, completes byte-identical and does not fetch again what
was already verified in the partial files.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ShoalCli, make_home, remove_home
from trees import PARTIAL, digests
from shoal.cli.client import ControlClient
from shoal.daemon.home import socket_path

NAME = "big"
MB = 1_000_000
#: tmpfs size, filler and what is left for DEST: 64 MB free for a 100 MB dataset.
FS_SIZE = 192 * MB
FILLER = 128 * MB
FILES = 4
FILE_SIZE = 25 * MB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")






def allocated(root: Path) -> int:
    """Bytes really stored below root (sparse holes do not count)."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.fixture
def small_fs():
    mnt = Path(tempfile.mkdtemp(prefix="shoal-df-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "shoal-df", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


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

    filler = small_fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * FILLER)  # really allocated: tmpfs has no compression
    free = free_bytes(small_fs)
    assert free < 0.7 * size, free
    dest = small_fs / "dest"
    pid_b = b.json("daemon", "status")["pid"]

    # 1. Out of space.
    t0 = time.monotonic()
    first = b("fetch", NAME, str(dest), "--json", "--timeout", "30", timeout=90)
    failed_after = time.monotonic() - t0
    assert first.returncode == 1, (first.returncode, first.stdout, first.stderr)
    assert first.stdout == ""
    err = first.stderr
    assert err.count("\n") == 1 and err.startswith("shoal: ") and "Traceback" not in err, err
    # Checked at the end, so that the resume below runs anyway.
    says_space = "space" in err.lower()

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
        f" reused {second['bytes_reused'] / MB:.1f} MB from .shoal-partial, kept {len(present)} complete files, in {second['seconds']:.1f}s"
    )
    assert says_space, f"the error does not say the disk is full: {err!r}"
