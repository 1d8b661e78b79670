"""Peers: `peers`, `trust` and `untrust`."""

from dataclasses import dataclass
from typing import Any

from shoal.daemon.control.api.params import only, optional_text, text
from shoal.daemon.control.events import Publish
from shoal.daemon.control.server import Handler, ProgressFn
from shoal.daemon.net.peers import PeerManager
from shoal.daemon.net.trust import PendingPeer, TrustedPeer, TrustStore, canonical_peer_id
from shoal.errors import UsageError
from shoal.protocol.format.identity import PeerId


@dataclass(frozen=True, slots=True)
class PeersApi:
    """The peers this daemon trusts or has seen, and changing whom it trusts."""

    peer_id: PeerId
    trust: TrustStore
    peers: PeerManager
    publish: Publish

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {"peers": self.list_peers, "trust": self.trust_peer, "untrust": self.untrust_peer}

    async def list_peers(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Trusted peers, then peers seen but not trusted."""
        only(params)
        listing = self.trust.list()
        entries = [self._live(_trusted_entry(peer)) for peer in listing.trusted]
        entries += [_pending_entry(peer) for peer in listing.pending]
        return {"peers": entries}

    def _live(self, entry: dict[str, Any]) -> dict[str, Any]:
        live = self.peers.peer_state(entry["peer_id"])
        entry["state"] = "online" if live["online"] else "offline"
        for key in ("online", "address", "discovered", "last_seen", "last_error", "bytes_in", "bytes_out"):
            entry[key] = live[key]
        entry["rates"] = {"up": live["rate_out"], "down": live["rate_in"]}
        return entry

    async def trust_peer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Trust a peer by id, optionally naming it and telling where to reach it."""
        only(params, "peer_id", "name", "addresses")
        peer_id = text(params, "peer_id")
        addresses = params.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(item, str) for item in addresses):
            raise UsageError("addresses must be a list of HOST:PORT texts")
        if canonical_peer_id(peer_id) == str(self.peer_id):
            raise UsageError("that is this daemon's own id; trust the id `shoal id` prints on the other machine")
        entry = _trusted_entry(self.trust.trust(peer_id, optional_text(params, "name"), addresses))
        self.peers.wake_dialer(entry["peer_id"])
        self.publish("peers", {"change": "trusted", "peer": entry})
        return {"peer": entry}

    async def untrust_peer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop trusting a peer named by full id, name, or unique id prefix."""
        only(params, "peer_id")
        entry = _trusted_entry(self.trust.untrust(text(params, "peer_id")))
        await self.peers.disconnect(entry["peer_id"], "no longer trusted")
        self.publish("peers", {"change": "untrusted", "peer": entry})
        return {"peer": entry}


#: The live fields of a peer entry while no session with it is open.
_OFFLINE: dict[str, Any] = {"online": False, "discovered": [], "last_error": None, "bytes_in": 0, "bytes_out": 0}


def _trusted_entry(peer: TrustedPeer) -> dict[str, Any]:
    return {
        "peer_id": peer.peer_id,
        "short": PeerId.parse(peer.peer_id).short(),
        "name": peer.name,
        "trusted": True,
        "state": "offline",
        "address": None,
        "addresses": list(peer.addresses),
        "announced": list(peer.announced),
        "rates": None,
        "added": peer.added,
        "first_seen": None,
        "last_seen": None,
        **_OFFLINE,
    }


def _pending_entry(peer: PendingPeer) -> dict[str, Any]:
    return {
        "peer_id": peer.peer_id,
        "short": PeerId.parse(peer.peer_id).short(),
        "name": None,
        "trusted": False,
        "state": "pending",
        "address": None,
        "addresses": [],
        "announced": list(peer.addresses),
        "rates": None,
        "added": None,
        "first_seen": peer.first_seen,
        "last_seen": peer.last_seen,
        **_OFFLINE,
    }
