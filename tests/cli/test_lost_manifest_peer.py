"""The only peer leaving during a fetch, between real daemons: while the manifest
downloads, the fetch waits for a peer up to its timeout, as it does during the data,
then fails with the no-peer error that names the peers; either way the user reads
peers by their trust names, not short ids (issue 19, loose ends 2 and 3)."""

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from linked import linked_daemons, ok, write_files
from test_honest import background, transfer_of, wait_for

from shoal.home import running_pid

pytestmark = pytest.mark.slow

FILES = 3000


def ended_or(fetch: subprocess.Popen, cli, check: Callable[[dict], bool]) -> bool:
    """The fetch ended (what it printed then says why), or its transfer passes `check`."""
    if fetch.poll() is not None:
        return True
    transfer = transfer_of(cli)
    return transfer is not None and check(transfer)


def test_the_only_peer_leaving_during_the_manifest_is_waited_for_then_named(tmp_path: Path) -> None:
    with linked_daemons(2) as (sender, receiver):
        data = tmp_path / "many"
        # Many small files make a manifest of many tree pages and file objects, and little data.
        write_files(data, {f"d{i % 30}/f{i}.txt": 40 for i in range(FILES)})
        ok(sender("share", str(data)))
        short_id = sender.json("id")["peer_id"][:7]
        ok(sender("config", "set", "bandwidth.global_limit", "20kB/s"))
        # --include: the whole manifest is walked before the data phase starts.
        fetch = background(receiver, "fetch", "many", str(tmp_path / "got"), "--include", "d1/", "--timeout", "3")
        wait_for("the manifest to download", lambda: ended_or(fetch, receiver, lambda t: t["phase"] == "manifest"))
        assert fetch.poll() is None, fetch.communicate()

        ok(sender("daemon", "stop"))
        _, stderr = fetch.communicate(timeout=60)
        assert fetch.returncode == 6, stderr
        lines = stderr.splitlines()
        assert any(line.startswith("waiting for a peer that has many@1 (peer0 is offline since ") for line in lines), stderr
        assert lines[-1].startswith("shoal: no trusted peer has many@1 (peer0 is offline since "), stderr
        assert "waited 3s" in lines[-1] and "`shoal peers`" in lines[-1], stderr
        assert short_id not in stderr, stderr


def test_the_only_peer_killed_during_the_data_is_named_by_its_trust_name(tmp_path: Path) -> None:
    with linked_daemons(2) as (sender, receiver):
        data = tmp_path / "big"
        write_files(data, {"weights.bin": 16_000_000})
        ok(sender("share", str(data)))
        short_id = sender.json("id")["peer_id"][:7]
        ok(sender("config", "set", "bandwidth.global_limit", "2MB/s"))
        fetch = background(receiver, "fetch", "big", str(tmp_path / "got"), "--timeout", "3")
        wait_for("data to arrive", lambda: ended_or(fetch, receiver, lambda t: t["bytes_received"] > 0))
        assert fetch.poll() is None, fetch.communicate()

        # Killed, its sessions end at once with requests open (a clean stop lets them time out).
        pid = running_pid(sender.home)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, stderr = fetch.communicate(timeout=60)
        assert fetch.returncode == 6, stderr
        last = stderr.splitlines()[-1]
        assert last.startswith("shoal: every peer serving big left or failed (peer0: connection lost: "), stderr
        assert short_id not in stderr, stderr
