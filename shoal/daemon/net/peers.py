"""The peers of this daemon: listening, dialling, sessions and their catalogs.

Trusted peers are dialled at their static addresses and at the addresses
discovery reports, every address raced and the first to connect kept, with
backoff while a peer stays unreachable. An inbound connection from a key that
is not trusted is refused before any catalog or data flows, and the peer is
recorded as pending so the user can `shoal trust` it.

A peer with a session open here may open lanes beside it (SPEC "Lanes"): more
connections that carry requests and answers only, for its fetch workers. They
are served under the peer's trust, audience and caps, end with its session,
and are not peers of their own: nothing outside this module sees them.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.library.datasets import Library
from shoal.daemon.model import PeerReach
from shoal.daemon.net.ratelimit import Throttle, TokenBucket
from shoal.daemon.net.run_buffers import RunBuffers
from shoal.daemon.net.session import PeerSession, Rejected, establish, flush_quietly
from shoal.daemon.net.trust import TrustStore
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.identity import PeerId
from shoal.protocol.wire.channel import Role
from shoal.protocol.wire.connection import Connection, DuplicateSession, NoSession
from shoal.protocol.wire.messages import MAX_FULL_VERSIONS, Catalog, CatalogEntry, Hello, Limit

_log = logging.getLogger("shoal.peers")

DIAL_TIMEOUT = 5.0
#: Delay before racing the next address of the same peer (happy-eyeballs style).
RACE_STAGGER = 0.25
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
DIAL_PERIOD = 1.0
#: A peer answered this recently still counts as being served: a fetch asks in
#: bursts, with its own work (checking, writing) between them.
SERVING_GRACE = 3.0
#: A trusted peer with no address counts as tried once discovery has had this long to find it.
DISCOVERY_GRACE = 3.0


@dataclass(slots=True)
class _Reachability:
    discovered: tuple[str, ...] = ()
    failures: int = 0
    next_try: float = 0.0
    last_error: str = ""
    last_seen: float | None = None
    dialling: bool = False


@dataclass(frozen=True, slots=True)
class PeerEvent:
    kind: str
    peer_id: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lane:
    """A lane a peer opened to us: its session, and the scope its session's end cancels."""

    session: PeerSession
    scope: trio.CancelScope


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class PeerManager:
    """Sessions with trusted peers, and the fetch engine's view of what they offer."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        trust: TrustStore,
        library: Library,
        listen: str,
        on_event: Callable[[PeerEvent], None] = lambda event: None,
        limits: Callable[[], tuple[int, int]] = lambda: (0, 0),
        kept_versions: Callable[[str], tuple[bytes, ...]] = lambda name: (),
    ) -> None:
        self._key = key
        self._trust = trust
        self._library = library
        self._listen = listen
        self._on_event = on_event
        # Bandwidth caps in bytes/s (0: none), read at every payment so a config reload applies at once.
        self._per_peer_limit = lambda: limits()[1]
        self._all_peers = TokenBucket(lambda: limits()[0])
        #: Read buffers for serving runs, shared by every session: memory bounded however many peers fetch.
        self._run_buffers = RunBuffers()
        #: The upload cap each peer was last told of (LIMIT).
        self._told_cap: dict[str, int] = {}
        #: Versions of a dataset the pack store keeps in full, newest first.
        self._kept_versions = kept_versions
        self.port: int | None = None
        self.sessions: dict[str, PeerSession] = {}
        #: The lanes peers opened beside their sessions, by (peer id, lane number).
        self.lanes: dict[tuple[str, int], Lane] = {}
        #: Each connected peer's upload allowance, paid into by its session and all its lanes.
        self._peer_buckets: dict[str, TokenBucket] = {}
        self._reach: dict[str, _Reachability] = {}
        #: Dataset names each peer's latest catalog offered, and those a peer
        #: dropped from its catalog that no catalog has offered since.
        self._offered: dict[str, frozenset[str]] = {}
        self._withdrawn: set[str] = set()
        #: Peers whose catalog arrived in the session open now.
        self._catalog_in: set[str] = set()
        self._started = time.monotonic()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # --- running --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and dial until cancelled; started() reports the bound port."""
        host, port = split_address(self._listen)
        self._started = time.monotonic()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            listeners = await nursery.start(partial(trio.serve_tcp, self._accept, port, host=host or None))
            self.port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(self._dial_loop)
            nursery.start_soon(self._limit_loop)
            task_status.started(self.port)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    # --- inbound ----------------------------------------------------------------

    async def _accept(self, stream: trio.SocketStream) -> None:
        address = _peer_address(stream)
        try:
            conn, peer = await establish(
                stream, Role.RESPONDER, self._key, self._admit, self.port, refusal=self._lane_refusal
            )
        except Rejected as e:
            # Its source port is not where it listens: the address is only logged.
            pending = self._trust.record_pending(str(e))
            if pending is not None:
                self._on_event(PeerEvent("pending", str(e), {"addresses": list(pending.addresses)}))
            _log.info("refused untrusted peer %s from %s", e, address)
            await stream.aclose()
            return
        except (ProtocolError, trio.TooSlowError, trio.BrokenResourceError, OSError) as e:
            _log.info("inbound connection from %s failed: %s (%s)", address, e, getattr(e, "code", type(e).__name__))
            await stream.aclose()
            return
        if conn.lane:
            await self._run_lane(conn, stream, peer, address)
        else:
            await self._run_session(conn, stream, peer, address)

    def _admit(self, peer: PeerId) -> bool:
        return self._trust.is_trusted(str(peer))

    def _lane_refusal(self, peer: PeerId, hello: Hello) -> ProtocolError | None:
        """Why the connection that sent `hello` may not open as a lane of `peer`'s session (None: it may)."""
        if not hello.lane:
            return None
        if str(peer) not in self.sessions:
            return NoSession(f"lane {hello.lane}: this daemon has no session with {peer.short()} to add it to")
        if (str(peer), hello.lane) in self.lanes:
            return DuplicateSession(f"lane {hello.lane} of {peer.short()} is already open")
        return None

    # --- outbound ----------------------------------------------------------------

    def add_sighting(self, peer_id: str, addresses: tuple[str, ...]) -> None:
        """Discovery saw `peer_id` at these addresses (empty: it left)."""
        reach = self._reach.setdefault(peer_id, _Reachability())
        reach.discovered = addresses
        if addresses:
            reach.next_try = 0.0
            if self._trust.is_trusted(peer_id):
                self._trust.record_announced(peer_id, addresses)
            elif (pending := self._trust.record_pending(peer_id, addresses)) is not None:
                self._on_event(PeerEvent("pending", peer_id, {"addresses": list(pending.addresses)}))
        self._notify()

    def wake_dialer(self, peer_id: str | None = None) -> None:
        """Try now (e.g. after `shoal trust`), forgetting any backoff."""
        for pid, reach in self._reach.items():
            if peer_id is None or pid == peer_id:
                reach.next_try = 0.0
        self._notify()

    async def _dial_loop(self) -> None:
        assert self._nursery is not None
        while True:
            now = time.monotonic()
            for peer in self._trust.list().trusted:
                if peer.peer_id in self.sessions:
                    continue
                reach = self._reach.setdefault(peer.peer_id, _Reachability())
                addresses = tuple(dict.fromkeys(peer.dial_addresses() + reach.discovered))
                if not addresses or reach.dialling or reach.next_try > now:
                    continue
                reach.dialling = True
                self._nursery.start_soon(self._dial, peer.peer_id, addresses, reach)
            with trio.move_on_after(DIAL_PERIOD):
                await self._changed.wait()

    async def _dial(self, peer_id: str, addresses: tuple[str, ...], reach: _Reachability) -> None:
        try:
            stream, address = await _race(addresses)
            try:
                conn, peer = await establish(stream, Role.INITIATOR, self._key, self._admit, self.port, expected=peer_id)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        except (OSError, ProtocolError, Rejected, trio.TooSlowError, trio.BrokenResourceError) as e:
            reach.failures += 1
            reach.last_error = str(e) or type(e).__name__
            reach.next_try = time.monotonic() + min(BACKOFF_MAX, BACKOFF_START * 2 ** (reach.failures - 1))
            return
        finally:
            reach.dialling = False
        reach.failures = 0
        reach.last_error = ""
        await self._run_session(conn, stream, peer, address)

    # --- sessions -------------------------------------------------------------

    async def _run_session(self, conn: Connection, stream: trio.SocketStream, peer: PeerId, address: str) -> None:
        peer_id = str(peer)
        if peer_id in self.sessions:
            # Both sides dialled at once, or the peer redialled while our old session
            # still stands (keepalive ends it if it is dead): keep the one that runs,
            # and tell the peer why the new one ends (SPEC "Session").
            await _refuse(conn, stream, DuplicateSession(f"this daemon already has a session with {peer.short()}"))
            return
        self._peer_buckets[peer_id] = TokenBucket(self._per_peer_limit)
        session = self._session(conn, stream, peer, address, self._catalog_changed)
        self.sessions[peer_id] = session
        self._reach.setdefault(peer_id, _Reachability()).last_seen = time.time()
        self._on_event(PeerEvent("online", peer_id, {"address": address}))
        self._notify()
        _log.info("connected to %s at %s", peer.short(), address)
        reason = "closed"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_catalog, session)
                reason = await session.run()
                nursery.cancel_scope.cancel()
        finally:
            del self.sessions[peer_id]
            del self._peer_buckets[peer_id]
            self._end_lanes(peer_id, reason)
            self._catalog_in.discard(peer_id)
            self._told_cap.pop(peer_id, None)
            self._reach[peer_id].last_seen = time.time()
            self._reach[peer_id].next_try = time.monotonic() + BACKOFF_START
            self._on_event(PeerEvent("offline", peer_id, {"reason": reason}))
            self._notify()
            _log.info("session with %s ended: %s", peer.short(), reason)

    def _session(
        self, conn: Connection, stream: trio.SocketStream, peer: PeerId, address: str, on_catalog: Callable[[PeerSession], None]
    ) -> PeerSession:
        """A session with `peer` (main or lane) under its audience, the daemon's cap and the peer's own."""
        peer_id = str(peer)
        caps = Throttle(self._all_peers, self._peer_buckets[peer_id])
        return PeerSession(
            conn, stream, peer, address, self._library.index, on_catalog, caps, partial(self._withheld, peer_id),
            self._run_buffers, name=self.name_of(peer_id),
        )

    async def _run_lane(self, conn: Connection, stream: trio.SocketStream, peer: PeerId, address: str) -> None:
        # Checked again: the session may have ended, or the same lane opened, while our HELLO went out.
        assert conn.peer_hello is not None
        refusal = self._lane_refusal(peer, conn.peer_hello)
        if refusal is not None:
            await _refuse(conn, stream, refusal)
            return
        key = (str(peer), conn.lane)
        # A lane sends no CATALOG (the Connection refuses one on a lane), so it has none to report.
        lane = Lane(self._session(conn, stream, peer, address, lambda session: None), trio.CancelScope())
        self.lanes[key] = lane
        _log.info("lane %d of %s opened from %s", conn.lane, peer.short(), address)
        reason = "its session ended"
        try:
            with lane.scope:
                reason = await lane.session.run()
        finally:
            del self.lanes[key]
            _log.info("lane %d of %s ended: %s", conn.lane, peer.short(), reason)

    def _end_lanes(self, peer_id: str, reason: str) -> None:
        """End every lane of `peer_id`, whose session has ended: a BYE each, then their tasks' cancellation."""
        for (pid, _), lane in list(self.lanes.items()):
            if pid == peer_id:
                # Queued here and sent as the cancelled session closes its stream.
                lane.session.conn.close(f"the session ended: {reason}")
                lane.scope.cancel()

    def _catalog_changed(self, session: PeerSession) -> None:
        offered = frozenset(entry.name for entry in session.catalog)
        self._withdrawn |= self._offered.get(session.peer_id, frozenset()) - offered
        self._withdrawn -= offered
        self._offered[session.peer_id] = offered
        self._catalog_in.add(session.peer_id)
        self._on_event(PeerEvent("catalog", session.peer_id, {"datasets": len(session.catalog)}))
        self._notify()

    def local_catalog(self) -> tuple[CatalogEntry, ...]:
        """Every dataset we offer, before each peer's audience is applied."""
        return tuple(
            CatalogEntry(d.name, d.head.id, d.head.seq, d.head.size, d.head.files, d.head.time, self._full(d.name, d.head.id))
            for d in self._library.datasets()
            if d.present or d.head.id in self._kept_versions(d.name)
        )

    def _catalog_for(self, peer_id: str, entries: tuple[CatalogEntry, ...]) -> Catalog:
        audiences = self._library.audiences
        return Catalog(tuple(entry for entry in entries if audiences.may_see(peer_id, entry.name)))

    async def _withheld(self, peer_id: str, ids: list[bytes]) -> set[bytes]:
        """What a request of this peer may not be given (see audience.py)."""
        audiences = self._library.audiences
        if not audiences.hides_from(peer_id):
            return set()
        return await trio.to_thread.run_sync(audiences.withheld, peer_id, ids)

    def _full(self, name: str, head: bytes) -> tuple[bytes, ...]:
        """The versions of `name` served in full: the head, then those the pack store keeps."""
        kept = [v for v in self._kept_versions(name) if v != head]
        return (head, *kept[: MAX_FULL_VERSIONS - 1])

    async def _send_catalog(self, session: PeerSession) -> None:
        entries = await trio.to_thread.run_sync(self.local_catalog)
        try:
            await session.send(self._catalog_for(session.peer_id, entries))
            await self._tell_cap(session)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    def upload_cap(self) -> int:
        """The most bytes/s this daemon sends one peer: the smaller of its caps; 0: none."""
        return min((cap for cap in (self._all_peers.rate(), self._per_peer_limit()) if cap > 0), default=0)

    async def _tell_cap(self, session: PeerSession) -> None:
        """Tell the peer our upload cap (LIMIT), so that its fetches can name it as what limits them."""
        cap = self.upload_cap()
        self._told_cap[session.peer_id] = cap
        await session.send(Limit(cap))

    async def _limit_loop(self) -> None:
        """Tell every peer of a changed upload cap; `config set` changes it at any time."""
        while True:
            await trio.sleep(DIAL_PERIOD)
            cap = self.upload_cap()
            for session in list(self.sessions.values()):
                if self._told_cap.get(session.peer_id, cap) != cap:
                    try:
                        await self._tell_cap(session)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass

    async def publish_catalog(self) -> None:
        """Tell every connected peer what we share now."""
        entries = await trio.to_thread.run_sync(self.local_catalog)
        for session in list(self.sessions.values()):
            try:
                await session.send(self._catalog_for(session.peer_id, entries))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def disconnect(self, peer_id: str, reason: str) -> None:
        session = self.sessions.get(peer_id)
        if session is not None:
            await session.close(reason)

    # --- the fetch engine's SourceDirectory -------------------------------------

    def offers(self, name: str) -> list[tuple[PeerSession, CatalogEntry]]:
        out = []
        for session in self.sessions.values():
            entry = session.offer(name)
            if entry is not None:
                out.append((session, entry))
        return out

    def withdrawn(self, name: str) -> bool:
        """Whether a peer that offered `name` withdrew it (`shoal unshare`), and no connected peer offers it now."""
        return name in self._withdrawn and not self.offers(name)

    def connected(self) -> list[str]:
        return sorted(self.sessions)

    def name_of(self, peer_id: str) -> str:
        """The trust name of a peer, for messages; its short id if it is no longer trusted."""
        return self._trust.name_of(peer_id)

    def reach(self) -> list[PeerReach]:
        """Every trusted peer and where it stands: online, still being tried, or offline."""
        return [self._reach_of(peer.peer_id, peer.name, bool(peer.dial_addresses())) for peer in self._trust.list().trusted]

    def _reach_of(self, peer_id: str, name: str, has_address: bool) -> PeerReach:
        reach = self._reach.get(peer_id) or _Reachability()
        if peer_id in self.sessions:
            state = "online" if peer_id in self._catalog_in else "trying"
        elif reach.failures or reach.last_seen is not None:
            state = "offline"
        elif has_address or reach.discovered or time.monotonic() - self._started < DISCOVERY_GRACE:
            state = "trying"
        else:
            state = "offline"
        return PeerReach(peer_id, name, state, reach.last_seen, reach.last_error or None)

    def receive_cap(self, peers: int) -> int:
        """The most bytes/s this daemon's own caps let it take from `peers` peers at once; 0: no cap."""
        caps = [cap for cap in (self._all_peers.rate(), self._per_peer_limit() * peers) if cap > 0]
        return min(caps, default=0)

    def serving(self) -> bool:
        """Whether some peer's request is being answered now, or was a moment ago, on a session or a lane."""
        recent = trio.current_time() - SERVING_GRACE
        sessions = [*self.sessions.values(), *(lane.session for lane in self.lanes.values())]
        return any(session.serving or session.served_at > recent for session in sessions)

    def remote_datasets(self) -> list[tuple[str, CatalogEntry]]:
        return [(pid, e) for pid, s in self.sessions.items() for e in s.catalog]

    # --- status -------------------------------------------------------------------

    def peer_state(self, peer_id: str) -> dict[str, Any]:
        """Live facts about a peer, for `shoal peers` and the TUI."""
        session = self.sessions.get(peer_id)
        reach = self._reach.get(peer_id)
        state: dict[str, Any] = {
            "online": session is not None,
            "address": session.address if session else None,
            "discovered": list(reach.discovered) if reach else [],
            "last_seen": int(reach.last_seen) if reach and reach.last_seen else None,
            "last_error": reach.last_error if reach and reach.last_error else None,
            "bytes_in": session.bytes_in if session else 0,
            "bytes_out": session.bytes_out if session else 0,
            "datasets": len(session.catalog) if session else 0,
        }
        rate_in, rate_out = session.rates() if session else (0.0, 0.0)
        state["rate_in"], state["rate_out"] = round(rate_in), round(rate_out)
        return state


