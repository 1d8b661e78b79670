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
