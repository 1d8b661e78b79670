"""Watched folders against real daemon processes: settling, writers, .shoalignore, restarts, errors."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ShoalCli, running_daemon
from test_end_to_end import one_line_error
from test_faults import wait_until

from shoal.client.blocking import ControlClient
from shoal.home import socket_path

pytestmark = pytest.mark.slow


#: The settling period the tests configure: short, yet longer than a burst of file creations under load.
QUIET = 1.0
#: How long a test waits to be sure that no (further) version comes: several settling periods.
SETTLED = 4 * QUIET + 1

#: Copies SOURCE into TARGET a piece at a time, as a training job writes a checkpoint: the file
#: stays open throughout, with pauses longer than the quiet period between some pieces.
SLOW_WRITER = """
import sys, time
source, target = sys.argv[1], sys.argv[2]
data = open(source, "rb").read()
pieces = 8
step = len(data) // pieces
with open(target, "wb") as out:
    for i in range(pieces):
        out.write(data[i * step : len(data) if i == pieces - 1 else (i + 1) * step])
        out.flush()
        time.sleep(1.6 if i in (2, 5) else 0.4)
"""

#: Writes a file, says so, and keeps it open for writing, unchanged, until killed.
HOLDER = """
import sys, time

with open(sys.argv[1], "wb") as out:
    out.write(b"line\\n" * 1000)
    out.flush()
    print("written", flush=True)
    time.sleep(120)
"""

#: Appends a line to each of its files every 0.2 s until its stdin closes, then closes them.
#: "open:" files stay open throughout, as a trainer's log does; the others are reopened for
#: every line, as a metrics logger may do.
LOGGER = """
import sys, threading, time

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
kept = [open(path[5:], "a") for path in sys.argv[1:] if path.startswith("open:")]
reopened = [path for path in sys.argv[1:] if not path.startswith("open:")]
print("logging", flush=True)
step = 0
while not stop.is_set():
    step += 1
    for log in kept:
        log.write(f"step {step}\\n")
        log.flush()
    for path in reopened:
        with open(path, "a") as log:
            log.write(f"step {step}\\n")
    time.sleep(0.2)
for log in kept:
    log.close()
