"""The only peer leaving while a fetch downloads the manifest, between real daemons: the
fetch waits for a peer up to its timeout, as it does during the data, then fails with
the no-peer error that names the peers by their trust names (issue 19, loose ends 2 and 3)."""

from pathlib import Path

import pytest
from linked import linked_daemons, ok, write_files
from test_honest import background, transfer_of, wait_for

pytestmark = pytest.mark.slow

FILES = 3000


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
        wait_for("the manifest to download", lambda: (t := transfer_of(receiver)) and t["phase"] == "manifest")

        ok(sender("daemon", "stop"))
        _, stderr = fetch.communicate(timeout=60)
        assert fetch.returncode == 6, stderr
        lines = stderr.splitlines()
        assert any(line.startswith("waiting for a peer that has many@1 (peer0 is offline since ") for line in lines), stderr
        assert lines[-1].startswith("shoal: no trusted peer has many@1 (peer0 is offline since "), stderr
        assert "waited 3s" in lines[-1] and "`shoal peers`" in lines[-1], stderr
        assert short_id not in stderr, stderr
