"""The daemon's root: one nursery that owns every subsystem, started in order.

Subsystems, in start order (and stopped in reverse):

1. identity: the Ed25519 key that signs versions and names this daemon.
2. library: the local datasets and their index.
3. trust store: trusted and pending peers.
4. control server: the local socket clients drive everything through.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from shoal.daemon.api import TOPICS, ControlApi
from shoal.daemon.config import Config, ensure_home, socket_path
from shoal.daemon.control import ControlServer
from shoal.daemon.keys import load_or_create_private_key
from shoal.daemon.library import Library
from shoal.daemon.trust import TrustStore
from shoal.protocol.identity import PeerId, peer_id_of

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
    signer = load_or_create_private_key(home)
    peer_id = peer_id_of(signer)
    library = Library.open(home, signer)
    try:
        stopping = trio.Event()
        control = ControlServer(socket_path(home), topics=TOPICS)
        api = ControlApi(
            home=home,
            config=config,
            listen=listen or config.listen,
            discovery=discovery and config.discovery,
            peer_id=peer_id,
            library=library,
            trust=TrustStore.open(home),
            publish=control.publish,
            request_shutdown=stopping.set,
        )
        api.register(control)
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve)
            log.info("shoal daemon %s ready; control socket %s", peer_id, control.path)
            task_status.started(DaemonHandle(peer_id, control.path, stopping))
            await stopping.wait()
            log.info("shutting down")
            control.publish("daemon", {"state": "stopping"})
            await control.stop(SHUTDOWN_GRACE)
            nursery.cancel_scope.cancel()
    finally:
        library.close()
