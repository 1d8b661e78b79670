"""Sharing is deliberate: never the daemon's secrets, only to the chosen peers, and withdrawable.

Real daemons in temporary homes on loopback, driven through the `shoal` command.
"""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import trio
from conftest import ShoalCli, make_home, remove_home
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from test_end_to_end import one_line_error
from test_faults import wait_until

from shoal.daemon.keys import load_or_create_private_key
from shoal.daemon.net.session import PeerSession, establish
from shoal.daemon.store.index import Index
from shoal.protocol.format.hashing import chunk_id
from shoal.protocol.wire.channel import Role

pytestmark = pytest.mark.slow


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


def raw_session_requests(
    home: Path, address: str, peer_id: str, objects: list[bytes], chunks: list[bytes]
) -> tuple[list[str], set[bytes], set[bytes]]:
    """Connect to `address` with the key in `home` (its daemon stopped) and ask for ids directly.

    Returns the catalog's names, the ids answered with data, and the ids answered as missing.
    """

    async def main() -> tuple[list[str], set[bytes], set[bytes]]:
        host, port = address.rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        conn, peer = await establish(
            stream, Role.INITIATOR, load_or_create_private_key(home), lambda _: True, None, expected=peer_id
        )
        catalog = trio.Event()
        index = Index(home / "raw-index.sqlite")
        session = PeerSession(conn, stream, peer, address, index, lambda _: catalog.set())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            with trio.fail_after(20):
                await catalog.wait()
                got, missing = await session.get_objects(objects)
                received: list[bytes] = []
                missing += await session.get_chunks(chunks, lambda cid, data: received.append(cid))
            await session.close()
            nursery.cancel_scope.cancel()
        index.close()
        return [entry.name for entry in session.catalog], {oid for oid, _ in got} | set(received), set(missing)

    return trio.run(main)


@pytest.mark.parametrize("daemons", [3], indirect=True)
def test_a_dataset_shared_to_b_is_fetchable_by_b_and_invisible_to_c(daemons, folder: Path) -> None:
    a, b, c = daemons
    trust_both(a, b)
    trust_both(a, c)
    id_b = b.json("id")["peer_id"]
    common = os.urandom(5_000)
    secret = folder / "secret"
    secret.mkdir()
    (secret / "plans.bin").write_bytes(os.urandom(5_000))
    (secret / "common.bin").write_bytes(common)
    public = folder / "public"
    public.mkdir()
    (public / "common.bin").write_bytes(common)

    one_line_error(a("share", str(secret), "--to", "nobody-by-that-name"), 4, "no trusted peer is called")
    ok(a("trust", id_b, "--name", "laptop"))
    shared = a.json("share", str(secret), "--to", id_b[:9])
    assert (shared["audience"], shared["seen_by"]) == ([id_b], ["laptop"])
    # An unchanged share keeps its audience and says so, naming the peer as the user did.
    assert "seen by laptop" in ok(a("share", str(secret)))
    ok(a("share", str(public)))
    listing = {d["name"]: d for d in a.json("ls")["datasets"]}
    assert (listing["secret"]["audience"], listing["public"]["audience"]) == ([id_b], None)

    wait_until(lambda: sorted(remote_names(b)) == ["public", "secret"], 20, "B to see both datasets")
    wait_until(lambda: remote_names(c) == ["public"], 20, "C to see the public dataset")
    b.json("fetch", "secret", str(folder / "on-b"), "--timeout", "20")
    assert (folder / "on-b" / "plans.bin").read_bytes() == (secret / "plans.bin").read_bytes()
    refused = c("fetch", "secret", str(folder / "on-c"), "--timeout", "3")
    assert refused.returncode == 6 and "no trusted peer has secret" in refused.stderr
    assert not (folder / "on-c" / "plans.bin").exists()

    # C asks for the ids themselves, as a peer that learnt them elsewhere would.
    head = listing["secret"]["head"]
    plans, shared_chunk = chunk_id((secret / "plans.bin").read_bytes()), chunk_id(common)
    public_root = bytes.fromhex(listing["public"]["head"]["root"])
    address = a.json("status")["listen"]
    ok(c("daemon", "stop"))
    names, served, missing = raw_session_requests(
        c.home, address, a.json("id")["peer_id"],
        [bytes.fromhex(head["id"]), bytes.fromhex(head["root"]), public_root], [plans, shared_chunk],
    )
    assert names == ["public"]
    assert missing == {bytes.fromhex(head["id"]), bytes.fromhex(head["root"]), plans}
    assert served == {public_root, shared_chunk}, "what a visible dataset also holds is served through it"

    assert a.json("share", "secret", "--to-all")["audience"] is None
    names, served, missing = raw_session_requests(
        c.home, address, a.json("id")["peer_id"], [bytes.fromhex(head["root"])], [plans]
    )
    assert sorted(names) == ["public", "secret"] and served == {bytes.fromhex(head["root"]), plans}


