"""Sharing is deliberate: never the daemon's secrets, only to the chosen peers, and withdrawable.

Real daemons in temporary homes on loopback, driven through the `shoal` command.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from conftest import ShoalCli, make_home, remove_home
from test_end_to_end import one_line_error
from test_faults import wait_until


@pytest.fixture
def daemons(request):
    """`request.param` running daemons (default two), each trusting the others by address."""
    count = getattr(request, "param", 2)
    clis = [ShoalCli(make_home()) for _ in range(count)]
    try:
        for cli in clis:
            started = cli("daemon", "start")
            assert started.returncode == 0, started.stderr
        yield clis
    finally:
        for cli in clis:
            cli("daemon", "stop")
            remove_home(cli.home)


@pytest.fixture
def folder():
    root = Path(tempfile.mkdtemp(prefix="shoal-shared-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def ok(process) -> str:
    assert process.returncode == 0, process.stderr
    return process.stdout


def trust_both(a: ShoalCli, b: ShoalCli) -> None:
    id_a, id_b = a.json("id")["peer_id"], b.json("id")["peer_id"]
    ok(a("trust", id_b, "--addr", b.json("status")["listen"]))
    ok(b("trust", id_a, "--addr", a.json("status")["listen"]))


def test_share_and_watch_refuse_the_home_what_holds_it_and_what_lies_inside(daemons) -> None:
    a = daemons[0]
    inside = a.home / "inside"
    inside.mkdir()
    (inside / "file").write_bytes(b"x")
    for command in ("share", "watch"):
        one_line_error(a(command, str(a.home)), 2, "is shoal's home")
        one_line_error(a(command, str(a.home.parent), "--name", "tmp"), 2, "holds shoal's home")
        one_line_error(a(command, str(inside)), 2, "lies inside shoal's home")
    assert a.json("ls")["datasets"] == []
    assert a.json("watches")["watches"] == []


def test_a_share_leaves_out_every_identity_key_wherever_it_lies(daemons, folder: Path) -> None:
    a, b = daemons
    data = folder / "run"
    (data / "config" / "old-home").mkdir(parents=True)
    (data / "weights.bin").write_bytes(os.urandom(100_000))
    shutil.copy(a.home / "identity.key", data / "config" / "old-home" / "identity.key")
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (data / "config" / "deploy.pem").write_bytes(pem)
    (data / "config" / "notes.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key at all\n")

    shared = a("share", str(data))
    assert shared.returncode == 0, shared.stderr
    warnings = shared.stderr.splitlines()
    assert sorted(warnings) == [
        f"shoal: warning: left out config/{name}: it holds a private key, which shoal never shares; "
        "move it out of the folder"
        for name in ("deploy.pem", "old-home/identity.key")
    ]
    again = a("share", str(data))
    assert sorted(again.stderr.splitlines()) == sorted(warnings), "a later share warns again"

    trust_both(a, b)
    dest = folder / "copy"
    b.json("fetch", "run", str(dest), "--timeout", "20")
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and ".shoal-partial" not in p.parts)
    assert got == ["config/notes.pem", "weights.bin"]


def remote_names(cli: ShoalCli) -> list[str]:
    return [d["name"] for d in cli.json("ls", "--remote")["datasets"]]


def test_unshare_withdraws_at_once_keeps_the_folder_and_forget_drops_the_history(daemons, folder: Path) -> None:
    a, b = daemons
    data = folder / "ckpt"
    data.mkdir()
    (data / "weights.bin").write_bytes(os.urandom(300_000))
    before = (data / "weights.bin").read_bytes()
    ok(a("share", str(data)))
    trust_both(a, b)
    wait_until(lambda: remote_names(b) == ["ckpt"], 20, "B to see ckpt")
    dest = folder / "follow"
    ok(b("subscribe", "ckpt", str(dest)))
    wait_until(lambda: b.json("subscriptions")["subscriptions"][0]["state"] == "current", 20, "the subscription")
    wait_until(lambda: [v["kept"] for v in a.json("log", "ckpt")["versions"]] == [True], 20, "ckpt@1 to be kept")

    withdrawn = a.json("unshare", "ckpt")
    assert withdrawn == {"name": "ckpt", "path": str(data), "forgot": False, "versions_dropped": 0, "bytes_freed": 0}
    wait_until(lambda: remote_names(b) == [], 3, "B's ls --remote to lose ckpt")
    [sub] = b.json("subscriptions")["subscriptions"]
    assert sub["state"] == "withdrawn"
    assert " withdrawn " in ok(b("subscriptions"))
    assert (data / "weights.bin").read_bytes() == before and sorted(os.listdir(data)) == ["weights.bin"]
    assert (dest / "weights.bin").read_bytes() == before, "a subscriber keeps what it has"
    assert a.json("ls")["datasets"] == []
    assert [v["seq"] for v in a.json("log", "ckpt")["versions"]] == [1], "the history stays without --forget"

    (data / "more.bin").write_bytes(b"more")
    again = a.json("share", str(data))
    assert again["version"]["seq"] == 2 and again["version"]["parents"] == [withdrawn_id(a, "ckpt", 1)]
    wait_until(lambda: remote_names(b) == ["ckpt"], 20, "B to see ckpt again")
    wait_until(lambda: b.json("subscriptions")["subscriptions"][0]["state"] == "current", 20, "the subscription")

    forgot = a.json("unshare", "ckpt", "--forget")
    assert forgot["forgot"] is True and forgot["versions_dropped"] == 2
    wait_until(lambda: remote_names(b) == [], 3, "B's ls --remote to lose ckpt")
    one_line_error(a("log", "ckpt"), 4, "ckpt")
    assert a.json("status")["retention"]["kept"] == 0
    assert a.json("share", str(data))["version"]["seq"] == 1, "a forgotten dataset starts over"
    one_line_error(a("unshare", "nothing-here"), 4, "`shoal ls` lists them")


def test_unshare_of_a_watched_dataset_stops_the_watch(daemons, folder: Path) -> None:
    a = daemons[0]
    data = folder / "watched"
    data.mkdir()
    (data / "f").write_bytes(b"x")
    ok(a("watch", str(data)))
    assert "no longer sharing watched" in ok(a("unshare", "watched"))
    assert a.json("watches")["watches"] == []
    assert a.json("ls")["datasets"] == []


def withdrawn_id(cli: ShoalCli, name: str, seq: int) -> str:
    return next(v["id"] for v in cli.json("log", name)["versions"] if v["seq"] == seq)
