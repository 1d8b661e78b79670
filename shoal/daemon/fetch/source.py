"""What the fetch engine needs of its peers: the engine never imports the network layer."""

from collections.abc import Callable, Sequence
from typing import Protocol

from shoal.daemon.model import PeerReach
from shoal.protocol.wire.messages import CatalogEntry, Run


class Source(Protocol):
    """A connected, trusted peer that can be asked for objects and chunks."""

    peer_id: str
    #: The most bytes/s the peer says it sends us (its bandwidth caps); 0: no cap.
    peer_cap: int
    #: Bytes received from the peer so far: what tells a busy peer from a silent one.
    bytes_in: int

    @property
    def lane_address(self) -> str | None:
        """Where a fetch worker dials the peer for a lane of its own (SPEC.md, "Lanes"); None: it does not listen."""

    async def get_objects(self, ids: Sequence[bytes]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """Return ([(id, bytes)], missing ids); bytes are unverified."""

    async def get_chunks(self, ids: Sequence[bytes], deliver: Callable[[bytes, bytes], None]) -> list[bytes]:
        """Stream chunks into `deliver(id, bytes)` as they arrive; return the ids the peer lacks."""

    async def get_runs(self, runs: Sequence[Run], deliver: Callable[[bytes, bytes | memoryview], None]) -> list[bytes]:
        """Stream runs into `deliver(first id, bytes)` as they arrive; return the first ids of the runs the peer lacks."""


class SourceDirectory(Protocol):
    """The peers currently connected, with what each offers."""

    def offers(self, name: str) -> Sequence[tuple[Source, CatalogEntry]]:
        """Peers whose catalog lists dataset `name`, with their entry."""

    async def wait_for_change(self) -> None:
        """Return when a peer connects, leaves, or changes its catalog."""

    def connected(self) -> list[str]:
        """The ids of the peers connected now."""

    def name_of(self, peer_id: str) -> str:
        """What messages call a peer: its trust name."""

    def reach(self) -> list[PeerReach]:
        """Every trusted peer, and whether it is online, still being tried, or offline."""

    def receive_cap(self, peers: int) -> int:
        """The bytes/s this daemon's own caps allow from `peers` peers at once; 0: no cap."""
