"""The trust store: which peers we exchange data with, and which we have only seen.

Kept in home/peers.toml, rewritten atomically on every change:

    [trusted."<peer id>"]
    name = "alice"
    addresses = ["192.168.1.20:7453"]
    announced = ["192.168.1.20:7453", "[fe80::1%eth0]:7453"]
    added = 1700000000

    [pending."<peer id>"]
    addresses = ["192.168.1.31:7453"]
    first_seen = 1700000000
    last_seen = 1700000420

A peer is reached at the addresses the user gave (`addresses`) and at those it
last announced by mDNS (`announced`), which are kept so that it stays reachable
once it stops announcing. The source address of a connection it made is never
stored: its port is an ephemeral one, where nothing listens. A pending peer that
only ever connected to us therefore has no addresses.
"""

import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shoal.daemon.config import parse_host_port
from shoal.daemon.toml_file import write_toml_atomic
from shoal.errors import ConfigError, ShoalError, UnknownPeer, UsageError
from shoal.protocol.format.identity import BadPeerId, PeerId

PEERS_FILE = "peers.toml"
#: Anyone on the LAN can announce peer ids; a cap keeps a flood from growing the file.
MAX_PENDING = 256
#: last_seen is persisted at this granularity so a chatty peer does not rewrite the file.
LAST_SEEN_PERSIST_INTERVAL = 60
MIN_PREFIX = 4
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    """A peer we exchange datasets with."""

    peer_id: str
    name: str
    #: Given by the user with `trust --addr`; a later `--addr` replaces them.
    addresses: tuple[str, ...]
    added: int
    #: What the peer last announced on the LAN.
    announced: tuple[str, ...] = ()

    def dial_addresses(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.addresses + self.announced))


@dataclass(frozen=True, slots=True)
class PendingPeer:
    """A peer that contacted us or was discovered, but that nobody trusted yet."""

    peer_id: str
    #: What it announced on the LAN; empty for a peer that only connected to us.
    addresses: tuple[str, ...]
    first_seen: int
    last_seen: int


@dataclass(frozen=True, slots=True)
class TrustListing:
    """Everything in the store, each part sorted by name or id."""

    trusted: tuple[TrustedPeer, ...]
    pending: tuple[PendingPeer, ...]


