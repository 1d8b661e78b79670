"""Honest numbers and errors that name the peer (issue 18, items 2 and 3), between real daemons.

Summaries count what the selection holds and what was placed, at a rate that
matches the time they show; progress shows no rate while no peer serves the
fetch and names the peer it waits for; a fetch no trusted peer can serve fails
within seconds, naming the peers it asked and what to run.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from linked import files_of, linked_daemons, ok, write_files

from shoal.client.blocking import ControlClient
from shoal.home import socket_path

pytestmark = pytest.mark.slow

MB = 1_000_000
CKPTS = {f"ckpts/step{i}.pt": 400_000 + i for i in range(3)}
METRICS = {f"metrics/run{i:02}.csv": 2_000 + i for i in range(20)}
#: A peer id as the CLI writes one: 8 groups of 7 characters.
PEER_ID = re.compile(r"[A-Z2-7]{7}(-[A-Z2-7]{7}){7}")
SUMMARY = re.compile(
    r"fetched into .*: (?P<files>[\d,]+) files?, (?P<size>[\d.]+ [kMG]?B) \((?P<written>[\d,]+) written,"
    r" (?P<present>[\d,]+) already there\); (?P<received>[\d.]+ [kMG]?B) received from 1 peer"
    r" in (?P<seconds>[\d.]+)s \((?P<rate>[\d.]+ [kMG]?B)/s\)"
)
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def size_of(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def background(cli, *args: str) -> subprocess.Popen:
    """A `shoal` command running on while the test looks at the daemons; stderr a pipe (plain progress lines)."""
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal", "--home", str(cli.home), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def transfer_of(cli) -> dict | None:
    with ControlClient.connect(socket_path(cli.home)) as client:
        transfers = client.call("status", timeout=10)["transfers"]
    return transfers[0] if transfers else None


def wait_for(what: str, predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_a_subset_fetch_counts_the_subset_and_times_its_rate_and_a_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "run"
        write_files(data, CKPTS | METRICS)
        ok(a("share", str(data)))
        ok(a("subset", "run", "ckpts", "--include", "ckpts/"))
        # A receiving cap makes the fetch last long enough for its time and rate to be measured.
        ok(b("config", "set", "bandwidth.global_limit", "2MB/s"))

        # The first fetch of the checkpoints: every byte comes from the peer.
        summary = ok(b("fetch", "run:ckpts", str(tmp_path / "human"), "--timeout", "20")).splitlines()[1]
        shown = SUMMARY.fullmatch(summary.split(", 0 B reused")[0])
        assert shown is not None, summary
        assert (shown["files"], shown["written"], shown["present"]) == ("3", "3", "0")
        assert size_of(shown["size"]) == pytest.approx(sum(CKPTS.values()), rel=0.05)
        # The rate is the bytes over the time the line shows, not over that time rounded down.
        received, seconds, rate = size_of(shown["received"]), float(shown["seconds"]), size_of(shown["rate"])
        assert rate * seconds == pytest.approx(received, rel=0.05), summary

        dest = tmp_path / "ckpts"
        fetched = b.json("fetch", "run:ckpts", str(dest), "--timeout", "20")
        assert set(files_of(dest)) == set(CKPTS)
        assert (fetched["files_total"], fetched["bytes_total"]) == (len(CKPTS), sum(CKPTS.values()))
        assert (fetched["files_written"], fetched["files_present"]) == (3, 0)
        assert fetched["version"]["files"] == len(CKPTS) + len(METRICS), "the version is the whole run"

        again = b.json("fetch", "run:ckpts", str(dest), "--timeout", "20")
        assert (again["files_total"], again["files_written"], again["files_present"]) == (3, 0, 3)

        one = b.json("fetch", "run", str(tmp_path / "one"), "--include", "metrics/run07.csv", "--timeout", "20")
        assert (one["files_total"], one["bytes_total"], one["files_written"]) == (1, 2_007, 1)

        # Sharing a folder that is not there says what to do about it.
        failed = a("share", str(tmp_path / "nope"))
        assert failed.returncode == 1
        assert failed.stderr == (
            f"shoal: {tmp_path / 'nope'} does not exist; check the path (a folder is shared with"
            " `shoal share PATH --name NAME`), or see what is shared here already with `shoal ls`\n"
        )



def bottleneck_is(cli, name: str) -> bool:
    transfer = transfer_of(cli)
    return transfer is not None and transfer["bottleneck"] == name


def test_a_capped_transfer_names_the_cap_and_with_the_only_peer_gone_progress_names_it_and_shows_no_rate(
    tmp_path: Path,
) -> None:
    with linked_daemons(2) as (sender, receiver):
        data = tmp_path / "big"
        # Long enough at 2 MB/s (24 s) for both caps to be seen in turn, with up to 32 MiB of runs in flight.
        write_files(data, {"weights.bin": 48 * MB})
        ok(sender("share", str(data)))
        ok(sender("config", "set", "bandwidth.global_limit", "2MB/s"))
        # --timeout also bounds a request's silence: long enough for a capped peer, short once it is gone.
        fetch = background(receiver, "fetch", "big", str(tmp_path / "got"), "--timeout", "4")
        wait_for("the sender's cap to limit the fetch", lambda: bottleneck_is(receiver, "rate limit (sender)"))
        # The caps change hands mid-transfer: the sender tells its peers of a new cap at once.
        ok(receiver("config", "set", "bandwidth.per_peer_limit", "2MB/s"))
        ok(sender("config", "set", "bandwidth.global_limit", "0"))
        wait_for("the receiver's cap to limit the fetch", lambda: bottleneck_is(receiver, "rate limit (receiver)"))

        ok(sender("daemon", "stop"))
        waiting = wait_for("the fetch to wait for a peer", lambda: (t := transfer_of(receiver)) and t["waiting"] and t)
        assert (waiting["rate"], waiting["eta"], waiting["bottleneck"]) == (0, None, "waiting for peers")
        assert re.fullmatch(r"waiting for a peer that has big@1 \(peer0 is offline since \d\d:\d\d\)", waiting["waiting"])

        _, stderr = fetch.communicate(timeout=60)
        assert fetch.returncode == 6, stderr
        lines = stderr.splitlines()
        said = lines.index(waiting["waiting"])
        assert lines.count(waiting["waiting"]) == 1, stderr
        assert not any("/s" in line or "ETA" in line for line in lines[said:]), stderr
        assert lines[-1].startswith("shoal: every peer serving big left or failed (peer0: "), stderr
        assert "`shoal peers`" in lines[-1] and not PEER_ID.search(stderr), stderr


def test_a_fetch_no_peer_can_serve_fails_fast_naming_the_peers_it_asked(tmp_path: Path) -> None:
    with linked_daemons(3) as (receiver, online, gone):
        ok(gone("daemon", "stop"))
        wait_for("peer2 to be offline", lambda: {p["name"]: p["state"] for p in receiver.json("peers")["peers"]}
                 == {"peer1": "online", "peer2": "offline"})

        failed = receiver("fetch", "nosuch", str(tmp_path / "nosuch"))
        assert failed.returncode == 6, failed.stderr
        lines = failed.stderr.splitlines()
        assert lines[:-1] in ([], ["looking for nosuch on 2 trusted peers…"]), failed.stderr
        error = lines[-1]
        assert error.startswith("shoal: no trusted peer has nosuch (peer1 does not have it; peer2 is offline since ")
        # It ended because every trusted peer had been tried, not on a timeout (whose error says "waited Ns").
        assert "waited" not in error, error
        assert "`shoal peers`" in error and "`shoal fetch nosuch --timeout 60`" in error
        assert not PEER_ID.search(failed.stderr), failed.stderr

        # With --timeout the fetch waits for a peer that has it: here peer1 shares it meanwhile.
        fetch = background(receiver, "fetch", "nosuch", str(tmp_path / "later"), "--timeout", "60")
        wait_for("the fetch to look for nosuch", lambda: transfer_of(receiver))
        write_files(tmp_path / "nosuch", {"a.txt": 10})
        ok(online("share", str(tmp_path / "nosuch")))
        _, stderr = fetch.communicate(timeout=60)
        assert fetch.returncode == 0, stderr
        assert files_of(tmp_path / "later") == {"a.txt": (tmp_path / "nosuch" / "a.txt").read_bytes()}

