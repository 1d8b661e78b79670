"""The daemon's root: one nursery that owns every subsystem, started in order.

`serve` opens what holds files (the key, the pack store, the library), has
`compose` build the services around them, and starts them in this order
(stopped in reverse):

1. peers: the listener, the dialler and one session per connected trusted peer.
2. keeper: copies shared versions into the pack store (HOME/packs) so they stay servable.
3. discovery (unless turned off): mDNS announcement and browsing, feeding the dialler.
4. watches: one task per watched folder, sharing it again when it changes.
5. subscriptions: folders kept at the newest version of a dataset.
6. control server: the local socket clients drive everything through.
"""

import logging
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import trio

from shoal.daemon.allocator import tune_allocator
from shoal.daemon.compose import Daemon, compose
from shoal.daemon.config import Config
from shoal.daemon.keys import load_or_create_private_key
from shoal.daemon.library.datasets import Library
from shoal.daemon.net.discovery import Discovery, DiscoveryError, Sighting, announce_addresses, local_ipv4_addresses
from shoal.daemon.net.peers import PeerManager, split_address
from shoal.daemon.store.fdlimit import raise_soft_limit
from shoal.daemon.store.packs import PackStore
from shoal.home import ensure_home
from shoal.protocol.format.identity import PeerId

log = logging.getLogger(__name__)

#: How long requests in flight may run to completion once a shutdown is requested.
SHUTDOWN_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class DaemonHandle:
    """What `serve` reports once it is ready: who it is, and how to ask it to stop."""

    peer_id: PeerId
    socket: Path
    stopping: trio.Event

    def shutdown(self) -> None:
        """Begin a graceful stop; `serve` returns once it completes."""
        self.stopping.set()


async def serve(
    home: Path,
    config: Config,
    *,
    listen: str | None,
    discovery: bool,
    task_status: trio.TaskStatus[DaemonHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until a `shutdown` request (or cancellation); start() yields a DaemonHandle.

    `listen` overrides the configured address; `discovery` False turns it off even if configured.
    """
    ensure_home(home)
    if not tune_allocator():
        log.debug("the C library is not glibc: its allocator is left as it is")
    # Descriptors are pooled and bounded everywhere; a higher limit only leaves more room.
    log.debug("open file limit: %d", raise_soft_limit())
    signer = load_or_create_private_key(home)
    stopping = trio.Event()
    with closing(PackStore(home / "packs")) as store, closing(Library.open(home, signer, store)) as library:
        daemon = compose(
            home, config, signer=signer, store=store, library=library, listen=listen or config.listen,
            discovery=discovery and config.discovery, request_shutdown=stopping.set,
        )
        await _run(daemon, stopping, task_status)


async def _run(daemon: Daemon, stopping: trio.Event, task_status: trio.TaskStatus[DaemonHandle]) -> None:
    """Start the services in order, report ready, and stop them all once `stopping` is set."""
    control, peers, info = daemon.control, daemon.peers, daemon.info
    async with trio.open_nursery() as nursery:
        port = await nursery.start(peers.run)
        await nursery.start(daemon.keeper.run)
        log.info("listening for peers on %s", daemon.listen_address())
        if info.discovery:
            await _start_discovery(nursery, info.peer_id, info.listen, port, peers)
        await nursery.start(daemon.watches.run)
        await nursery.start(daemon.subscriptions.run)
        await nursery.start(control.serve)
        log.info("shoal daemon %s ready; control socket %s", info.peer_id, control.path)
        task_status.started(DaemonHandle(info.peer_id, control.path, stopping))
        await stopping.wait()
        log.info("shutting down")
        control.events.publish("daemon", {"state": "stopping"})
        await control.stop(SHUTDOWN_GRACE)
        nursery.cancel_scope.cancel()


async def _start_discovery(nursery: trio.Nursery, peer_id: PeerId, listen: str, port: int, peers: PeerManager) -> None:
    """Announce this daemon and feed what the LAN announces to the dialler."""
    host = split_address(listen)[0]
    try:
        discovery = Discovery(str(peer_id), port, announce_addresses(host, local_ipv4_addresses()))
    except DiscoveryError as e:
        log.warning("discovery is off: %s", e)
        return
    await nursery.start(discovery.run)
    nursery.start_soon(_follow_sightings, discovery, peers)


async def _follow_sightings(discovery: Discovery, peers: PeerManager) -> None:
    async for sighting in discovery.sightings():
        if isinstance(sighting, Sighting):
            peers.add_sighting(sighting.peer_id, sighting.addresses)
        else:
            peers.add_sighting(sighting.peer_id, ())
