"""The installed `shoal` command against a real daemon process: output, JSON schemas, exit codes."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shoal.home import running_pid
from shoal.protocol.format.identity import PeerId

pytestmark = pytest.mark.slow


VERSION_KEYS = {"name", "seq", "id", "root", "parents", "author", "time", "message", "size", "files", "subsets"}
LOG_KEYS = VERSION_KEYS | {"author_peer", "author_name", "files_changed", "bytes_new", "kept", "kind"}
PEER_KEYS = {
    "peer_id", "short", "name", "trusted", "state", "address", "addresses", "announced", "rates", "added",
    "first_seen", "last_seen", "online", "discovered", "last_error", "bytes_in", "bytes_out",
}
STATUS_KEYS = {
    "running", "version", "pid", "home", "peer_id", "started", "uptime", "listen", "discovery", "datasets", "watches", "peers",
    "transfers", "retention",
}
VERSION_LINE = re.compile(r"(?P<label>[\w.-]+@\d+) (?P<id>[0-9a-f]{64})")


@pytest.fixture(scope="module")
def data():
    root = Path(tempfile.mkdtemp(prefix="shoal-data-", dir="/tmp"))
    dataset = root / "imagenet-mini"
    (dataset / "train").mkdir(parents=True)
    (dataset / "train" / "a.bin").write_bytes(os.urandom(300_000))
    (dataset / "train" / "b.bin").write_bytes(os.urandom(1000))
    (dataset / "labels.csv").write_text("a,1\nb,2\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def check_version(version: dict, name: str, seq: int) -> None:
    assert set(version) == VERSION_KEYS
    assert (version["name"], version["seq"]) == (name, seq)
    assert re.fullmatch(r"[0-9a-f]{64}", version["id"]) and re.fullmatch(r"[0-9a-f]{64}", version["author"])
    assert isinstance(version["time"], int) and isinstance(version["parents"], list)


def one_line_error(process, code: int, fragment: str) -> None:
    assert process.returncode == code, (process.stdout, process.stderr)
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shoal: "), process.stderr
    assert fragment in lines[0]
    assert "Traceback" not in process.stderr


def test_share_prints_the_version_and_a_summary_then_reports_unchanged_content(running, data):
    first = running("share", str(data / "imagenet-mini"), "-m", "first cut")
    assert first.returncode == 0, first.stderr
    line, summary = first.stdout.strip().splitlines()
    match = VERSION_LINE.fullmatch(line)
    assert match and match["label"] == "imagenet-mini@1"
    assert summary.startswith("new version: 3 files")
    again = running("share", str(data / "imagenet-mini"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == line
    assert again.stdout.splitlines()[1].startswith("unchanged since")


def test_share_json_then_ls_and_log_schemas(running, data):
    folder = data / "weights"
    folder.mkdir()
    (folder / "model.pt").write_bytes(os.urandom(5000))
    shared = running.json("share", str(folder), "--name", "resnet", "-m", "v1")
    assert set(shared) == {
        "version", "created", "new_bytes", "files_scanned", "files_rehashed", "warnings", "audience", "seen_by",
    }
    assert shared["created"] is True and shared["warnings"] == []
    check_version(shared["version"], "resnet", 1)
    (folder / "model.pt").write_bytes(os.urandom(6000))
    second = running.json("share", str(folder), "--name", "resnet", "-m", "v2")
    check_version(second["version"], "resnet", 2)
    assert second["version"]["parents"] == [shared["version"]["id"]]

    listing = running.json("ls")
    assert set(listing) == {"datasets"}
    resnet = next(entry for entry in listing["datasets"] if entry["name"] == "resnet")
    assert set(resnet) == {"name", "path", "head", "versions", "audience", "checkouts", "present", "seen_by"}
    assert resnet["path"] == str(folder) and resnet["versions"] == 2
    check_version(resnet["head"], "resnet", 2)
    assert [entry["name"] for entry in listing["datasets"]] == sorted(entry["name"] for entry in listing["datasets"])

    log = running.json("log", "resnet")
    assert set(log) == {"name", "versions"} and log["name"] == "resnet"
    assert [version["message"] for version in log["versions"]] == ["v2", "v1"]
    assert all(set(version) == LOG_KEYS for version in log["versions"])
    assert [version["kind"] for version in log["versions"]] == ["data", "data"]
    assert [(v["files_changed"], v["bytes_new"]) for v in log["versions"]] == [(1, 6000), (1, 5000)]
    human = running("log", "resnet")
    assert human.returncode == 0
    headers = ["VERSION", "ID", "TIME", "AUTHOR", "SIZE", "FILES", "CHANGED", "NEW", "KEPT", "MESSAGE"]
    assert human.stdout.splitlines()[0].split() == headers
    assert human.stdout.splitlines()[1].startswith("@2")


def test_verify_passes_then_fails_with_exit_5_once_a_file_changes(running, data):
    folder = data / "verify-me"
    folder.mkdir()
    (folder / "x.txt").write_text("hello")
    assert running("share", str(folder)).returncode == 0
    ok = running("verify", "verify-me")
    assert ok.returncode == 0 and ok.stdout.strip() == "verify-me@1 ok: 1 file match"
    (folder / "x.txt").write_text("HELLO")
    failed = running("verify", "verify-me")
    assert failed.returncode == 5
    assert failed.stdout.splitlines() == [
        "verify-me@1 FAILED: 1 problem in 1 file",
        "  x.txt: content differs",
        f"to publish the folder as it is now, run: shoal share {folder}",
    ]
    report = running("verify", "verify-me", "--json")
    assert report.returncode == 5
    body = json.loads(report.stdout)
    assert set(body) == {"name", "version", "path", "files_checked", "ok", "problems", "problems_total", "repair"}
    assert body["ok"] is False and body["problems"] == [{"path": "x.txt", "reason": "content differs"}]


def test_status_and_id(running):
    status = running.json("status")
    assert set(status) == STATUS_KEYS
    assert status["running"] is True and status["pid"] == running_pid(running.home)
    assert status["home"] == str(running.home)
    # Configured as port 0: the daemon reports the port it really bound.
    host, port = status["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0 and status["discovery"] is False
    assert set(status["peers"]) == {"trusted", "pending", "online"}
    identity = running.json("id")
    assert set(identity) == {"peer_id", "short", "listen"}
    assert identity["peer_id"] == status["peer_id"]
    assert str(PeerId.parse(identity["peer_id"])) == identity["peer_id"]
    assert running("id").stdout.strip() == identity["peer_id"]
    human = running("status").stdout
    assert "running, pid" in human and identity["peer_id"] in human


def test_trust_list_and_untrust_a_peer(running):
    peer_id = str(PeerId.from_public_key(os.urandom(32)))
    trusted = running.json("trust", peer_id, "--name", "bob", "--addr", "127.0.0.1:7001", "--addr", "127.0.0.1:7002")
    assert set(trusted) == {"peer"}
    assert set(trusted["peer"]) == PEER_KEYS
    assert trusted["peer"]["addresses"] == ["127.0.0.1:7001", "127.0.0.1:7002"]
    peers = running.json("peers")
    assert set(peers) == {"peers"}
    [bob] = [peer for peer in peers["peers"] if peer["peer_id"] == peer_id]
    assert (bob["name"], bob["state"], bob["trusted"]) == ("bob", "offline", True)
    assert "bob" in running("peers").stdout
    untrusted = running("untrust", "bob")
    assert untrusted.returncode == 0 and untrusted.stdout.startswith("no longer trusting bob")
    assert all(peer["peer_id"] != peer_id for peer in running.json("peers")["peers"])


def test_trusting_our_own_id_or_a_mistyped_one_is_a_usage_error(running):
    own = running.json("id")["peer_id"]
    one_line_error(running("trust", own), 2, "own id")
    one_line_error(running("trust", own[:-1] + ("A" if own[-1] != "A" else "B")), 2, "typo")


def test_errors_are_one_line_with_documented_exit_codes(running, data):
    one_line_error(running("log", "no-such-dataset"), 4, "no dataset named 'no-such-dataset'")
    one_line_error(running("verify", "no-such-dataset"), 4, "no-such-dataset")
    one_line_error(running("untrust", "nobody"), 4, "no trusted peer")
    one_line_error(running("share", str(data / "missing")), 1, "does not exist")
    one_line_error(running("share"), 2, "shoal share --help")
    one_line_error(running("fetch", "nothing-here", "--timeout", "1"), 6, "no peer has nothing-here")
    labels = data / "imagenet-mini" / "labels.csv"
    one_line_error(running("fetch", "imagenet-mini@1", str(labels), "--timeout", "1"), 2, "is not a folder")
    assert "no peer offers a dataset" in running("ls", "--remote").stdout
    one_line_error(running("config", "set", "retention.max_versions", "0"), 2, "at least 1")


def test_config_set_reloads_the_running_daemon(running):
    changed = running.json("config", "set", "bandwidth.global_limit", "100MB/s")
    assert changed == {"key": "bandwidth.global_limit", "value": 100_000_000, "reloaded": True, "restart_required": False}
    restart = running("config", "set", "discovery", "true")
    assert restart.returncode == 0
    assert restart.stdout.strip() == "discovery = true"
    assert "restart the daemon" in restart.stderr
    values = running.json("config", "get")
    assert values["bandwidth.global_limit"] == 100_000_000 and values["discovery"] is True
    assert running("config", "get", "bandwidth.global_limit").stdout.strip() == "100000000"
    running("config", "set", "discovery", "false")


def test_commands_start_the_daemon_on_demand_and_say_so(shoal, home):
    identity = shoal("id")
    assert identity.returncode == 0, identity.stderr
    pid = running_pid(home)
    assert pid is not None
    assert f"started the daemon (pid {pid})" in identity.stderr
    assert str(PeerId.parse(identity.stdout.strip())) == identity.stdout.strip()
    assert shoal("daemon", "status", "--json").returncode == 0
    assert shoal("daemon", "start").stdout.strip() == f"shoal daemon already running (pid {pid})"
    stopped = shoal("daemon", "stop")
    assert stopped.stdout.strip() == f"shoal daemon stopped (pid {pid})"
    assert shoal("daemon", "status").returncode == 3


def test_autostart_can_be_turned_off_by_flag_or_environment(shoal, home):
    one_line_error(shoal("status", "--no-autostart"), 3, "shoal daemon start")
    one_line_error(shoal("ls", env={"SHOAL_NO_AUTOSTART": "1"}), 3, "autostart is off")
    assert running_pid(home) is None
    assert not (home / "control.sock").exists()


def test_the_console_script_runs_main(home):
    script = Path(sys.executable).parent / "shoal"
    if not script.exists():
        pytest.skip("shoal is not installed as a console script in this environment")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("shoal ")
    missing = subprocess.run(
        [str(script), "--home", str(home), "log", "x", "--no-autostart"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 3
