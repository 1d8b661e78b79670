"""A lab of network namespaces for multi-host tests: n hosts on one switch, 198.18.0.0/24.

Host i (1-based) is namespace `<lab>-h<i>` with loopback up and `eth0` at 198.18.0.i/24;
each eth0 is a veth whose other end is a port of a Linux bridge living in its own
namespace `<lab>-sw`, so the lab adds nothing to the root namespace and deleting the
namespaces removes every link. Multicast snooping is off so mDNS floods like on a
plain switch.

Use the `netns_lab` fixture: `lab = netns_lab(3)`. It needs root and iproute2; where
they are missing the test fails saying so, unless SHOAL_NO_NETNS=1 asks for a skip.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

OPT_OUT_ENV = "SHOAL_NO_NETNS"
SUBNET = "198.18.0"
MAX_HOSTS = 254
HOST_LINK = "eth0"
BRIDGE = "br0"
#: tbf's queue in time; deep enough for TCP to fill the link, shallow enough to measure it.
SHAPING_LATENCY = "20ms"
_RATE = re.compile(r"(\d+(?:\.\d+)?)([kmg]?)bit")
_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


class LabError(Exception):
    """An ip/tc command the lab depends on failed."""


class Lab:
    """n hosts on one bridge; every process started with `run` is killed at `close`."""

    def __init__(self, size: int) -> None:
        if not 1 <= size <= MAX_HOSTS:
            raise ValueError(f"a lab has 1 to {MAX_HOSTS} hosts, not {size}")
        self.size = size
        # The pid tells a person whose leftovers these are; the random part keeps parallel runs apart.
        self.name = f"shoal-{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.name}-sw"
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def namespace(self, i: int) -> str:
        """The namespace name of host i."""
        self._check_host(i)
        return f"{self.name}-h{i}"

    def addr(self, i: int) -> str:
        """Host i's IPv4 address."""
        self._check_host(i)
        return f"{SUBNET}.{i}"

    def run(self, i: int, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside host i; it is killed at teardown if still running."""
        process = subprocess.Popen(["ip", "netns", "exec", self.namespace(i), *argv], **popen_kw)
        self._processes.append(process)
        return process

    def shape(self, i: int, rate: str = "100mbit") -> None:
        """Limit host i to `rate` (tc syntax, e.g. "100mbit") in each direction.

        Both ends of its veth get a token bucket: eth0 caps what the host sends, the
        bridge port caps what it receives, so no ifb redirection is needed.
        """
        bits_per_second = _parse_rate(rate)
        # A burst of ~10 ms keeps short-term overshoot small yet never below two full frames.
        burst = max(bits_per_second // 8 // 100, 2 * 1514)
        tbf = ["root", "tbf", "rate", rate, "burst", str(burst), "latency", SHAPING_LATENCY]
        _run(["tc", "-n", self.namespace(i), "qdisc", "replace", "dev", HOST_LINK, *tbf])
        _run(["tc", "-n", self.switch, "qdisc", "replace", "dev", _port(i), *tbf])

    def close(self) -> None:
        """Kill everything running in the lab and delete its namespaces; safe to call twice."""
        failures = []
        for process in self._processes:
            if process.poll() is None:
                process.kill()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                failures.append(f"pid {process.pid} survived SIGKILL")
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        for namespace in reversed(self._namespaces):
            # A process forked by one we started would keep the namespace's links alive.
            for pid in _ip("netns", "pids", namespace, check=False).split():
                _kill(int(pid))
            result = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True)
            if result.returncode != 0:
                failures.append(f"{namespace}: {result.stderr.strip()}")
        self._namespaces.clear()
        if failures:
            raise LabError(f"lab {self.name} did not come down cleanly: " + "; ".join(failures))

    def _build(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for i in range(1, self.size + 1):
            host = self.namespace(i)
            self._add_namespace(host)
            _ip("-n", self.switch, "link", "add", _port(i), "type", "veth", "peer", "name", HOST_LINK, "netns", host)
            _ip("-n", self.switch, "link", "set", _port(i), "master", BRIDGE, "up")
            _ip("-n", host, "link", "set", "lo", "up")
            _ip("-n", host, "addr", "add", f"{self.addr(i)}/24", "dev", HOST_LINK)
            _ip("-n", host, "link", "set", HOST_LINK, "up")

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)

    def _check_host(self, i: int) -> None:
        if not 1 <= i <= self.size:
            raise ValueError(f"hosts are numbered 1 to {self.size}, not {i}")


def require_netns() -> None:
    """Fail (or skip, when SHOAL_NO_NETNS=1) unless this machine can build a lab."""
    if os.environ.get(OPT_OUT_ENV) == "1":
        pytest.skip(f"{OPT_OUT_ENV}=1: network-namespace tests skipped on request")
    missing = [f"the {tool!r} command (iproute2)" for tool in ("ip", "tc") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.insert(0, "root (ip netns add needs CAP_SYS_ADMIN)")
    if missing:
        pytest.fail(_unavailable(" and ".join(missing)), pytrace=False)
    trial = f"shoal-{os.getpid()}-{secrets.token_hex(3)}-trial"
    try:
        _ip("netns", "add", trial)
    except LabError as error:
        pytest.fail(_unavailable(str(error)), pytrace=False)
    _ip("netns", "del", trial)


@pytest.fixture
def netns_lab() -> Iterator[Callable[[int], Lab]]:
    """A factory of labs: `netns_lab(n)` builds n hosts; all are torn down after the test.

    The machine is checked here, at setup, so a missing capability is reported as the
    test's setup failure (or skip) even when the test body runs inside trio.
    """
    require_netns()
    labs: list[Lab] = []

    def make(size: int) -> Lab:
        lab = Lab(size)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in labs:
        try:
            lab.close()
        except LabError as error:
            errors.append(str(error))
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)


def _unavailable(what: str) -> str:
    return (
        f"network-namespace tests cannot run here: {what}. "
        f"Run as root with iproute2 installed, or set {OPT_OUT_ENV}=1 to skip them explicitly."
    )


def _parse_rate(rate: str) -> int:
    match = _RATE.fullmatch(rate.lower())
    if match is None:
        raise ValueError(f"rates look like 100mbit, 2.5gbit or 800kbit, not {rate!r}")
    return int(float(match[1]) * _RATE_UNITS[match[2]])


def _port(i: int) -> str:
    return f"p{i}"


def _ip(*args: str, check: bool = True) -> str:
    return _run(["ip", *args], check=check)


def _run(argv: list[str], *, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or f'exit status {result.returncode}'}")
    return result.stdout


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
