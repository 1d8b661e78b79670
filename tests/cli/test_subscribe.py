"""Subscriptions, as a user drives them: two real daemons on loopback, one publishing, one following."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ShoalCli, make_home, remove_home
from test_two_daemons import files_of, ok, pair  # noqa: F401 - pair is a fixture

from shoal.client.blocking import ControlClient
from shoal.errors import DaemonError
from shoal.home import socket_path

pytestmark = pytest.mark.slow


#: How long a follower gets to pick up a new version (loopback, a few MB, a loaded 2-core machine).
FOLLOW_TIMEOUT = 60.0
#: Bytes on the wire beyond the changed data: manifest objects, catalogs, framing, boundary chunks.
DELTA_SLACK = 2 * 256 * 1024 + 64 * 1024


def connect(a: ShoalCli, b: ShoalCli) -> str:
    """A trusts B, B trusts A at its address; return A's peer id."""
    id_a = a.json("id")["peer_id"]
    ok(a("trust", b.json("id")["peer_id"], "--name", "laptop"))
    ok(b("trust", id_a, "--name", "gpu-box", "--addr", a.json("status")["listen"]))
    return id_a


def make_dataset(root: Path) -> Path:
    data = root / "ckpt"
    (data / "train").mkdir(parents=True)
    (data / "model.pt").write_bytes(os.urandom(4_000_000))
    (data / "config.yaml").write_text("lr: 0.1\n")
    for i in range(10):
        (data / "train" / f"shard{i}.bin").write_bytes(os.urandom(30_000 + i))
    return data


def wait_until(condition: Callable[[], Any], why: str, timeout: float = FOLLOW_TIMEOUT) -> Any:
    """Poll `condition` until it returns something true, and return that; fail with `why` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{why} (waited {timeout:g}s)"
        time.sleep(0.1)
    return found


@contextlib.contextmanager
def frozen(cli: ShoalCli) -> Iterator[None]:
    """The daemon stopped with SIGSTOP: a fetch from it starts, then hangs on a silent peer."""
    pid = cli.json("status")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def wait_offered(b: ShoalCli, peer_id: str, seq: int) -> None:
    wait_until(
        lambda: any(d["peer_id"] == peer_id and d["head"]["seq"] == seq for d in b.json("ls", "--remote")["datasets"]),
        f"{peer_id} never offered @{seq}",
    )


def published(a: ShoalCli, b: ShoalCli, root: Path) -> Path:
    """A shares a fresh dataset and B sees it offered; return its folder."""
    id_a = connect(a, b)
    data = make_dataset(root)
    ok(a("share", str(data)))
    wait_offered(b, id_a, 1)
    return data


def subscription(b: ShoalCli, name: str) -> dict:
    found = [s for s in b.json("subscriptions")["subscriptions"] if s["name"] == name]
    assert len(found) == 1
    return found[0]


def wait_for_seq(b: ShoalCli, name: str, seq: int) -> dict:
    """Poll the follower until DEST holds NAME@seq and no update runs; return the subscription."""

    def arrived() -> dict | None:
        sub = subscription(b, name)
        return sub if sub["version"] and sub["version"]["seq"] == seq and sub["state"] == "current" else None

    return wait_until(arrived, f"{name}@{seq} never arrived: {subscription(b, name)}")


def bytes_in(b: ShoalCli, peer_id: str) -> int:
    return next(p for p in b.json("peers")["peers"] if p["peer_id"] == peer_id)["bytes_in"]


def stat_records(b: ShoalCli, dest: Path) -> dict[str, tuple[int, int, int, int]]:
    """The index's stat record of each file a fetch wrote into DEST: what updates compare with."""
    db = sqlite3.connect(f"file:{b.home / 'index.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT dir, name, size, mtime_ns, ctime_ns, ino FROM files WHERE root = ?", (str(dest),)
        ).fetchall()
    finally:
        db.close()
    return {"/".join(filter(None, (d, n))): tuple(rest) for d, n, *rest in rows}


def stats_of(root: Path) -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and ".shoal-partial" not in path.parts:
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return out


def overwrite(path: Path, offset: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))


