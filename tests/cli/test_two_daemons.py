"""The two-machine walkthrough, as a user types it: two real daemons on loopback."""

import json
import os
import random
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ShoalCli, make_home, remove_home

pytestmark = pytest.mark.slow


VERSION_LINE = re.compile(r"(?P<label>[\w.-]+@\d+) (?P<id>[0-9a-f]{64})")


@pytest.fixture
def pair():
    homes = [make_home(), make_home()]
    clis = [ShoalCli(h) for h in homes]
    for cli in clis:
        started = cli("daemon", "start")
        assert started.returncode == 0, started.stderr
    yield clis
    for cli, home in zip(clis, homes):
        cli("daemon", "stop")
        remove_home(home)


def ok(process) -> str:
    assert process.returncode == 0, process.stderr
    return process.stdout


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".shoal-partial" not in p.parts
    }


def test_share_fetch_update_fetch_delta(pair, tmp_path: Path) -> None:
    a, b = pair
    data = tmp_path / "imagenet-mini"
    (data / "train").mkdir(parents=True)
    # Seeded, not os.urandom: how many chunks a 1 MiB overwrite touches depends on where
    # the content puts its cut points, and the bound below must hold every run, not most.
    rng = random.Random(14)
    (data / "model.pt").write_bytes(rng.randbytes(4_000_000))
    for i in range(30):
        (data / "train" / f"img{i:03}.jpg").write_bytes(os.urandom(20_000 + i))
    id_a, id_b = a.json("id")["peer_id"], b.json("id")["peer_id"]
    listen_a = a.json("status")["listen"]
    ok(a("trust", id_b, "--name", "laptop"))
    ok(b("trust", id_a, "--name", "gpu-box", "--addr", listen_a))

    first = VERSION_LINE.search(ok(a("share", str(data), "-m", "first"))).groupdict()
    assert first["label"] == "imagenet-mini@1"
    dest = tmp_path / "copy"
    fetched = b.json("fetch", "imagenet-mini", str(dest), "--timeout", "20")
    assert set(fetched) == {
        "version", "dest", "files_total", "bytes_total", "files_written", "files_present", "bytes_received",
        "bytes_reused", "seconds", "first_byte", "peers", "warnings", "workers",
    }
    assert fetched["workers"] == 0
    assert 0 < fetched["first_byte"] <= fetched["seconds"]
    assert fetched["version"]["id"] == first["id"]
    assert files_of(dest) == files_of(data)
    assert fetched["bytes_received"] >= 4_000_000

    remote = b.json("ls", "--remote")["datasets"]
    assert [(d["name"], d["peer_name"], d["head"]["seq"]) for d in remote] == [("imagenet-mini", "gpu-box", 1)]
    peers = {p["peer_id"]: p for p in b.json("peers")["peers"]}
    assert peers[id_a]["state"] == "online" and peers[id_a]["name"] == "gpu-box"

    with open(data / "model.pt", "r+b") as f:
        f.seek(2_000_000)
        f.write(rng.randbytes(1024 * 1024))
    (data / "train" / "img000.jpg").unlink()
    second = VERSION_LINE.search(ok(a("share", str(data), "-m", "retrained"))).groupdict()
    assert second["label"] == "imagenet-mini@2"
    delta = b.json("fetch", "imagenet-mini@2", str(dest), "--timeout", "20")
    assert delta["version"]["seq"] == 2
    assert files_of(dest) == files_of(data)
    assert delta["files_written"] == 1
    # 1 MiB changed: the changed chunks plus at most two boundary chunks cross the wire.
    assert delta["bytes_received"] <= 1024 * 1024 + 2 * 256 * 1024

    log = b.json("log", "imagenet-mini")["versions"]
    assert [v["seq"] for v in log] == [2, 1]
    assert [v["message"] for v in log] == ["retrained", "first"]
    verified = b.json("verify", "imagenet-mini")
    assert verified["ok"] is True and verified["files_checked"] == 30
    status = b.json("status")
    assert status["peers"]["online"] == 1 and status["datasets"] == 1

    # A can check out its own dataset into a second folder, as a repository pinning it would.
    roundtrip = a.json("fetch", "imagenet-mini", str(tmp_path / "roundtrip"))
    assert files_of(tmp_path / "roundtrip") == files_of(data)
    assert roundtrip["bytes_received"] == 0, "every chunk is in A's own folder"


