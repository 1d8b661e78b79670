"""LAN discovery over mDNS/DNS-SD: announce this daemon and report the peers announcing themselves.

The only module that touches zeroconf. zeroconf runs its own event-loop thread and
one thread per browser; everything that crosses into trio goes through
`trio.from_thread` (callbacks) or `trio.to_thread` (calls that block).

A sighting is a hint, not an identity: anyone on the LAN can announce any peer id.
The peer session's handshake is what proves who is at an address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import ifaddr
import trio
from zeroconf import (
    Error as ZeroconfError,
)
from zeroconf import (
    IPVersion,
    NonUniqueNameException,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from shoal.errors import ShoalError
from shoal.protocol.format.identity import BadPeerId, PeerId

log = logging.getLogger(__name__)

SERVICE_TYPE = "_shoal._tcp.local."
#: The TXT "v" this daemon writes and the only one it accepts.
DISCOVERY_VERSION = "1"
#: RFC 6762 suggests 75 minutes for PTR/TXT, which would keep a laptop that vanished
#: without a goodbye on everyone's list for that long; two minutes matches the host records.
RECORD_TTL = 120
#: A resolution normally hits the cache (answers carry SRV/TXT/A); this bounds the
#: rare network round trip, and with it how long cancellation may wait.
RESOLVE_TIMEOUT_MS = 2000
SIGHTINGS_BUFFER = 64
WILDCARD = "0.0.0.0"


class DiscoveryError(ShoalError):
    """mDNS discovery cannot run on this host as configured."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """A peer announced itself (or changed its announcement) at these "host:port" addresses."""

    peer_id: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lost:
    """A peer previously sighted withdrew its announcement, let it expire, or changed it into nonsense."""

    peer_id: str


def local_ipv4_addresses() -> tuple[str, ...]:
    """Every IPv4 address configured on this host's interfaces, loopback included."""
    return tuple(
        dict.fromkeys(str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4)
    )


def announce_addresses(listen_host: str, available: Iterable[str]) -> tuple[str, ...]:
    """The addresses to announce and answer mDNS on for a daemon listening on `listen_host`.

    The wildcard means every non-loopback IPv4 address in `available` (loopback is
    useless to other hosts); a specific address must be one of `available`.
    """
    available = tuple(available)
    if listen_host in ("", WILDCARD):
        chosen = tuple(ip for ip in available if not ipaddress.IPv4Address(ip).is_loopback)
        if not chosen:
            raise DiscoveryError("no IPv4 interface but loopback to announce on; connect a network or turn discovery off")
        return chosen
    try:
        ipaddress.IPv4Address(listen_host)
    except ValueError:
        raise DiscoveryError(
            f"discovery announces IPv4 addresses only; listen on {WILDCARD} or an IPv4 address, not {listen_host!r}"
        ) from None
    if listen_host not in available:
        raise DiscoveryError(f"{listen_host} is not an address of this host, so it cannot be announced")
    return (listen_host,)