async def _refuse(conn: Connection, stream: trio.SocketStream, error: ProtocolError) -> None:
    """End a connection that completed HELLO but may not run, telling the peer why."""
    conn.fail(error)
    with trio.move_on_after(1):
        await flush_quietly(conn, stream)
    await trio.aclose_forcefully(stream)


def _peer_address(stream: trio.SocketStream) -> str:
    host, port = stream.socket.getpeername()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _race(addresses: tuple[str, ...]) -> tuple[trio.SocketStream, str]:
    """Connect to every address, staggered; keep the first that answers."""
    winner: list[tuple[trio.SocketStream, str]] = []
    errors: list[str] = []

    async def attempt(address: str, delay: float, nursery: trio.Nursery) -> None:
        await trio.sleep(delay)
        host, port = split_address(address)
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as e:
            errors.append(f"{address}: {e.strerror or e}")
            return
        if winner:
            await trio.aclose_forcefully(stream)
            return
        winner.append((stream, address))
        nursery.cancel_scope.cancel()

    with trio.move_on_after(DIAL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i, address in enumerate(addresses):
                nursery.start_soon(attempt, address, i * RACE_STAGGER, nursery)
    if winner:
        return winner[0]
    raise OSError("; ".join(errors) or f"no answer within {DIAL_TIMEOUT:g}s")