def test_fetch_waits_then_reports_no_peer(pair, tmp_path: Path) -> None:
    _, b = pair
    process = b("fetch", "ghost", str(tmp_path / "ghost"), "--timeout", "1")
    assert process.returncode == 6
    assert process.stderr.count("\n") == 1 and "no peer has ghost: this daemon trusts no peer yet" in process.stderr
    assert not (tmp_path / "ghost").exists() or not any((tmp_path / "ghost").iterdir())


def test_dest_with_unrelated_files_is_refused(pair, tmp_path: Path) -> None:
    a, b = pair
    data = tmp_path / "ds"
    data.mkdir()
    (data / "x.bin").write_bytes(os.urandom(1000))
    ok(a("trust", b.json("id")["peer_id"]))
    ok(b("trust", a.json("id")["peer_id"], "--addr", a.json("status")["listen"]))
    ok(a("share", str(data)))
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "thesis.tex").write_text("precious")
    process = b("fetch", "ds", str(dest), "--timeout", "10")
    assert process.returncode == 2 and "not a fetch of ds" in process.stderr
    assert (dest / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in dest.iterdir()) == ["thesis.tex"]
    json.loads(b("ls", "--json").stdout)


def test_bad_fetch_requests_fail_at_once(shoal, tmp_path: Path) -> None:
    """Refusals that need no peer come before any waiting: one line, exit 2."""
    started = shoal("daemon", "start")
    assert started.returncode == 0, started.stderr
    bad = shoal("fetch", "ds", str(tmp_path / "d"), "--include", "!", "--timeout", "30")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "bad --include pattern" in bad.stderr
    readonly = tmp_path / "ro"
    readonly.mkdir()
    if os.geteuid() == 0:
        # root ignores permission bits; a read-only mount stops it all the same.
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)], check=True)
    else:
        readonly.chmod(0o500)
    try:
        denied = shoal("fetch", "ds", str(readonly / "d"), "--timeout", "30")
        assert denied.returncode == 2 and denied.stderr.count("\n") == 1, denied.stderr
        assert "not writable" in denied.stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(readonly)], check=True)
    shoal("daemon", "stop")


def test_browse_a_version_before_fetching_it(pair, tmp_path: Path) -> None:
    from shoal.client.blocking import ControlClient
    from shoal.home import socket_path

    a, b = pair
    data = tmp_path / "ds"
    (data / "train" / "cats").mkdir(parents=True)
    (data / "train" / "cats" / "1.jpg").write_bytes(os.urandom(3000))
    (data / "README").write_text("hello\n")
    os.symlink("train/cats/1.jpg", data / "first")
    ok(a("trust", b.json("id")["peer_id"]))
    ok(b("trust", a.json("id")["peer_id"], "--addr", a.json("status")["listen"]))
    ok(a("share", str(data)))

    def browse(cli: ShoalCli, **params) -> dict:
        with ControlClient.connect(socket_path(cli.home)) as client:
            return client.call("browse", {"name": "ds", "timeout": 20, **params}, timeout=30)

    local = browse(a)
    assert [(e["name"], e["type"]) for e in local["entries"]] == [("README", "file"), ("first", "symlink"), ("train", "dir")]
    remote = browse(b)
    assert remote["entries"] == local["entries"] and remote["version"]["id"] == local["version"]["id"]
    assert [e["target"] for e in remote["entries"] if e["type"] == "symlink"] == ["train/cats/1.jpg"]
    cats = browse(b, path="train/cats")
    assert cats["entries"] == [{"name": "1.jpg", "type": "file", "size": 3000, "executable": False, "target": None}]
    with pytest.raises(Exception, match="not a directory"):
        browse(b, path="README")
    listed = b("ls", "ds", "train/cats")
    assert listed.returncode == 0, listed.stderr
    assert "ds@1:/train/cats" in listed.stdout and "1.jpg" in listed.stdout and "3.0 kB" in listed.stdout
    assert b.json("ls", "ds")["entries"] == local["entries"]
    # Browsing moved manifest objects only: the fetch still receives every byte.
    fetched = b.json("fetch", "ds", str(tmp_path / "copy"), "--timeout", "20")
    assert fetched["bytes_received"] == 3000 + len("hello\n")