"""

#: The config.toml lines of a home whose watches settle quickly.
WATCH_CONFIG = f"[watch]\nquiet = {QUIET}\n"


@pytest.fixture(scope="module")
def cli():
    with running_daemon(WATCH_CONFIG) as shoal:
        yield shoal


@pytest.fixture
def folder():
    root = Path(tempfile.mkdtemp(prefix="shoal-watched-", dir="/tmp"))
    yield root / "run"
    shutil.rmtree(root, ignore_errors=True)


def versions(cli: ShoalCli, name: str) -> list[dict]:
    return cli.json("log", name)["versions"]


def watch_of(cli: ShoalCli, name: str) -> dict | None:
    return next((w for w in cli.json("watches")["watches"] if w["name"] == name), None)


def names_in(cli: ShoalCli, spec: str, path: str = "") -> set[str]:
    return {entry["name"] for entry in cli.json("ls", spec, path)["entries"]}


def wait_for_seq(cli: ShoalCli, name: str, seq: int, timeout: float = 30) -> dict:
    return wait_until(lambda: next((v for v in versions(cli, name) if v["seq"] == seq), None), timeout, f"{name}@{seq}")


def assert_no_new_version(cli: ShoalCli, name: str, count: int) -> None:
    """Over several settling periods, the dataset keeps `count` versions and its watch ends idle."""
    time.sleep(SETTLED)
    assert len(versions(cli, name)) == count
    watch = watch_of(cli, name)
    assert watch is not None and watch["state"] == "idle", watch


def start_logger(*paths: str) -> subprocess.Popen:
    logger = subprocess.Popen(
        [sys.executable, "-c", LOGGER, *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert logger.stdout.readline() == "logging\n"
    return logger


def stop_logger(logger: subprocess.Popen) -> None:
    logger.stdin.close()
    assert logger.wait(timeout=10) == 0


def entries_of(cli: ShoalCli, spec: str) -> dict[str, dict]:
    return {entry["name"]: entry for entry in cli.json("ls", spec)["entries"]}


def start_watch(cli: ShoalCli, folder: Path, *extra: str) -> dict:
    result = cli.json("watch", str(folder), *extra)
    assert result["added"] is True and result["share"]["created"] is True
    assert result["watch"]["path"] == str(folder.resolve())
    return result


def test_a_checkpoint_written_slowly_is_published_once_and_complete(cli, folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"lr": 0.1}')
    start_watch(cli, folder, "--name", "ckpt")
    source = folder.parent / "checkpoint.src"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(source), str(folder / "model.pt")])
    started = time.monotonic()
    seen_waiting = False
    while writer.poll() is None:
        # While the writer holds the file open, nothing is published, even across its long pauses.
        assert len(versions(cli, "ckpt")) == 1, "a version was published while the checkpoint was being written"
        seen_waiting |= watch_of(cli, "ckpt")["state"] == "waiting"
        time.sleep(0.2)
    assert writer.returncode == 0
    assert time.monotonic() - started >= 5, "the writer should take at least 5 s"
    assert seen_waiting, "the watch never reported waiting for the open checkpoint"
    published = wait_for_seq(cli, "ckpt", 2)
    assert_no_new_version(cli, "ckpt", 2)
    assert published["files"] == 2
    assert published["size"] == source.stat().st_size + len('{"lr": 0.1}')
    entries = {e["name"]: e for e in cli.json("ls", "ckpt@2")["entries"]}
    assert entries["model.pt"]["size"] == source.stat().st_size
    assert (folder / "model.pt").read_bytes() == source.read_bytes()
    verified = cli.json("verify", "ckpt")
    assert verified["ok"] is True and verified["version"]["seq"] == 2, verified


def test_a_file_held_open_but_unchanged_is_published_after_max_wait(cli, folder):
    folder.mkdir(parents=True)
    start_watch(cli, folder, "--name", "held-open")
    assert cli("config", "set", "watch.max_wait", "4").returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / "events.log")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"written\n"
        time.sleep(2 * QUIET)
        assert len(versions(cli, "held-open")) == 1, "published while the file was open and the wait not over"
        assert watch_of(cli, "held-open")["state"] == "waiting"
        published = wait_for_seq(cli, "held-open", 2, timeout=15)
        assert holder.poll() is None, "the version must come while the file is still open"
        assert published["size"] == len(b"line\n" * 1000)
    finally:
        holder.kill()
        holder.wait()
        cli("config", "set", "watch.max_wait", "600")


def test_a_file_open_for_writing_when_the_watch_starts_is_published_once_closed(cli, folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / "half.pt")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"written\n"
        result = start_watch(cli, folder, "--name", "mid-write")
        assert result["share"]["version"]["files"] == 1, "the first share took a file still being written"
        # The catch-up share after the watch starts holds it too, and the watch names it.
        expected = "half.pt open for writing"
        wait_until(lambda: watch_of(cli, "mid-write")["detail"] == expected, SETTLED, expected)
        assert len(versions(cli, "mid-write")) == 1
    finally:
        holder.kill()
        holder.wait()
    published = wait_for_seq(cli, "mid-write", 2)
    assert published["message"] == "watch: 1 file changed (half.pt)" and published["files"] == 2
    assert_no_new_version(cli, "mid-write", 2)


def test_a_burst_of_new_files_makes_one_version(cli, folder):
    folder.mkdir(parents=True)
    (folder / "README").write_text("shards\n")
    start_watch(cli, folder)
    (folder / "shards").mkdir()
    for i in range(300):
        (folder / "shards" / f"{i:04d}.bin").write_bytes(os.urandom(200))
    published = wait_for_seq(cli, "run", 2)
    assert_no_new_version(cli, "run", 2)
    assert published["files"] == 301
    assert published["message"] == "watch: 300 files changed"


def test_shoalignore_keeps_paths_out_and_their_changes_publish_nothing(cli, folder):
    (folder / "logs").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(os.urandom(5000))
    (folder / "scratch.tmp").write_text("partial")
    (folder / "logs" / "train.log").write_text("step 1\n")
    (folder / ".shoalignore").write_text("# noise\n*.tmp\nlogs/\n")
    result = start_watch(cli, folder, "--name", "ignoring")
    assert result["share"]["version"]["files"] == 2
    assert names_in(cli, "ignoring") == {".shoalignore", "weights.bin"}
    (folder / "scratch.tmp").write_text("more partial data")
    (folder / "logs" / "train.log").write_text("step 1\nstep 2\n")
    (folder / "logs" / "eval.log").write_text("ok\n")
    assert_no_new_version(cli, "ignoring", 1)
    # The watch is alive: a change that counts publishes.
    (folder / "weights.bin").write_bytes(os.urandom(6000))
    wait_for_seq(cli, "ignoring", 2)
    assert names_in(cli, "ignoring@2") == {".shoalignore", "weights.bin"}


def test_share_honours_shoalignore_and_sees_it_change(cli, folder):
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "keep.bin").write_bytes(b"k" * 100)
    (folder / "sub" / "cache.tmp").write_bytes(b"t" * 100)
    (folder / ".shoalignore").write_text("*.tmp\n")
    first = cli.json("share", str(folder), "--name", "plain")
    assert first["version"]["files"] == 2
    assert names_in(cli, "plain", "sub") == {"keep.bin"}
    # Only the root's .shoalignore changes; the scanner's cache of sub/ must not hide cache.tmp.
    (folder / ".shoalignore").write_text("# nothing ignored now\n")
    second = cli.json("share", str(folder), "--name", "plain")
    assert second["created"] is True and second["version"]["files"] == 3
    assert names_in(cli, "plain", "sub") == {"cache.tmp", "keep.bin"}


def test_subscribers_see_a_watch_added_settle_share_and_go_idle(cli, folder):
    folder.mkdir(parents=True)
    with ControlClient.connect(socket_path(cli.home)) as client:
        assert sorted(client.subscribe(["watches", "datasets"])) == ["datasets", "watches"]
        start_watch(cli, folder, "--name", "observed")
        wait_until(lambda: watch_of(cli, "observed")["state"] == "idle", SETTLED, "the first catch-up")
        (folder / "new.bin").write_bytes(os.urandom(100))
        seen = []
        for event in client.events(timeout=SETTLED):
            if event.topic == "datasets" and event.data["name"] == "observed":
                seen.append(("version", event.data["version"]["seq"]))
            elif event.topic == "watches" and event.data["watch"]["name"] == "observed":
                seen.append((event.data["change"], event.data["watch"]["state"]))
            if ("version", 2) in seen and seen[-1] == ("state", "idle"):
                break
    assert seen[:2] == [("version", 1), ("added", "starting")], seen
    after = seen[seen.index(("state", "idle")) + 1 :]  # from the end of the catch-up on
    assert after == [("state", "settling"), ("state", "sharing"), ("version", 2), ("state", "idle")], seen


def test_a_folder_that_disappears_stays_watched_and_is_shared_when_it_returns(cli, folder):
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("before")
    start_watch(cli, folder, "--name", "comes-back")
    shutil.rmtree(folder)
    failing = wait_until(lambda: watch_of(cli, "comes-back")["state"] == "error", 15, "the watch to fail")
    assert "does not exist" in watch_of(cli, "comes-back")["detail"] and failing
    folder.mkdir()
    (folder / "b.txt").write_text("after")
    returned = wait_for_seq(cli, "comes-back", 2, timeout=30)
    assert returned["files"] == 1 and names_in(cli, "comes-back@2") == {"b.txt"}


def test_unwatch_stops_publishing_and_keeps_the_versions(cli, folder):
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("one")
    start_watch(cli, folder, "--name", "stopping")
    removed = cli.json("unwatch", str(folder))
    assert removed["watch"]["name"] == "stopping"
    assert watch_of(cli, "stopping") is None
    (folder / "a.txt").write_text("two")
    time.sleep(SETTLED)
    assert len(versions(cli, "stopping")) == 1
    one_line_error(cli("unwatch", "stopping"), 4, "nothing is watched as 'stopping'")


def test_bad_watch_requests_get_one_line_errors_and_change_nothing(cli, folder):
    folder.mkdir(parents=True)
    (folder / "f.txt").write_text("x")
    before = cli.json("watches")["watches"]
    one_line_error(cli("watch", str(folder / "missing")), 1, "does not exist")
    one_line_error(cli("watch", str(folder / "f.txt")), 1, "is not a directory")
    start_watch(cli, folder, "--name", "first-name")
    one_line_error(cli("watch", str(folder), "--name", "second-name"), 2, "already watched as 'first-name'")
    other = folder.parent / "other"
    other.mkdir()
    one_line_error(cli("watch", str(other), "--name", "first-name"), 2, "already watches")
    cli.json("share", str(other), "--name", "taken")
    one_line_error(cli("watch", str(folder.parent / "run"), "--name", "taken"), 2, "already watched")
    shutil.copytree(folder, folder.parent / "third")
    one_line_error(cli("watch", str(folder.parent / "third"), "--name", "taken"), 1, "already shared from")
    one_line_error(cli("unwatch", "no-such-watch"), 4, "`shoal watches` lists")
    one_line_error(cli("watch", str(cli.home.parent), "--name", "tmp"), 2, "holds shoal's home")
    after = {w["name"] for w in cli.json("watches")["watches"]}
    assert after == {w["name"] for w in before} | {"first-name"}
    again = cli.json("watch", str(folder), "--name", "first-name")
    assert again["added"] is False and again["share"]["created"] is False


def test_a_watch_survives_a_restart_and_catches_up_on_changes_made_meanwhile(folder):
    with running_daemon(WATCH_CONFIG) as cli:
        folder.mkdir(parents=True)
        (folder / "data.csv").write_text("a,b\n")
        start_watch(cli, folder, "--name", "durable")
        assert cli("daemon", "stop").returncode == 0
        (folder / "data.csv").write_text("a,b\n1,2\n")
        assert cli("daemon", "start").returncode == 0
        caught_up = wait_for_seq(cli, "durable", 2)
        assert caught_up["message"] == "watch: changes made while not watched"
        assert watch_of(cli, "durable")["path"] == str(folder.resolve())
        (folder / "more.csv").write_text("3,4\n")
        assert wait_for_seq(cli, "durable", 3)["files"] == 2
        assert cli.json("status")["watches"] == 1


def test_a_checkpoint_is_published_while_the_log_beside_it_is_still_being_written(cli, folder, tmp_path):
    folder.mkdir(parents=True)
    (folder / "train.log").write_text("epoch 0\n")
    start_watch(cli, folder, "--name", "training")
    source = folder.parent / "ckpt.src"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 4321))
    logger = start_logger(f"open:{folder / 'train.log'}", f"open:{folder / 'events.out'}")
    try:
        writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(source), str(folder / "ckpt_small.pt")])
        details = set()
        while writer.poll() is None:
            assert len(versions(cli, "training")) == 1, "published while every changed file was still being written"
            watch = watch_of(cli, "training")
            details.add(f"{watch['state']}: {watch['detail']}")
            time.sleep(0.2)
        closed = time.monotonic()
        assert writer.returncode == 0 and any(
            detail.startswith("waiting: ") and "train.log" in detail and detail.endswith(" open for writing")
            for detail in details
        ), details
        published = wait_for_seq(cli, "training", 2, timeout=closed + QUIET + 2 - time.monotonic())
        assert logger.poll() is None, "the version must come while the log is still open"
        assert published["message"] == "watch: 1 file changed (ckpt_small.pt)"
        # The log is in its last settled state, the new event file not there yet, the checkpoint whole.
        assert {name: e["size"] for name, e in entries_of(cli, "training@2").items()} == {
            "train.log": len("epoch 0\n"), "ckpt_small.pt": source.stat().st_size,
        }
        changes = cli.json("diff", "training@1", "training@2")["changes"]
        assert [(c["path"], c["change"]) for c in changes] == [("ckpt_small.pt", "added")]
        cli.json("fetch", "training@2", str(tmp_path / "copy"), "--timeout", "20")
        assert (tmp_path / "copy" / "ckpt_small.pt").read_bytes() == source.read_bytes()
        assert (tmp_path / "copy" / "train.log").read_text() == "epoch 0\n"
        watch = wait_until(lambda: watch_of(cli, "training")["state"] == "waiting", SETTLED, "waiting on the logs")
        assert watch_of(cli, "training")["detail"] == "events.out, train.log open for writing" and watch
        assert "waiting: events.out, train.log open for writing" in cli("watches").stdout
    finally:
        stop_logger(logger)


def test_logs_are_published_as_they_are_once_they_close_and_settle(cli, folder):
    folder.mkdir(parents=True)
    (folder / "train.log").write_text("epoch 0\n")
    start_watch(cli, folder, "--name", "logs-settle")
    logger = start_logger(f"open:{folder / 'train.log'}", str(folder / "metrics.csv"))
    try:
        time.sleep(2 * QUIET)
        (folder / "eval.json").write_text('{"acc": 0.9}')
        published = wait_for_seq(cli, "logs-settle", 2)
        assert published["message"] == "watch: 1 file changed (eval.json)"
        assert set(entries_of(cli, "logs-settle@2")) == {"train.log", "eval.json"}
        assert entries_of(cli, "logs-settle@2")["train.log"]["size"] == len("epoch 0\n")
        # The reopened log is named as still changing (unless caught open), the one kept open as open for writing.
        expected = "train.log open for writing, metrics.csv still changing"
        wait_until(lambda: watch_of(cli, "logs-settle")["detail"] == expected, SETTLED, expected)
    finally:
        stop_logger(logger)
    settled = wait_for_seq(cli, "logs-settle", 3)
    assert_no_new_version(cli, "logs-settle", 3)
    assert settled["message"] == "watch: 2 files changed (metrics.csv, train.log)"
    sizes = {name: e["size"] for name, e in entries_of(cli, "logs-settle@3").items()}
    assert sizes == {name: (folder / name).stat().st_size for name in ("train.log", "metrics.csv", "eval.json")}
    assert cli.json("verify", "logs-settle")["ok"] is True