class Discovery:
    """Announces `peer_id` at `port` on `addresses` and browses for other shoal daemons.

    Sightings and losses arrive on `sightings()`, a bounded channel: a reader that
    falls behind slows the browser down rather than losing events.
    """

    def __init__(self, peer_id: str, port: int, addresses: Sequence[str]) -> None:
        self._peer_id = str(PeerId.parse(peer_id))
        self._addresses = tuple(addresses)
        self._info = announcement(self._peer_id, port, self._addresses)
        self._send, self._receive = trio.open_memory_channel[Sighting | Lost](SIGHTINGS_BUFFER)
        # Browser callbacks are coalesced per service name (latest state wins), so the
        # zeroconf thread never waits on a slow reader and repeated updates cost one resolution.
        self._pending: dict[str, bool] = {}
        self._wakeup = trio.Event()
        self._sighted: dict[str, str] = {}

    def sightings(self) -> trio.MemoryReceiveChannel[Sighting | Lost]:
        """The channel every Sighting and Lost is delivered on; closed when `run` returns."""
        return self._receive

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce and browse until cancelled; `started()` once the announcement is out. Runs once."""
        token = trio.lowlevel.current_trio_token()

        def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
            present = state_change is not ServiceStateChange.Removed
            trio.from_thread.run_sync(self._note, name, present, trio_token=token)

        async with self._send:
            zc = await _open_zeroconf(self._addresses)
            try:
                await _register(zc, self._info, self._peer_id)
                browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
                try:
                    task_status.started()
                    await self._forward(zc)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(browser.cancel)
            finally:
                # close() also sends the goodbye for our announcement; its waits are bounded inside zeroconf.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(zc.close)

    def _note(self, name: str, present: bool) -> None:
        self._pending[name] = present
        self._wakeup.set()

    async def _forward(self, zc: Zeroconf) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._pending:
                name = next(iter(self._pending))
                present = self._pending.pop(name)
                event = await self._resolve(zc, name) if present else self._forget(name)
                if event is not None:
                    await self._send.send(event)

    async def _resolve(self, zc: Zeroconf, name: str) -> Sighting | Lost | None:
        info = ServiceInfo(SERVICE_TYPE, name)
        try:
            resolved = info.load_from_cache(zc) or await trio.to_thread.run_sync(info.request, zc, RESOLVE_TIMEOUT_MS)
        except ZeroconfError as error:
            # A busy zeroconf loop (EventLoopBlocked) costs this one sighting, not discovery as a whole.
            log.debug("resolving %s failed: %r", name, error)
            return None
        if not resolved:
            log.debug("could not resolve %s", name)
            return None
        sighting = sighting_of(info)
        if sighting is None or sighting.peer_id == self._peer_id:
            # An update can turn a sighted announcement into one we no longer understand.
            return self._forget(name)
        self._sighted[name] = sighting.peer_id
        return sighting

    def _forget(self, name: str) -> Lost | None:
        peer_id = self._sighted.pop(name, None)
        return None if peer_id is None else Lost(peer_id)


def announcement(peer_id: str, port: int, addresses: Sequence[str]) -> ServiceInfo:
    """The DNS-SD service a daemon with `peer_id` announces: reachable at `port` on `addresses`."""
    return ServiceInfo(
        SERVICE_TYPE,
        instance_name(peer_id),
        port=port,
        properties={"id": peer_id, "v": DISCOVERY_VERSION},
        server=f"{peer_id}.local.",
        host_ttl=RECORD_TTL,
        other_ttl=RECORD_TTL,
        parsed_addresses=list(addresses),
    )


def instance_name(peer_id: str) -> str:
    """The service instance name of `peer_id`: its text form, exactly a DNS label's 63-character maximum."""
    return f"{peer_id}.{SERVICE_TYPE}"


def sighting_of(info: ServiceInfo) -> Sighting | None:
    """The sighting a resolved announcement describes, or None if it is not one we understand."""
    properties = info.decoded_properties
    if properties.get("v") != DISCOVERY_VERSION or not info.port:
        return None
    try:
        peer_id = str(PeerId.parse(properties.get("id") or ""))
    except BadPeerId:
        return None
    # Holding the name to its id keeps one name one peer, so a Lost always names the right one.
    if info.name.lower() != instance_name(peer_id).lower():
        return None
    addresses = tuple(f"{ip}:{info.port}" for ip in info.parsed_addresses(IPVersion.V4Only))
    return Sighting(peer_id, addresses) if addresses else None


async def _open_zeroconf(addresses: tuple[str, ...]) -> Zeroconf:
    try:
        open_zeroconf = partial(Zeroconf, interfaces=list(addresses), ip_version=IPVersion.V4Only)
        return await trio.to_thread.run_sync(open_zeroconf)
    except OSError as error:
        where = ", ".join(addresses)
        raise DiscoveryError(f"cannot open the mDNS sockets on {where}: {error.strerror or error}") from error


async def _register(zc: Zeroconf, info: ServiceInfo, peer_id: str) -> None:
    try:
        await trio.to_thread.run_sync(zc.register_service, info)
    except NonUniqueNameException:
        raise DiscoveryError(f"another daemon on the LAN already announces peer id {peer_id}") from None
    except ZeroconfError as error:
        raise DiscoveryError(f"cannot announce on mDNS: {type(error).__name__} {error}") from error
