"""Three daemons on three hosts (network namespaces on one bridge) that find each
other by zeroconf alone, then share, fetch, and fetch from two sources at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.netns import Lab, netns_lab  # noqa: F401  (netns_lab is a fixture)

pytestmark = pytest.mark.slow


PORT = 7453


class Host:
    def __init__(self, lab: Lab, i: int) -> None:
        self.i = i
        self.lab = lab
        # Under /tmp: Unix socket paths are limited to 107 bytes.
        self.home = Path(tempfile.mkdtemp(prefix=f"shoal-lan{i}-", dir="/tmp"))
        self.log = open(self.home / "test-daemon.log", "ab")  # noqa: SIM115 - the daemon's stdout across restarts
        self._start()

    def _start(self, *options: str) -> None:
        argv = [
            sys.executable, "-m", "shoal", "--home", str(self.home), "daemon", "--listen", f"{self.lab.addr(self.i)}:{PORT}",
            *options,
        ]
        self.process = self.lab.run(self.i, argv, stdout=self.log, stderr=subprocess.STDOUT)

    def restart(self, *options: str) -> None:
        """Stop the daemon and start it again on the same home with `options`."""
        self.process.terminate()
        self.process.wait(10)
        self._start(*options)
        self.wait_ready()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # The control socket is a file: the CLI reaches it from any namespace.
        env = {**os.environ, "SHOAL_NO_AUTOSTART": "1"}
        return subprocess.run(
            [sys.executable, "-m", "shoal", "--home", str(self.home), *args],
            capture_output=True, text=True, env=env, timeout=timeout,
        )

    def json(self, *args: str, timeout: float = 60) -> dict:
        process = self.cli(*args, "--json", timeout=timeout)
        assert process.returncode == 0, process.stderr + self.daemon_log()
        return json.loads(process.stdout)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.cli("status").returncode == 0:
                return
            assert self.process.poll() is None, self.daemon_log()
            time.sleep(0.2)
        raise AssertionError(f"daemon {self.i} never answered:\n{self.daemon_log()}")

    def daemon_log(self) -> str:
        return (self.home / "test-daemon.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


def wait_online(host: Host, peer_ids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        online = {p["peer_id"] for p in host.json("peers")["peers"] if p["state"] == "online"}
        if peer_ids <= online:
            return
        time.sleep(0.3)
    raise AssertionError(f"host {host.i} never saw {peer_ids} online:\n{host.daemon_log()}")


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_three_hosts_discover_share_and_fetch_from_two(netns_lab, tmp_path: Path) -> None:  # noqa: F811
    lab = netns_lab(3)
    hosts = [Host(lab, i) for i in (1, 2, 3)]
    try:
        for host in hosts:
            host.wait_ready()
        ids = [host.json("id")["peer_id"] for host in hosts]
        # Trust by id only: no addresses, so every connection comes from mDNS.
        for host, my_id in zip(hosts, ids):
            for other in ids:
                if other != my_id:
                    assert host.cli("trust", other).returncode == 0
        for host, my_id in zip(hosts, ids):
            wait_online(host, set(ids) - {my_id})

        data = tmp_path / "ckpt"
        data.mkdir()
        for i in range(4):
            (data / f"shard{i}.bin").write_bytes(os.urandom(6_000_000))
        shared = hosts[0].json("share", str(data))
        assert shared["version"]["seq"] == 1

        first = hosts[1].json("fetch", "ckpt", str(tmp_path / "on2"), "--timeout", "30")
        assert files_of(tmp_path / "on2") == files_of(data)
        assert first["peers"] == {ids[0]: first["bytes_received"]}

        # Host 2 now seeds the same version: host 3 takes chunks from both.
        deadline = time.monotonic() + 15
        while sum(d["name"] == "ckpt" for d in hosts[2].json("ls", "--remote")["datasets"]) < 2:
            assert time.monotonic() < deadline, "host 3 never saw two seeders"
            time.sleep(0.3)
        second = hosts[2].json("fetch", "ckpt", str(tmp_path / "on3"), "--timeout", "30")
        assert files_of(tmp_path / "on3") == files_of(data)
        assert set(second["peers"]) == {ids[0], ids[1]}
        assert all(received > 0 for received in second["peers"].values()), second["peers"]
    finally:
        for host in hosts:
            host.stop()


def test_a_peer_trusted_after_discovery_is_reached_again_once_it_stops_announcing(netns_lab) -> None:  # noqa: F811
    lab = netns_lab(2)
    hosts = [Host(lab, i) for i in (1, 2)]
    try:
        for host in hosts:
            host.wait_ready()
        ids = [host.json("id")["peer_id"] for host in hosts]
        for host, other in ((hosts[0], ids[1]), (hosts[1], ids[0])):
            pending = wait_for(
                lambda host=host, other=other: next((p for p in host.json("peers")["peers"] if p["peer_id"] == other), None)
            )
            assert pending["state"] == "pending" and pending["trusted"] is False
        seen = {p["peer_id"]: p for p in hosts[0].json("peers")["peers"]}[ids[1]]
        assert seen["announced"] == [f"{lab.addr(2)}:{PORT}"], "what it announced, not a connection's source port"
        # Trust by id alone: the address is what discovery saw.
        for host, other in ((hosts[0], ids[1]), (hosts[1], ids[0])):
            assert host.cli("trust", other).returncode == 0
        for host, my_id in zip(hosts, ids):
            wait_online(host, set(ids) - {my_id})

        hosts[1].restart("--no-discovery")
        wait_online(hosts[0], {ids[1]})
        wait_online(hosts[1], {ids[0]})
    finally:
        for host in hosts:
            host.stop()


def wait_for(probe, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return found
