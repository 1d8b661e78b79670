"""Interrupting `shoal fetch` again and again between two real daemons (SPEC, "Cancelling").

Every Ctrl-C of a fetch makes the receiving daemon CANCEL the requests it has
open at the sender; the sender must still end each with END, or the request ids
stay taken on both sides and, after a few interrupts, the session refuses every
request (at most 32 may be open). The sender is rate-limited so that every
interrupted fetch has requests in flight when it is stopped.

A cancelled request still delivers the group of chunks it had queued (a couple
of MB), so the file is large enough that forty interrupts never complete it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from linked import files_of, linked_daemons, ok

from shoal.client.blocking import ControlClient
from shoal.home import socket_path

pytestmark = pytest.mark.slow


NAME = "slow"
SIZE = 480_000_000
INTERRUPTS = 40


def start_fetch(cli, dest: Path) -> subprocess.Popen:
    """`shoal fetch` in the background, SIGINT at its default so Ctrl-C reaches it (see test_faults)."""
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal", "--home", str(cli.home), "fetch", NAME, str(dest), "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_until_ended(client: ControlClient) -> None:
    """Wait until the daemon has ended the interrupted transfer, so the next one is not mistaken for it."""
    deadline = time.monotonic() + 30
    while client.call("status", timeout=10)["transfers"]:
        assert time.monotonic() < deadline, "an interrupted fetch's transfer never ended"
        time.sleep(0.02)


def wait_until_receiving(client: ControlClient, fetch: subprocess.Popen) -> None:
    """Wait until the fetch has received chunk bytes: it has requests open at the sender."""
    deadline = time.monotonic() + 30
    while not any(t["bytes_received"] for t in client.call("status", timeout=10)["transfers"]):
        assert fetch.poll() is None, f"the fetch ended before it could be interrupted: {fetch.communicate()}"
        assert time.monotonic() < deadline, "the interrupted fetches no longer receive anything"
        time.sleep(0.02)


def test_forty_interrupted_fetches_leave_the_session_usable(tmp_path: Path) -> None:
    with linked_daemons(2) as (sender, receiver):
        ok(sender("config", "set", "bandwidth.global_limit", "16MB/s"))
        folder = tmp_path / "shared"
        folder.mkdir()
        (folder / "weights.bin").write_bytes(os.urandom(SIZE))
        ok(sender("share", str(folder), "--name", NAME))
        dest = tmp_path / "copy"
        with ControlClient.connect(socket_path(receiver.home)) as client:
            for _ in range(INTERRUPTS):
                fetch = start_fetch(receiver, dest)
                wait_until_receiving(client, fetch)
                fetch.send_signal(signal.SIGINT)
                _, err = fetch.communicate(timeout=20)
                assert fetch.returncode == 130, err
                wait_until_ended(client)

        ok(sender("config", "set", "bandwidth.global_limit", "0"))
        fetched = receiver.json("fetch", NAME, str(dest), "--timeout", "30")
        assert fetched["version"]["name"] == NAME
        assert files_of(dest) == files_of(folder)
        # One session carried every request: none was closed for breaking the request rules.
        for cli in (sender, receiver):
            log = (cli.home / "daemon.log").read_text(errors="replace")
            assert "bad-request" not in log and "ended:" not in log, log[-3000:]
