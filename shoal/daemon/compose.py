"""Building the daemon: every service, each given what it uses through its constructor.

`compose` is the one place services are created and joined. Cycles are broken by
objects made first: `Settings` holds the live configuration that `config.reload`
replaces and the peers, keeper and watches read; `Events` takes what every service
publishes, so the control server, which needs the API methods, is made last. The
pack store answers which versions it keeps, so the peer manager need not wait for
the keeper that fills the store.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.config import Config, Settings
from shoal.daemon.control.api import TOPICS, method_table
from shoal.daemon.control.api.daemon import DaemonApi, DaemonInfo
from shoal.daemon.control.api.datasets import DatasetsApi, share_announcer
from shoal.daemon.control.api.history import HistoryApi
from shoal.daemon.control.api.peers import PeersApi
from shoal.daemon.control.api.sync import SyncApi
from shoal.daemon.control.api.transfers import TransfersApi
from shoal.daemon.control.events import Events, Publish
from shoal.daemon.control.server import ControlServer
from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.fetch.manager import Transfers
from shoal.daemon.fetch.split import WorkerConfig, auto_workers
from shoal.daemon.library.datasets import Library
from shoal.daemon.library.retention import Keeper
from shoal.daemon.net.peers import PeerEvent, PeerManager
from shoal.daemon.net.trust import TrustStore
from shoal.daemon.store.packs import PackStore
from shoal.daemon.sync.subscriptions import Subscriptions
from shoal.daemon.watch.watches import Watches
from shoal.home import socket_path
from shoal.protocol.format.identity import peer_id_of


@dataclass(frozen=True, slots=True)
class Daemon:
    """The services `serve` starts, in start order, and what it reports about them."""

    info: DaemonInfo
    peers: PeerManager
    keeper: Keeper
    watches: Watches
    subscriptions: Subscriptions
    control: ControlServer
    #: Where peers reach this daemon, once the peer manager is listening.
    listen_address: Callable[[], str]


def compose(
    home: Path,
    config: Config,
    *,
    signer: Ed25519PrivateKey,
    store: PackStore,
    library: Library,
    listen: str,
    discovery: bool,
    request_shutdown: Callable[[], None],
) -> Daemon:
    """Build every service of the daemon in `home` around an open pack store and library.

    `listen` and `discovery` are the effective settings (the command line over the
    configuration); `request_shutdown` is what the `shutdown` method calls.
    """
    info = DaemonInfo(home, peer_id_of(signer), listen, discovery)
    settings = Settings(config)
    events = Events(TOPICS)
    publish = events.publish
    trust = TrustStore.open(home)
    peers = PeerManager(
        signer, trust, library, listen, on_event=partial(_publish_peer_event, publish),
        limits=settings.limits, kept_versions=store.kept_versions,
    )
    keeper = Keeper(library.index, store, settings.current, peers.publish_catalog, peers.serving)
    workers = WorkerConfig(
        signer.private_bytes_raw(), library.index.path, lambda: settings.current().workers or auto_workers(_cores())
    )
    fetcher = Fetcher(library.index, peers, workers)
    transfers = Transfers(fetcher, peers.publish_catalog, publish)
    announce = share_announcer(publish, peers.publish_catalog, keeper)
    watches = Watches(home, library, announce=announce, publish=publish, settings=settings.current)
    subscriptions = Subscriptions(
        home, library, peers, fetcher, transfers, publish, signer.public_key().public_bytes_raw()
    )
    daemon_api = DaemonApi(
        info=info, settings=settings, library=library, trust=trust, peers=peers, transfers=transfers,
        keeper=keeper, watches=watches, events=events, publish=publish, request_shutdown=request_shutdown,
    )
    methods = method_table(
        daemon_api,
        DatasetsApi(
            library=library, trust=trust, watches=watches, keeper=keeper, settings=settings, publish=publish,
            publish_catalog=peers.publish_catalog, announce=announce,
        ),
        HistoryApi(
            peer_id=info.peer_id, library=library, trust=trust, peers=peers,
            kept_versions=store.kept_versions, versions=fetcher,
        ),
        PeersApi(peer_id=info.peer_id, trust=trust, peers=peers, publish=publish),
        TransfersApi(trust=trust, transfers=transfers, versions=fetcher),
        SyncApi(watches=watches, subscriptions=subscriptions),
    )
    control = ControlServer(socket_path(home), methods, events=events)
    return Daemon(info, peers, keeper, watches, subscriptions, control, daemon_api.listen_address)


def _cores() -> int:
    """The cores this daemon may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _publish_peer_event(publish: Publish, event: PeerEvent) -> None:
    publish("peers", {"change": event.kind, "peer_id": event.peer_id, **event.detail})
