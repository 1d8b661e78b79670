"""The daemon's root: one nursery that owns every subsystem, started in order.

Subsystems, in start order (and stopped in reverse):

1. identity: the Ed25519 key that signs versions and names this daemon.
2. library: the local datasets and their index.
3. trust store: trusted and pending peers.
4. peers: the listener, the dialler and one session per connected trusted peer.
5. keeper: copies shared versions into the pack store (HOME/packs) so they stay servable.
6. discovery (unless turned off): mDNS announcement and browsing, feeding the dialler.
7. watches: one task per watched folder, sharing it again when it changes.
8. subscriptions: folders kept at the newest version of a dataset.
9. control server: the local socket clients drive everything through.
"""

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from shoal.daemon.control.api import TOPICS, ControlApi, share_announcer
from shoal.daemon.net.discovery import Discovery, DiscoveryError, Sighting, announce_addresses, local_ipv4_addresses
from shoal.daemon.store.fdlimit import raise_soft_limit
from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.config import Config
from shoal.home import ensure_home, socket_path
from shoal.daemon.control.server import ControlServer
from shoal.daemon.library.retention import Keeper
from shoal.daemon.keys import load_or_create_private_key
from shoal.daemon.library.datasets import Library
from shoal.daemon.store.packs import PackStore
from shoal.daemon.net.peers import PeerEvent, PeerManager, split_address
from shoal.daemon.sync.subscriptions import Subscriptions
from shoal.daemon.fetch.manager import Transfers
from shoal.daemon.net.trust import TrustStore
from shoal.daemon.watch.watches import Watches
from shoal.protocol.format.identity import PeerId, peer_id_of

log = logging.getLogger(__name__)

#: mallopt's parameter number for the arena limit (glibc malloc.h).
M_ARENA_MAX = -8
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
    _limit_malloc_arenas()
    # Descriptors are pooled and bounded everywhere; a higher limit only leaves more room.
    log.debug("open file limit: %d", raise_soft_limit())
    signer = load_or_create_private_key(home)
    peer_id = peer_id_of(signer)
    library = Library.open(home, signer)
    store = PackStore(home / "packs")
    library.index.retained = store
    try:
        stopping = trio.Event()
        control = ControlServer(socket_path(home), topics=TOPICS)
        trust = TrustStore.open(home)
        listen = listen or config.listen
        peers = PeerManager(
            signer, trust, library, listen, on_event=lambda e: _publish_peer_event(control, e),
            limits=lambda: (api.config.global_limit, api.config.per_peer_limit),
        )
        keeper = Keeper(library.index, store, lambda: api.config, peers.publish_catalog, peers.serving)
        peers.kept_versions = keeper.kept_versions
        fetcher = Fetcher(library.index, peers)
        transfers = Transfers(fetcher, peers.publish_catalog, control.publish)
        # Watches read the configuration the API holds, which `config.reload` replaces.
        watches = Watches(
            home, library, announce=share_announcer(control.publish, peers, keeper), publish=control.publish,
            settings=lambda: api.config,
        )
        subscriptions = Subscriptions(
            home, library, peers, fetcher, transfers, control.publish, signer.public_key().public_bytes_raw()
        )
        api = ControlApi(
            home=home,
            config=config,
            listen=listen,
            discovery=discovery and config.discovery,
            peer_id=peer_id,
            library=library,
            trust=trust,
            publish=control.publish,
            request_shutdown=stopping.set,
            peers=peers,
            transfers=transfers,
            fetcher=fetcher,
            keeper=keeper,
            watches=watches,
            subscriptions=subscriptions,
        )
        api.register(control)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(peers.run)
            await nursery.start(keeper.run)
            log.info("listening for peers on %s", api._listen_address())
            if api.discovery:
                await _start_discovery(nursery, peer_id, listen, port, peers)
            await nursery.start(watches.run)
            await nursery.start(subscriptions.run)
            await nursery.start(control.serve)
            log.info("shoal daemon %s ready; control socket %s", peer_id, control.path)
            task_status.started(DaemonHandle(peer_id, control.path, stopping))
            await stopping.wait()
            log.info("shutting down")
            control.publish("daemon", {"state": "stopping"})
            await control.stop(SHUTDOWN_GRACE)
            nursery.cancel_scope.cancel()
    finally:
        store.close()
        library.close()


def _limit_malloc_arenas() -> None:
    """Keep glibc from giving every worker thread its own heap arena.

    Chunks are read and hashed in worker threads; with one arena per thread the
    freed buffers stay scattered and the daemon's memory grows with the number
    of peers it serves. Two arenas keep it flat. Not glibc: nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_ARENA_MAX, 2)


def _publish_peer_event(control: ControlServer, event: PeerEvent) -> None:
    control.publish("peers", {"change": event.kind, "peer_id": event.peer_id, **event.detail})


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