def test_follows_three_versions_moving_only_deltas(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    id_a = connect(a, b)
    data = make_dataset(tmp_path)
    ok(a("share", str(data), "-m", "v1"))
    dest = tmp_path / "follow"
    added = b.json("subscribe", "ckpt", str(dest))
    assert added["created"] is True and added["subscription"]["dest"] == str(dest)
    sub = wait_for_seq(b, "ckpt", 1)
    assert files_of(dest) == files_of(data)
    assert sub["last_fetch"]["bytes_received"] >= 4_000_000
    assert stat_records(b, dest) == stats_of(dest), "the next update would re-hash what it wrote"

    # v2: 1 MiB of the model changes. v3: a new file and a config change, a shard deleted.
    changes = [
        (2, lambda: overwrite(data / "model.pt", 1_000_000, 1024 * 1024), 1024 * 1024),
        (3, lambda: ((data / "extra.bin").write_bytes(os.urandom(300_000)),
                     (data / "config.yaml").write_text("lr: 0.05\n"),
                     (data / "train" / "shard3.bin").unlink()), 300_000 + 9),
    ]
    for seq, change, changed_bytes in changes:
        before = bytes_in(b, id_a)
        change()
        ok(a("share", str(data), "-m", f"v{seq}"))
        sub = wait_for_seq(b, "ckpt", seq)
        moved = bytes_in(b, id_a) - before
        assert files_of(dest) == files_of(data)
        assert changed_bytes <= sub["last_fetch"]["bytes_received"] <= changed_bytes + DELTA_SLACK, sub["last_fetch"]
        assert changed_bytes <= moved <= changed_bytes + DELTA_SLACK, f"v{seq}: {moved} bytes in for {changed_bytes}"
    assert sub["conflicts"] == [] and sub["last_error"] is None
    assert b.json("verify", "ckpt")["ok"] is True
    # The follower serves what it follows, like any fetch.
    assert b.json("ls")["datasets"][0]["head"]["seq"] == 3


def test_local_changes_are_kept(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    connect(a, b)
    data = make_dataset(tmp_path)
    (data / "notes").mkdir()
    (data / "notes" / "a.txt").write_text("publisher's a\n")
    (data / "notes" / "b.txt").write_text("publisher's b\n")
    ok(a("share", str(data)))
    dest = tmp_path / "follow"
    ok(b("subscribe", "ckpt", str(dest)))
    wait_for_seq(b, "ckpt", 1)

    # The user edits a file, adds one inside a folder, adds one where the publisher will add one,
    # and deletes a file the publisher leaves alone.
    (dest / "config.yaml").write_text("lr: 0.3  # mine\n")
    (dest / "train" / "my-notes.txt").write_text("my notes\n")
    (dest / "README").write_text("my readme\n")
    (dest / "notes" / "b.txt").unlink()
    # The publisher changes the same file, removes that folder, adds README, changes the model.
    (data / "config.yaml").write_text("lr: 0.01\n")
    for shard in (data / "train").iterdir():
        shard.unlink()
    (data / "train").rmdir()
    (data / "README").write_text("publisher's readme\n")
    (data / "notes" / "a.txt").write_text("publisher's new a\n")
    overwrite(data / "model.pt", 0, 100_000)
    with ControlClient.connect(socket_path(b.home)) as events:
        events.subscribe(["subscriptions"])
        ok(a("share", str(data)))
        updated = next(
            e.data for e in events.events(timeout=FOLLOW_TIMEOUT)
            if e.data["change"] == "updated"
        )
    sub = wait_for_seq(b, "ckpt", 2)
    assert updated["subscription"]["version"]["seq"] == 2 and updated["conflicts_total"] == 4
    assert updated["subscription"]["state"] == "current", "the event tells the update's outcome"
    assert sorted(updated["conflicts"], key=lambda c: c["path"]) == sorted(sub["conflicts"], key=lambda c: c["path"])

    assert sorted(sub["conflicts"], key=lambda c: c["path"]) == [
        {"path": "README", "change": "added", "kept_as": "README.shoal-conflict-2"},
        {"path": "config.yaml", "change": "edited", "kept_as": "config.yaml.shoal-conflict-2"},
        {"path": "notes/b.txt", "change": "deleted", "kept_as": None},
        {"path": "train/my-notes.txt", "change": "added", "kept_as": "train/my-notes.txt"},
    ]
    assert (dest / "config.yaml").read_text() == "lr: 0.01\n"
    assert (dest / "config.yaml.shoal-conflict-2").read_text() == "lr: 0.3  # mine\n"
    assert (dest / "README").read_text() == "publisher's readme\n"
    assert (dest / "README.shoal-conflict-2").read_text() == "my readme\n"
    assert sorted(p.name for p in (dest / "train").iterdir()) == ["my-notes.txt"]
    assert (dest / "train" / "my-notes.txt").read_text() == "my notes\n"
    assert not (dest / "notes" / "b.txt").exists()
    assert (dest / "notes" / "a.txt").read_text() == "publisher's new a\n"
    assert (dest / "model.pt").read_bytes() == (data / "model.pt").read_bytes()
    listing = ok(b("subscriptions"))
    assert "config.yaml: edited here; your copy is config.yaml.shoal-conflict-2" in listing


def test_survives_restart_then_unsubscribe_stops(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    connect(a, b)
    data = make_dataset(tmp_path)
    ok(a("share", str(data)))
    dest = tmp_path / "follow"
    ok(b("subscribe", "ckpt", str(dest)))
    wait_for_seq(b, "ckpt", 1)

    ok(b("daemon", "stop"))
    overwrite(data / "model.pt", 0, 50_000)
    ok(a("share", str(data)))
    ok(b("daemon", "start"))
    wait_for_seq(b, "ckpt", 2)
    assert files_of(dest) == files_of(data)

    gone = b.json("unsubscribe", "ckpt")
    assert gone["subscription"]["name"] == "ckpt"
    assert b.json("subscriptions") == {"subscriptions": []}
    v2 = files_of(dest)
    overwrite(data / "model.pt", 0, 50_000)
    ok(a("share", str(data)))
    wait_until(lambda: [d["head"]["seq"] for d in b.json("ls", "--remote")["datasets"]] == [3], "@3 never offered")
    # B sees @3 offered; a follower would start at once. Give it ample time to (wrongly) do so.
    time.sleep(3)
    assert b.json("ls")["datasets"][0]["head"]["seq"] == 2
    assert files_of(dest) == v2


def test_bad_inputs_get_one_line_errors(pair, tmp_path: Path) -> None:  # noqa: F811
    _, b = pair
    a_file = tmp_path / "file"
    a_file.write_text("x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("precious")
    cases = [
        (("subscribe", "ds", str(a_file)), 2, "is not a folder"),
        (("subscribe", "ds", str(occupied)), 2, "not a fetch of ds"),
        (("subscribe", "bad/name", str(tmp_path / "x")), 2, "dataset name"),
        (("subscribe", "ds@3", str(tmp_path / "x")), 2, "give NAME without @VERSION"),
        (("unsubscribe", "nothing"), 4, "nothing follows 'nothing'"),
    ]
    for args, code, text in cases:
        process = b(*args)
        assert (process.returncode, process.stderr.count("\n")) == (code, 1), (args, process.stderr)
        assert process.stderr.startswith("shoal: ") and text in process.stderr, process.stderr
    assert (occupied / "thesis.tex").read_text() == "precious"

    ok(b("subscribe", "ds", str(tmp_path / "one")))
    again = b.json("subscribe", "ds", str(tmp_path / "one"))
    assert again["created"] is False
    for args, text in [
        (("subscribe", "other", str(tmp_path / "one")), "overlaps"),
        (("subscribe", "other", str(tmp_path / "one" / "inner")), "overlaps"),
        (("subscribe", "ds", str(tmp_path / "two")), "already follows into"),
        (("unsubscribe", "ds", str(tmp_path / "two")), "follows into"),
    ]:
        process = b(*args)
        assert process.returncode == 2 and process.stderr.count("\n") == 1 and text in process.stderr, process.stderr
    assert [s["name"] for s in b.json("subscriptions")["subscriptions"]] == ["ds"]
    sub = subscription(b, "ds")
    assert sub["state"] == "waiting" and sub["version"] is None


def test_a_folder_holding_a_fetch_follows_on_from_it(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    connect(a, b)
    data = make_dataset(tmp_path)
    ok(a("share", str(data)))
    dest = tmp_path / "fetched"
    ok(b("fetch", "ckpt", str(dest), "--timeout", "30"))
    mine = a("subscribe", "ckpt", str(tmp_path / "own"))
    assert mine.returncode == 2 and "shared from this machine" in mine.stderr
    added = b.json("subscribe", "ckpt", str(dest))["subscription"]
    assert added["version"]["seq"] == 1 and added["state"] == "current"
    assert added["author"] is None  # decided by the first version this subscription fetches
    overwrite(data / "model.pt", 0, 10_000)
    ok(a("share", str(data)))
    sub = wait_for_seq(b, "ckpt", 2)
    assert sub["last_fetch"]["files_written"] == 1
    assert sub["author"] == sub["version"]["author"] == a.json("log", "ckpt")["versions"][0]["author"]
    assert files_of(dest) == files_of(data)


def test_control_method_wants_an_absolute_dest(pair) -> None:  # noqa: F811
    _, b = pair
    with ControlClient.connect(socket_path(b.home)) as client, pytest.raises(DaemonError) as raised:
        client.call("subscription.add", {"name": "ds", "dest": "relative/dir"})
    assert raised.value.code == "usage" and "absolute" in str(raised.value)


@pytest.fixture
def third():
    """A third daemon, for a second publisher."""
    home = make_home()
    cli = ShoalCli(home)
    ok(cli("daemon", "start"))
    yield cli
    cli("daemon", "stop")
    remove_home(home)


def test_follows_one_author_only(pair, third, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    c = third
    connect(a, b)
    id_c = connect(c, b)
    data = make_dataset(tmp_path)
    ok(a("share", str(data)))
    dest = tmp_path / "follow"
    ok(b("subscribe", "ckpt", str(dest)))
    sub = wait_for_seq(b, "ckpt", 1)
    author_a = a.json("log", "ckpt")["versions"][0]["author"]
    assert sub["author"] == author_a

    # C publishes its own lineage under the same name, with higher numbers.
    other = make_dataset(tmp_path / "c")
    ok(c("share", str(other)))
    (other / "config.yaml").write_text("lr: 9\n")
    ok(c("share", str(other)))
    wait_offered(b, id_c, 2)
    time.sleep(3)  # a follower of any author would have started at once
    sub = subscription(b, "ckpt")
    assert sub["version"]["seq"] == 1 and sub["version"]["author"] == author_a, sub
    assert files_of(dest) == files_of(data)

    # A's next version, numbered like C's newest, is followed.
    (data / "config.yaml").write_text("lr: 0.02\n")
    ok(a("share", str(data)))
    sub = wait_for_seq(b, "ckpt", 2)
    assert sub["version"]["author"] == author_a
    assert files_of(dest) == files_of(data)


def test_failed_update_is_retried(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    data = make_dataset(tmp_path)
    ok(a("share", str(data)))
    dest = tmp_path / "parent" / "follow"
    ok(b("subscribe", "ckpt", str(dest)))
    assert subscription(b, "ckpt")["state"] == "waiting"
    # Something is in the way of DEST's folder when the version arrives.
    (tmp_path / "parent").write_text("in the way")
    connect(a, b)
    sub = wait_until(lambda: (s := subscription(b, "ckpt"))["state"] == "failed" and s, "the update never failed")
    assert sub["last_error"].startswith(f"cannot create {dest}") and sub["retry_in"] > 0
    assert (tmp_path / "parent").read_text() == "in the way"
    (tmp_path / "parent").unlink()
    sub = wait_for_seq(b, "ckpt", 1)
    assert sub["last_error"] is None and sub["retry_in"] is None
    assert files_of(dest) == files_of(data)


def test_concurrent_subscribes_of_one_name_keep_one(pair, tmp_path: Path) -> None:  # noqa: F811
    _, b = pair
    rounds = 5
    for i in range(rounds):
        name = f"ds{i}"
        dests = [str(tmp_path / f"{name}-{side}") for side in "xy"]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def add(dest: str, name: str = name, barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes) -> None:
            with ControlClient.connect(socket_path(b.home)) as client:
                barrier.wait()
                try:
                    client.call("subscription.add", {"name": name, "dest": dest})
                    outcomes.append("ok")
                except DaemonError as exc:
                    outcomes.append(exc.code)

        threads = [threading.Thread(target=add, args=(dest,)) for dest in dests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["ok", "usage"]
    subs = b.json("subscriptions")["subscriptions"]
    assert sorted(s["name"] for s in subs) == [f"ds{i}" for i in range(rounds)]


def test_unsubscribe_cancels_a_running_update(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    published(a, b, tmp_path)
    dest = tmp_path / "follow"
    with frozen(a):
        ok(b("subscribe", "ckpt", str(dest)))
        sub = wait_until(lambda: (s := subscription(b, "ckpt"))["transfer"] is not None and s, "no update started")
        assert sub["state"] == "updating"
        assert [t["id"] for t in b.json("status")["transfers"]] == [sub["transfer"]]
        ok(b("unsubscribe", "ckpt", str(dest)))
        wait_until(lambda: not b.json("status")["transfers"], "the update kept running after unsubscribe", 10)
    time.sleep(2)  # the sender answers again; nothing may pick the update back up
    assert b.json("status")["transfers"] == [] and b.json("ls")["datasets"] == []
    assert not (dest / "model.pt").exists()


def test_waits_for_a_fetch_already_writing_its_folder(pair, tmp_path: Path) -> None:  # noqa: F811
    a, b = pair
    data = published(a, b, tmp_path)
    dest = tmp_path / "follow"
    with frozen(a):
        manual = subprocess.Popen(
            [sys.executable, "-m", "shoal", "--home", str(b.home), "fetch", "ckpt", str(dest), "--timeout", "60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: b.json("status")["transfers"], "the user's fetch never started")
        ok(b("subscribe", "ckpt", str(dest)))
        time.sleep(2)
        assert len(b.json("status")["transfers"]) == 1, "a second fetch writes the same folder"
        assert subscription(b, "ckpt")["state"] == "pending"
        manual.terminate()  # the user gives up; closing the connection cancels that fetch
        manual.wait(timeout=30)
    wait_for_seq(b, "ckpt", 1)
    assert files_of(dest) == files_of(data)