def test_permission_bits_are_part_of_the_version_and_reach_peers(daemons, folder: Path) -> None:
    a, b = daemons
    data = folder / "modes"
    data.mkdir()
    (data / "notes.txt").write_bytes(b"notes\n")
    (data / "private.txt").write_bytes(b"for my eyes\n")
    (data / "private.txt").chmod(0o600)
    first = a.json("share", str(data))["version"]
    (data / "private.txt").chmod(0o640)
    second = a.json("share", str(data))
    assert second["created"] is True, "a chmod alone is a new version"
    assert second["version"]["root"] != first["root"]
    (data / "notes.txt").chmod(0o644)
    assert a.json("share", str(data))["created"] is False

    trust_both(a, b)
    wait_until(lambda: remote_names(b) == ["modes"], 20, "B to see the dataset")
    # B reads both manifests from A: the modes it decodes are what tells the versions apart.
    diff = b.json("diff", "modes@1", "modes@2", "--timeout", "20")
    assert [(c["path"], c["change"]) for c in diff["changes"]] == [("private.txt", "modified")]
    assert diff["bytes_to_fetch"] == 0

    dest = folder / "fetched-modes"
    b.json("fetch", "modes@1", str(dest), "--timeout", "20")
    assert stat.S_IMODE((dest / "private.txt").stat().st_mode) == 0o600, "a private file stays private"
    assert stat.S_IMODE((dest / "notes.txt").stat().st_mode) == 0o644
    # A change of mode alone: the file is kept and only its bits change.
    inode = (dest / "private.txt").stat().st_ino
    switched = b.json("fetch", "modes@2", str(dest), "--timeout", "20")
    assert switched["bytes_received"] == 0 and switched["files_written"] == 0
    assert stat.S_IMODE((dest / "private.txt").stat().st_mode) == 0o640
    assert (dest / "private.txt").stat().st_ino == inode


def test_default_audience_none_shares_to_nobody_until_chosen(daemons, folder: Path) -> None:
    a, b = daemons
    assert a.json("config", "set", "share.default_audience", "none")["reloaded"] is True
    trust_both(a, b)
    data = folder / "quiet"
    data.mkdir()
    (data / "f").write_bytes(b"x")
    assert a.json("share", str(data))["audience"] == []
    assert "seen by no peer" in ok(a("share", str(data)))
    one_line_error(a("share", "quiet"), 1, "does not exist")
    one_line_error(a("share", "no-such-dataset", "--to-all"), 4, "no dataset named")
    loud = folder / "loud"
    loud.mkdir()
    (loud / "g").write_bytes(b"y")
    assert a.json("share", str(loud), "--to-all")["audience"] is None
    wait_until(lambda: remote_names(b) == ["loud"], 20, "B to see the dataset shared to all")
    assert "quiet is now seen by all trusted peers" in ok(a("share", "quiet", "--to-all"))
    wait_until(lambda: sorted(remote_names(b)) == ["loud", "quiet"], 20, "B to see quiet once shared to all")
