"""LAN discovery across real network namespaces, and the lab's bandwidth shaping itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from zeroconf import ServiceInfo

from shoal.daemon.net.discovery import (
    SERVICE_TYPE,
    DiscoveryError,
    Sighting,
    announce_addresses,
    announcement,
    instance_name,
    sighting_of,
)
from shoal.protocol.format.identity import PeerId
from tests.netns import Lab, netns_lab  # noqa: F401  (netns_lab is a fixture)

HELPERS = Path(__file__).parent.parent / "helpers"
PROBE = HELPERS / "discovery_probe.py"
TCP_RATE = HELPERS / "tcp_rate.py"
SIGHTING_DEADLINE = 10
LOSS_DEADLINE = 5
CAP = 100_000_000


def test_wildcard_announces_every_ipv4_address_but_loopback() -> None:
    available = ["127.0.0.1", "198.18.0.7", "127.0.1.1", "198.18.1.7"]
    assert announce_addresses("0.0.0.0", available) == ("198.18.0.7", "198.18.1.7")


def test_a_specific_listen_address_is_announced_alone() -> None:
    assert announce_addresses("198.18.1.7", ["127.0.0.1", "198.18.0.7", "198.18.1.7"]) == ("198.18.1.7",)


@pytest.mark.parametrize(
    ("host", "available", "complaint"),
    [
        ("0.0.0.0", ["127.0.0.1"], "but loopback"),
        ("198.18.0.9", ["127.0.0.1", "198.18.0.7"], "not an address of this host"),
        ("::", ["127.0.0.1", "198.18.0.7"], "IPv4 addresses only"),
    ],
)
def test_unannounceable_listen_addresses_are_refused(host: str, available: list[str], complaint: str) -> None:
    with pytest.raises(DiscoveryError, match=complaint):
        announce_addresses(host, available)


ALICE = str(PeerId(bytes(range(32))))
BOB = str(PeerId(bytes(range(1, 33))))


def test_an_announcement_reads_back_as_a_sighting_at_every_address() -> None:
    info = announcement(ALICE, 7453, ["198.18.0.1", "198.18.1.1"])
    assert info.decoded_properties == {"id": ALICE, "v": "1"}
    sighting = sighting_of(info)
    assert sighting is not None and sighting.peer_id == ALICE
    assert sorted(sighting.addresses) == ["198.18.0.1:7453", "198.18.1.1:7453"]


@pytest.mark.parametrize(
    ("name", "properties"),
    [
        (instance_name(ALICE), {"id": ALICE, "v": "2"}),
        (instance_name(ALICE), {"id": ALICE}),
        (instance_name(ALICE), {"id": "not-a-peer-id", "v": "1"}),
        (instance_name(BOB), {"id": ALICE, "v": "1"}),
        (f"alice.{SERVICE_TYPE}", {"id": ALICE, "v": "1"}),
    ],
    ids=["future version", "no version", "bad id", "another peer's name", "free-form name"],
)
def test_announcements_we_do_not_understand_are_not_sightings(name: str, properties: dict[str, str]) -> None:
    info = ServiceInfo(SERVICE_TYPE, name, port=7453, properties=properties, parsed_addresses=["198.18.0.1"])
    assert sighting_of(info) is None


def test_an_announcement_without_an_ipv4_address_is_not_a_sighting() -> None:
    assert sighting_of(announcement(ALICE, 7453, [])) is None
    assert sighting_of(announcement(ALICE, 7453, ["198.18.0.1"])) == Sighting(ALICE, ("198.18.0.1:7453",))


class Probe:
    """A discovery_probe.py process in a lab host, with the peers it currently sees."""

    def __init__(self, lab: Lab, host: int, peer_id: str, port: int) -> None:
        self.host = host
        self.peer_id = peer_id
        self.process = lab.run(host, [sys.executable, str(PROBE), peer_id, str(port)], stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self._stream = trio.lowlevel.FdStream(os.dup(self.process.stdout.fileno()))
        self._buffer = bytearray()
        self.seen: dict[str, list[str]] = {}

    async def next_event(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                raise AssertionError(f"host {self.host}'s probe exited with status {self.process.wait()}")
            self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        event = json.loads(line)
        if event["event"] == "sighting":
            assert event["peer_id"] != self.peer_id, f"host {self.host} reported its own announcement"
            self.seen[event["peer_id"]] = event["addresses"]
        elif event["event"] == "lost":
            del self.seen[event["peer_id"]]
        return event

    async def wait_for(self, wanted: dict[str, list[str]]) -> None:
        while self.seen != wanted:
            await self.next_event()

    async def wait_until_stopped(self) -> None:
        while (await self.next_event())["event"] != "stopped":
            pass

    async def aclose(self) -> None:
        await self._stream.aclose()


async def all_see_the_others(probes: list[Probe], announced: dict[str, list[str]], deadline: float) -> None:
    """Wait until each probe sees exactly the other entries of `announced` (peer id -> addresses)."""
    with trio.move_on_after(deadline) as scope:
        async with trio.open_nursery() as nursery:
            for probe in probes:
                others = {peer: at for peer, at in announced.items() if peer != probe.peer_id}
                nursery.start_soon(probe.wait_for, others)
    if scope.cancelled_caught:
        seen = {probe.host: probe.seen for probe in probes}
        raise AssertionError(f"after {deadline} s the hosts saw {seen}, not each other of {announced}")


@pytest.mark.slow
@pytest.mark.trio
async def test_hosts_on_a_lan_find_each_other_and_notice_one_leaving(netns_lab: Any) -> None:
    lab = netns_lab(3)
    ports = {i: 7450 + i for i in (1, 2, 3)}
    probes = [Probe(lab, i, str(PeerId(os.urandom(32))), port) for i, port in ports.items()]
    try:
        announced = {probe.peer_id: [f"{lab.addr(probe.host)}:{ports[probe.host]}"] for probe in probes}
        await all_see_the_others(probes, announced, SIGHTING_DEADLINE)

        *staying, leaving = probes
        leaving.process.send_signal(signal.SIGTERM)
        del announced[leaving.peer_id]
        with trio.fail_after(LOSS_DEADLINE):
            await leaving.wait_until_stopped()
        assert await trio.to_thread.run_sync(leaving.process.wait) == 0
        await all_see_the_others(staying, announced, LOSS_DEADLINE)
    finally:
        for probe in probes:
            await probe.aclose()


def measure(lab: Lab, sender: int, receiver: int, seconds: float = 1.5) -> float:
    """Bits per second host `sender` achieves over one TCP connection to host `receiver`."""
    address, port = lab.addr(receiver), "5201"
    sink_argv = [sys.executable, str(TCP_RATE), "recv", address, port, str(seconds)]
    sink = lab.run(receiver, sink_argv, stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and sink.stdout.readline() == "listening\n"
    source = lab.run(sender, [sys.executable, str(TCP_RATE), "send", address, port])
    output, _ = sink.communicate(timeout=seconds + 10)
    assert sink.returncode == 0 and source.wait(timeout=10) == 0
    return float(json.loads(output)["bits_per_second"])


@pytest.mark.slow
def test_shaping_caps_a_hosts_bandwidth_both_ways(netns_lab: Any) -> None:
    lab = netns_lab(2)
    unshaped = measure(lab, 1, 2)
    lab.shape(1, "100mbit")
    sending = measure(lab, 1, 2)
    receiving = measure(lab, 2, 1)
    for direction, rate in (("sending", sending), ("receiving", receiving)):
        assert 0.5 * CAP <= rate <= 1.1 * CAP, f"host 1 {direction} at {rate / 1e6:.1f} Mbit/s under a 100mbit cap"
    assert unshaped >= 3 * CAP, f"only {unshaped / 1e6:.1f} Mbit/s without shaping; the cap proves nothing"
