"""The daemon itself: `id`, `status`, `events`, `shutdown`, `config.reload` and `gc`."""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import shoal
from shoal.daemon.config import Settings, load_config
from shoal.daemon.control.api.params import only, optional_text
from shoal.daemon.control.events import Events, Publish
from shoal.daemon.control.server import Handler, ProgressFn
from shoal.daemon.fetch.manager import Transfers
from shoal.daemon.library.datasets import Library
from shoal.daemon.library.retention import Keeper
from shoal.daemon.net.peers import PeerManager
from shoal.daemon.net.trust import TrustStore
from shoal.daemon.watch.watches import Watches
from shoal.protocol.format.identity import PeerId

#: Keys whose new value takes effect only when the daemon restarts.
RESTART_KEYS = frozenset({"listen", "discovery"})


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What this daemon is and how it was started; fixed for its lifetime."""

    home: Path
    peer_id: PeerId
    #: The configured listen address; its port may be 0, the bound one is the peer manager's.
    listen: str
    discovery: bool
    started: float = field(default_factory=time.time)


def listen_address(listen: str, port: int | None) -> str:
    """Where peers reach this daemon: the configured host with the port actually bound."""
    host = listen.rpartition(":")[0]
    return f"{host}:{port}" if port is not None else listen


@dataclass(frozen=True, slots=True)
class DaemonApi:
    """The daemon's identity, its state at a glance, its configuration, and stopping it."""

    info: DaemonInfo
    settings: Settings
    library: Library
    trust: TrustStore
    peers: PeerManager
    transfers: Transfers
    keeper: Keeper
    watches: Watches
    events: Events
    publish: Publish
    request_shutdown: Callable[[], None]

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {
            "id": self.id,
            "status": self.status,
            "events": self.recent_events,
            "shutdown": self.shutdown,
            "config.reload": self.reload_config,
            "gc": self.gc,
        }

    def listen_address(self) -> str:
        """Where peers reach this daemon."""
        return listen_address(self.info.listen, self.peers.port)

    async def id(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """This daemon's identity and where peers reach it."""
        only(params)
        peer_id = self.info.peer_id
        return {"peer_id": str(peer_id), "short": peer_id.short(), "listen": self.listen_address()}

    async def status(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """A one-screen summary of the daemon."""
        only(params)
        listing = self.trust.list()
        # The index's lock may be held by a fetch's worker thread for a while: never wait for it on the event loop.
        datasets = await trio.to_thread.run_sync(self.library.datasets)
        started = self.info.started
        return {
            "version": shoal.__version__,
            "pid": os.getpid(),
            "home": str(self.info.home),
            "peer_id": str(self.info.peer_id),
            "started": int(started),
            "uptime": round(time.time() - started, 3),
            "listen": self.listen_address(),
            "discovery": self.info.discovery,
            "datasets": len(datasets),
            "watches": len(self.watches),
            "peers": {
                "trusted": len(listing.trusted),
                "pending": len(listing.pending),
                "online": len(self.peers.sessions),
            },
            "transfers": self.transfers.snapshot(),
            "retention": await trio.to_thread.run_sync(self.keeper.summary),
        }

    async def recent_events(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The last events the daemon published (passing states aside), oldest first."""
        only(params)
        return {"run": self.events.run, "events": self.events.recent()}

    async def shutdown(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop the daemon once this reply is on its way."""
        only(params)
        self.request_shutdown()
        return {"stopping": True, "pid": os.getpid()}

    async def reload_config(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Re-read config.toml; report keys that changed and which of them need a restart."""
        only(params)
        new = load_config(self.info.home)
        old_values, new_values = self.settings.current().to_dict(), new.to_dict()
        changed = [key for key in new_values if new_values[key] != old_values[key]]
        self.settings.replace(new)
        if changed:
            self.publish("config", {"config": new_values, "changed": changed})
        return {
            "config": new_values,
            "changed": changed,
            "restart_required": [key for key in changed if key in RESTART_KEYS],
        }

    async def gc(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Evict kept versions beyond the retention budget and compact the pack store."""
        only(params, "name")
        report = await self.keeper.gc(optional_text(params, "name"))
        if report.evicted:
            await self.peers.publish_catalog()
        return report.to_json()