class TrustStore:
    """Trusted and pending peers, persisted in home/peers.toml."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._trusted: dict[str, TrustedPeer] = {}
        self._pending: dict[str, PendingPeer] = {}
        self._persisted_last_seen: dict[str, int] = {}
        self._load()

    @classmethod
    def open(cls, home: Path, *, clock: Callable[[], float] = time.time) -> "TrustStore":
        """Load home/peers.toml (absent means empty)."""
        return cls(home / PEERS_FILE, clock=clock)

    def trust(self, peer_id: str, name: str | None = None, addresses: Iterable[str] = ()) -> TrustedPeer:
        """Trust a peer, or update one already trusted: a new name, and `addresses`
        (when given) instead of those given before, so a wrong one can be taken back."""
        canonical = canonical_peer_id(peer_id)
        new_addresses = tuple(dict.fromkeys(_check_address(address) for address in addresses))
        pending = self._pending.pop(canonical, None)
        old = self._trusted.get(canonical)
        peer = TrustedPeer(
            peer_id=canonical,
            name=_check_name(name) if name is not None else (old.name if old else PeerId.parse(canonical).short()),
            addresses=new_addresses or (old.addresses if old else ()),
            added=old.added if old else self._now(),
            announced=pending.addresses if pending else (old.announced if old else ()),
        )
        self._trusted[canonical] = peer
        self._save()
        return peer

    def untrust(self, ref: str) -> TrustedPeer:
        """Stop trusting the peer `ref` names (full id, name or unique id prefix)."""
        peer = self._trusted.pop(self.resolve(ref))
        self._save()
        return peer

    def resolve(self, ref: str) -> str:
        """The id of the trusted peer `ref` names: a full id, its name, or a unique prefix of its id."""
        try:
            canonical: str | None = str(PeerId.parse(ref))
        except BadPeerId:
            canonical = None
        if canonical in self._trusted:
            return canonical
        prefix = _compact(ref)
        by_name = [peer.peer_id for peer in self._trusted.values() if peer.name == ref]
        by_prefix = [pid for pid in self._trusted if len(prefix) >= MIN_PREFIX and _compact(pid).startswith(prefix)]
        matches = by_name or by_prefix
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"{ref!r} matches {len(matches)} trusted peers; give the full peer id")
        raise UnknownPeer(f"no trusted peer is called {ref!r}; see `shoal peers` for their ids")

    def is_trusted(self, peer_id: str) -> bool:
        """Whether this exact peer id is trusted."""
        return canonical_peer_id(peer_id) in self._trusted

    def name_of(self, peer_id: str) -> str:
        """What messages call a peer: its trust name, or its short id once it is no longer trusted."""
        trusted = self._trusted.get(peer_id)
        return trusted.name if trusted is not None else PeerId.parse(peer_id).short()

    def get(self, peer_id: str) -> TrustedPeer | None:
        """The trusted entry for this exact peer id, if any."""
        return self._trusted.get(canonical_peer_id(peer_id))

    def list(self) -> TrustListing:
        """Trusted peers by name, pending ones most recently seen first."""
        trusted = sorted(self._trusted.values(), key=lambda peer: (peer.name, peer.peer_id))
        pending = sorted(self._pending.values(), key=lambda peer: (-peer.last_seen, peer.peer_id))
        return TrustListing(tuple(trusted), tuple(pending))

    def record_pending(self, peer_id: str, announced: tuple[str, ...] = ()) -> PendingPeer | None:
        """Note that an untrusted peer was seen, announcing `announced` (empty: it
        connected to us, which tells no address); None if it is trusted."""
        canonical = canonical_peer_id(peer_id)
        if canonical in self._trusted:
            return None
        for address in announced:
            _check_address(address)
        now = self._now()
        old = self._pending.get(canonical)
        addresses = announced or (old.addresses if old else ())
        peer = PendingPeer(canonical, addresses, old.first_seen if old else now, now)
        self._pending[canonical] = peer
        self._evict_oldest_pending()
        changed = old is None or old.addresses != addresses
        stale = now - self._persisted_last_seen.get(canonical, 0) >= LAST_SEEN_PERSIST_INTERVAL
        if changed or stale:
            self._save()
        return peer

    def record_announced(self, peer_id: str, announced: tuple[str, ...]) -> None:
        """Keep what a trusted peer announces, to dial it there even once it stops announcing."""
        canonical = canonical_peer_id(peer_id)
        old = self._trusted.get(canonical)
        if old is None or not announced or old.announced == announced:
            return
        for address in announced:
            _check_address(address)
        self._trusted[canonical] = replace(old, announced=announced)
        self._save()

    def _now(self) -> int:
        return int(self._clock())

    def _evict_oldest_pending(self) -> None:
        while len(self._pending) > MAX_PENDING:
            oldest = min(self._pending.values(), key=lambda peer: peer.last_seen)
            del self._pending[oldest.peer_id]

    def _load(self) -> None:
        try:
            with self._path.open("rb") as file:
                table = tomllib.load(file)
        except FileNotFoundError:
            return
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read {self._path} ({exc}); fix or remove it") from None
        try:
            self._trusted = {pid: _trusted_from(pid, entry) for pid, entry in table.get("trusted", {}).items()}
            self._pending = {pid: _pending_from(pid, entry) for pid, entry in table.get("pending", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError, ShoalError) as exc:
            raise ConfigError(f"{self._path} is damaged ({exc!r}); fix or remove it") from None
        self._persisted_last_seen = {pid: peer.last_seen for pid, peer in self._pending.items()}

    def _save(self) -> None:
        table: dict[str, Any] = {
            "trusted": {
                pid: {
                    "name": peer.name, "addresses": list(peer.addresses), "announced": list(peer.announced),
                    "added": peer.added,
                }
                for pid, peer in self._trusted.items()
            },
            "pending": {
                pid: {"addresses": list(peer.addresses), "first_seen": peer.first_seen, "last_seen": peer.last_seen}
                for pid, peer in self._pending.items()
            },
        }
        write_toml_atomic(self._path, table)
        self._persisted_last_seen = {pid: peer.last_seen for pid, peer in self._pending.items()}


def canonical_peer_id(peer_id: str) -> str:
    """The canonical text of a peer id typed by a person; UsageError if it is not one."""
    try:
        return str(PeerId.parse(peer_id))
    except BadPeerId as exc:
        raise UsageError(f"{exc}; copy the id from `shoal id` on that machine") from None


def _compact(text: str) -> str:
    return "".join(text.split()).replace("-", "").upper()


def _check_address(address: str) -> str:
    parse_host_port(address)
    return address


def _check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise UsageError(f"peer name {name!r} must be 1 to {MAX_NAME} printable characters")
    return name


def _trusted_from(peer_id: str, entry: dict[str, Any]) -> TrustedPeer:
    addresses = _addresses_from(entry, "addresses")
    return TrustedPeer(
        canonical_peer_id(peer_id), _check_name(entry["name"]), addresses, int(entry["added"]),
        _addresses_from(entry, "announced"),
    )


def _pending_from(peer_id: str, entry: dict[str, Any]) -> PendingPeer:
    # An older file's single `address` was where the peer's connection came from,
    # an ephemeral port: it is dropped, not carried over.
    addresses = _addresses_from(entry, "addresses")
    return PendingPeer(canonical_peer_id(peer_id), addresses, int(entry["first_seen"]), int(entry["last_seen"]))


def _addresses_from(entry: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(_check_address(str(address)) for address in entry.get(key, ()))
