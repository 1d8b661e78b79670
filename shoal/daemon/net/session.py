"""One peer session over a trio stream, driving the sans-I/O `Connection`.

A session has one reader task that feeds bytes into the Connection and acts on
its events, and one lock around writes so that every send goes out whole and in
order. Requests we make wait on per-request handles; requests the peer makes
are served by tasks in the session's own nursery, so closing the session
cancels them. A misbehaving peer ends only its own session.
"""

import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.net import record_pump
from shoal.daemon.net.meter import RateMeter
from shoal.daemon.net.ratelimit import Throttle
from shoal.daemon.net.run_buffers import RunBuffers
from shoal.daemon.net.sending import send_views, slices
from shoal.daemon.store import chunks as chunkio
from shoal.daemon.store.index import Index, Location
from shoal.daemon.store.readahead import ReadAhead
from shoal.protocol.errors import LocalProtocolError, ProtocolError
from shoal.protocol.format.identity import PeerId
from shoal.protocol.wire.channel import Role
from shoal.protocol.wire.connection import (
    MAX_OUTSTANDING_REQUESTS,
    Connection,
    ConnectionClosed,
    HelloReceived,
    LargeFrame,
    MessageReceived,
    NeedData,
    PeerAuthenticated,
    State,
)
from shoal.protocol.wire.liveness import KEEPALIVE_INTERVAL, MAX_UNANSWERED_PINGS, Liveness, PeerTimedOut
from shoal.protocol.wire.messages import (
    PROTOCOL_VERSION,
    Cancel,
    Catalog,
    CatalogEntry,
    Data,
    DataRuns,
    End,
    GetChunks,
    GetObjects,
    GetRuns,
    Hello,
    Limit,
    Message,
    Run,
    split_runs,
)

_log = logging.getLogger("shoal.session")
K = TypeVar("K", bound=Hashable)

RECEIVE_SIZE = 256 * 1024
#: Seconds for the Noise handshake, both AUTHs and both HELLOs together (SPEC "Session").
HANDSHAKE_TIMEOUT = 10.0
#: Chunks read from disk per worker-thread call while serving.
SERVE_GROUP = 16
#: Manifest objects read per worker-thread call (one query), by their stored size:
#: most are a few hundred bytes, so a group of a directory's FILE objects is one
#: call, while objects near the 1 MiB limit go one or two at a time.
OBJECT_GROUP_BYTES = 1024 * 1024
SERVE_CONCURRENCY = 3
#: The most bytes sent per payment to the bandwidth caps and per worker-thread call: more
#: than a group of runs and its records' framing, so without a cap a group goes in one
#: call (a thread call a MiB cost each daemon about 0.5 s of CPU in a 2 GB fetch); under
#: a cap, Throttle.slice makes it about 0.1 s of the cap.
PAY_SLICE = 8 * 1024 * 1024
AGENT = "shoal/0.1"


class SessionClosed(trio.BrokenResourceError):
    """The session ended while a request was waiting for its answer."""


class Rejected(Exception):
    """The peer is not trusted; the session was refused."""


@dataclass(slots=True)
class _Pending:
    """A request of ours waiting for DATA and END."""

    deliver: Callable[[bytes, bytes | memoryview], None]
    #: For GET_RUNS: each run's size by its first id, to cut DATA_RUNS into runs.
    totals: dict[bytes, int] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    missing: tuple[bytes, ...] = ()
    error: BaseException | None = None


async def establish(
    stream: trio.abc.Stream,
    role: Role,
    key: Ed25519PrivateKey,
    is_trusted: Callable[[PeerId], bool],
    listen_port: int | None,
    expected: str | None = None,
    lane: int = 0,
    refusal: Callable[[PeerId, Hello], ProtocolError | None] = lambda peer, hello: None,
) -> tuple[Connection, PeerId]:
    """Run the handshake, authentication and HELLO exchange; return the open connection.

    An initiator opens lane `lane` of its session with the peer (0: the main
    session). A responder sends its HELLO only once it has the initiator's, so
    that `refusal` may turn the connection away before it opens: the error it
    returns goes to the peer as ERROR and is raised here.

    Raises Rejected when the peer is not trusted (having revealed nothing, if we
    are the responder) and ProtocolError on any violation.
    """
    if lane and role is not Role.INITIATOR:
        raise LocalProtocolError("only the initiator opens a lane")
    conn = Connection(role, key)
    if role is Role.INITIATOR:
        conn.start()
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        await _flush(conn, stream)
        peer: PeerId | None = None
        while True:
            event = conn.next_event()
            if isinstance(event, NeedData):
                await _flush(conn, stream)
                conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
                continue
            if isinstance(event, PeerAuthenticated):
                peer = event.peer_id
                if (expected is not None and str(peer) != expected) or not is_trusted(peer):
                    conn.reject()
                    await _flush(conn, stream)
                    raise Rejected(str(peer))
                conn.accept()
                if role is Role.INITIATOR:
                    conn.send(Hello(PROTOCOL_VERSION, AGENT, listen_port, lane))
                await _flush(conn, stream)
                continue
            if isinstance(event, HelloReceived):
                assert peer is not None
                if role is Role.RESPONDER:
                    await _answer_hello(conn, stream, peer, event.hello, listen_port, refusal)
                await _flush(conn, stream)
                return conn, peer
            if isinstance(event, ConnectionClosed):
                # On our side's violation the Connection queued ERROR (once the channel
                # has keys): SPEC "Closing and errors" says the peer hears why.
                await flush_quietly(conn, stream)
                ended = "peer closed" if event.by_peer else "closed on a violation"
                raise ProtocolError(f"{ended} during the handshake: {event.reason}", code=event.error_code)


async def _answer_hello(
    conn: Connection,
    stream: trio.abc.Stream,
    peer: PeerId,
    hello: Hello,
    listen_port: int | None,
    refusal: Callable[[PeerId, Hello], ProtocolError | None],
) -> None:
    """The responder's HELLO, or the ERROR that refuses the initiator's (raised here too)."""
    error = refusal(peer, hello)
    if error is not None:
        conn.fail(error)
        await flush_quietly(conn, stream)
        raise error
    conn.send(Hello(PROTOCOL_VERSION, AGENT, listen_port))


async def _flush(conn: Connection, stream: trio.abc.Stream) -> None:
    data = conn.data_to_send()
    if data:
        await stream.send_all(data)


async def flush_quietly(conn: Connection, stream: trio.abc.Stream) -> None:
    """Send what is queued if the peer still listens; a closing session has nothing else to do."""
    try:
        await _flush(conn, stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


class PeerSession:
    """An open, authenticated session with one trusted peer."""

    def __init__(
        self,
        conn: Connection,
        stream: trio.abc.Stream,
        peer_id: PeerId,
        address: str,
        index: Index,
        on_catalog: Callable[["PeerSession"], None],
        caps: Throttle | None = None,
        withheld: Callable[[list[bytes]], Awaitable[set[bytes]]] | None = None,
        run_buffers: RunBuffers | None = None,
        name: str | None = None,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.peer = peer_id
        self.peer_id = str(peer_id)
        self.address = address
        #: What errors a user may read call the peer: its trust name (its short id without one).
        self.name = name or peer_id.short()
        self.catalog: tuple[CatalogEntry, ...] = ()
        #: The catalog by dataset name, so looking one up costs the same for 100,000 entries.
        self._offers: dict[str, CatalogEntry] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        #: The most bytes/s the peer says it sends us (LIMIT; 0: no cap).
        self.peer_cap = 0
        self._index = index
        self._on_catalog = on_catalog
        self._caps = caps
        #: The ids of a request this peer may not have (datasets outside its audience).
        self._withheld = withheld
        self._send_lock = trio.Lock()
        #: Held from sealing a group of runs until it has gone out (see _answer_runs).
        self._sealing = trio.Lock()
        self._pending: dict[int, _Pending] = {}
        #: Set (and replaced) whenever an END frees one of our request ids.
        self._request_ended = trio.Event()
        self._serving: dict[int, trio.CancelScope] = {}
        #: trio time the last request of the peer was answered (-inf: never).
        self.served_at = float("-inf")
        # Requests answered at once: two read from disk while a third is sealed and
        # sent (with two, a receiver keeping four open left the sender waiting on its
        # reads), and memory per peer stays a few MB however many requests it opens.
        self._serve_slots = trio.Semaphore(SERVE_CONCURRENCY)
        #: The daemon's pool of read buffers for runs (a session of its own in tests).
        self._run_buffers = run_buffers if run_buffers is not None else RunBuffers(SERVE_CONCURRENCY)
        self._read_ahead = ReadAhead()
        self._closed = False
        self._liveness = Liveness(trio.current_time(), interval=KEEPALIVE_INTERVAL, max_unanswered=MAX_UNANSWERED_PINGS)
        self._meter_in = RateMeter(time.monotonic)
        self._meter_out = RateMeter(time.monotonic)
        #: Opens large frames' records in a worker thread (TCP sessions); the runs we serve
        #: are then sealed and sent from worker threads too.
        self._pump: record_pump.RecordPump | None = None
        #: The socket's descriptor for those threads: a copy of the session's own, closed when
        #: run() ends, so that closing the stream while a thread is in a call can never leave
        #: the thread reading or writing a descriptor number the daemon has opened again.
        self._fd: int | None = None
        #: The thread that seals and sends (under the send lock, one call at a time).
        self._send_thread = trio.CapacityLimiter(1)
        if isinstance(stream, trio.SocketStream):
            try:
                self._fd = os.dup(stream.socket.fileno())
            except OSError:
                _log.warning("out of file descriptors: the session with %s moves its data on the event loop", self.name)
            else:
                self._pump = record_pump.RecordPump(self._fd)
                conn.defer_seals()

    @property
    def lane_address(self) -> str | None:
        """Where the peer takes lanes (SPEC.md, "Lanes"): this session's host at the port its HELLO names."""
        hello = self.conn.peer_hello
        if hello is None or hello.listen_port is None:
            return None
        host = self.address.rpartition(":")[0]
        return f"{host}:{hello.listen_port}"

    def rates(self) -> tuple[float, float]:
        """Bytes per second received and sent over the last second; 0 once nothing moves."""
        return self._meter_in.rate(), self._meter_out.rate()

    def offer(self, name: str) -> CatalogEntry | None:
        """The peer's catalog entry for dataset `name`, if it shares one."""
        return self._offers.get(name)

    @property
    def serving(self) -> bool:
        """Whether a request of the peer is being answered now."""
        return bool(self._serving)

    # --- running --------------------------------------------------------------

    async def run(self) -> str:
        """Serve the session until it ends; return why it ended."""
        try:
            async with trio.open_nursery() as nursery:
                reason = await self._read_loop(nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._closed = True
            self._request_ended.set()
            for pending in self._pending.values():
                pending.error = SessionClosed(f"session with {self.name} closed")
                pending.done.set()
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await self._flush_quietly()
                await self.stream.aclose()
            # Every thread call has returned: the reader's pump call is over, and the serving
            # tasks' shielded sends ended with the nursery.
            if self._fd is not None:
                os.close(self._fd)
        return reason

    async def _read_loop(self, nursery: trio.Nursery) -> str:
        while True:
            event = self.conn.next_event()
            if isinstance(event, NeedData):
                # What the events handled since the last read queued (PONG, CANCEL) goes
                # out before waiting, once per read rather than once per event.
                await self._flush_quietly()
                if self._pump is not None:
                    pumped = await self._pump.pump(self.conn, self._slice(record_pump.CALL_BYTES))
                    if pumped is not None:
                        if pumped.failed is not None:
                            return pumped.failed
                        if pumped.received:
                            await self._took_in(pumped.received)
                        if pumped.received or pumped.closed:
                            continue
                        # Nothing came in the call's time: wait as below, where the keepalive watches.
                data: bytes | bytearray | None = None
                with trio.move_on_at(self._liveness.deadline(inside_frame=self.conn.inside_frame)):
                    try:
                        data = await self.stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                        return f"connection lost: {e}"
                if data is None:
                    self._keep_alive()
                    continue
                self.conn.receive_data(data)
                await self._took_in(len(data))
                continue
            if isinstance(event, LargeFrame):
                # A CATALOG near the frame limit takes about a second to decode: not on the loop.
                self.conn.receive_decoded(await trio.to_thread.run_sync(event.decode))
                continue
            if isinstance(event, ConnectionClosed):
                if event.error_code:
                    _log.warning("session with %s closed: %s (%s)", self.peer.short(), event.reason, event.error_code)
                return event.reason
            if isinstance(event, MessageReceived):
                self._dispatch(event.message, nursery)

    async def _took_in(self, n: int) -> None:
        """Count `n` bytes just received."""
        self.bytes_in += n
        self._meter_in.add(n)
        if self._caps is not None:
            # Reading no more until the bytes are paid for makes TCP slow the sender down.
            await self._caps.pay(n)
        # Counted after paying: our own throttle's wait is not the peer's silence.
        self._liveness.heard(trio.current_time())

    def _slice(self, most: int) -> int:
        """Bytes to move before paying the caps again, at most `most` (all of them uncapped)."""
        return self._caps.slice(most) if self._caps is not None else most

    def _keep_alive(self) -> None:
        """The peer has been quiet until the keepalive deadline: PING it, or give up."""
        if not self._open:
            return  # closed by another task while we waited; the next event says so
        # Quiet for a while: the buffers kept for large frames (MiBs) need not wait for the next fetch.
        self.conn.trim()
        if self._pump is not None:
            self._pump.trim()
        try:
            ping = self._liveness.expire(trio.current_time(), inside_frame=self.conn.inside_frame)
        except PeerTimedOut as e:
            self.conn.fail(e)  # queues ERROR("timeout"); the next event is the close
            return
        if ping is not None:
            self.conn.send(ping)

    def _dispatch(self, message, nursery: trio.Nursery) -> None:
        if isinstance(message, (Data, DataRuns)):
            pending = self._pending.get(message.req)
            if pending is not None and pending.error is None:
                try:
                    if isinstance(message, Data):
                        pending.deliver(message.id, message.data)
                    else:
                        # Each run a view of its frame: frames are kept buffers (spares.py), which do
                        # not grow glibc's heap, so copying runs out to free a frame early saves no memory.
                        totals = [pending.totals[first] for first in message.ids]
                        for first, data in zip(message.ids, split_runs(message, totals)):
                            pending.deliver(first, data)
                except Exception as e:  # a bad chunk: abandon this request only
                    pending.error = e
                    pending.done.set()
                    self.conn.send(Cancel(message.req))
        elif isinstance(message, End):
            self._request_ended.set()
            self._request_ended = trio.Event()
            pending = self._pending.pop(message.req, None)
            if pending is not None:
                pending.missing = message.missing
                pending.done.set()
        elif isinstance(message, Catalog):
            self.catalog = message.datasets
            self._offers = {entry.name: entry for entry in message.datasets}
            self._on_catalog(self)
        elif isinstance(message, Limit):
            self.peer_cap = message.rate
        elif isinstance(message, (GetObjects, GetChunks, GetRuns)):
            scope = trio.CancelScope()
            self._serving[message.req] = scope
            nursery.start_soon(self._serve, message, scope)
        elif isinstance(message, Cancel):
            serving = self._serving.get(message.req)
            if serving is not None:
                serving.cancel()

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _flush(self) -> None:
        async with self._send_lock:
            parts = self.conn.data_to_send_parts()
            size = sum(len(part) for part in parts)
            if size:
                self.bytes_out += size
                self._meter_out.add(size)
                # A send cut short by cancellation would leave half a record on
                # the wire and break the channel for every other request.
                with trio.CancelScope(shield=True):
                    # Paid and sent a slice at a time: a capped peer's data keeps flowing
                    # instead of a 4 MiB group arriving in one burst after a 4 s wait.
                    for views, length in slices(parts, self._slice(PAY_SLICE)):
                        if self._caps is not None:
                            await self._caps.pay(length)
                        if self._fd is not None and length >= record_pump.SEND_MIN:
                            await record_pump.send(self._fd, views, self._send_thread)
                        else:
                            await send_views(self.stream, views)

    @property
    def _open(self) -> bool:
        # The connection closes (on the peer's BYE, a violation, end of input) before
        # run() gets to mark the session closed; other tasks may still be sending.
        return not self._closed and self.conn.state not in (State.CLOSED, State.ERROR)

    async def send(self, message) -> None:
        """Queue and send one message."""
        if not self._open:
            raise SessionClosed(f"session with {self.name} is closed")
        self.conn.send(message)
        await self._flush()

    async def close(self, reason: str = "closing") -> None:
        self.conn.close(reason)
        await self._flush_quietly()
        if self._fd is not None and isinstance(self.stream, trio.SocketStream):
            # The threads' copy of the descriptor keeps the connection open after aclose:
            # shut it down, so that the peer, and a pump call waiting on it, see the end now.
            with contextlib.suppress(OSError):
                self.stream.socket.shutdown(socket.SHUT_RDWR)
        await self.stream.aclose()

    # --- serving the peer -----------------------------------------------------

    async def _serve(self, request: GetObjects | GetChunks | GetRuns, scope: trio.CancelScope) -> None:
        try:
            await self._answer(request, scope)
        except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the session ended while answering; the reader reports why
        finally:
            self._serving.pop(request.req, None)
            self.served_at = trio.current_time()

    async def _answer(self, request: GetObjects | GetChunks | GetRuns, scope: trio.CancelScope) -> None:
        # `scope` is cancelled by the peer's CANCEL only; the request still ends
        # with END (listing whatever was not sent), or its id would stay taken on
        # both sides. Closing the session cancels an outer scope and skips this.
        # Manifest objects do not queue behind bulk data: a fetch streams its manifest
        # while runs flow, and its next directory waits on these answers.
        with scope:
            if isinstance(request, GetObjects):
                await self._answer_objects(request)
            else:
                async with self._serve_slots:
                    if isinstance(request, GetRuns):
                        await self._answer_runs(request)
                    else:
                        await self._answer_chunks(request)
        self.conn.send_end(request.req)
        await self._flush()

    async def _allowed(self, ids: list[bytes]) -> list[bytes]:
        """`ids` without those withheld from this peer; END then lists them as missing."""
        if self._withheld is None:
            return ids
        withheld = await self._withheld(ids)
        return [i for i in ids if i not in withheld] if withheld else ids

    async def _answer_chunks(self, request: GetChunks) -> None:
        ids = await self._allowed(list(request.ids))
        # Located (and their reads started) for the whole request at once.
        places = await trio.to_thread.run_sync(chunkio.locate, self._index, ids)
        for start in range(0, len(ids), SERVE_GROUP):
            group = ids[start : start + SERVE_GROUP]
            found: list[tuple[bytes, bytes | bytearray | None]] = list(chunkio.read_cached(group, places))
            if len(found) < len(group):
                rest = group[len(found) :]
                found += await trio.to_thread.run_sync(chunkio.read_chunks, self._index, rest, places)
            await self._send_found(request.req, found)

    async def _answer_runs(self, request: GetRuns) -> None:
        """Runs read with one preadv each and verified chunk by chunk in a worker thread,
        a buffer's worth per call, then sent back to back: one DATA_RUNS for each stretch
        of runs held here. END lists the runs not held (or withheld)."""
        ids = list({cid for run in request.runs for cid in run.ids})
        allowed = set(await self._allowed(ids))
        runs = [run for run in request.runs if allowed.issuperset(run.ids)]
        places: dict[bytes, Location] = {}
        pool = self._run_buffers
        for group in _groups_by_size(runs, {run: run.total for run in runs}, pool.size):
            need = sum(run.total for run in group)
            async with pool.lease() as pooled:
                buf = pooled if need <= len(pooled) else bytearray(need)
                views = await trio.to_thread.run_sync(self._read_runs, runs, group, places, buf)
                # One group sealed at a time per session (the other slots read meanwhile), so a
                # session holds one buffer's worth of records; the read buffer goes back as soon
                # as they are sealed (copied), before a slow peer takes them in.
                await self._sealing.acquire()
                try:
                    with memoryview(buf) as whole:
                        for firsts, start, end in _held_stretches(group, views):
                            self.conn.send_data_runs(request.req, firsts, whole[start:end])
                    await self._seal_deferred()
                except BaseException:
                    self._sealing.release()
                    raise
            try:
                await self._flush()
            finally:
                self._sealing.release()

    async def _seal_deferred(self) -> None:
        """Seal the records of the runs just queued in a worker thread, before their buffer goes back."""
        async with self._send_lock:
            # Under the send lock: no flush may send their buffers before they are sealed.
            jobs = self.conn.take_seal_jobs()
            if jobs:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(record_pump.seal, jobs, limiter=self._send_thread)

    def _read_runs(
        self, runs: list[Run], group: list[Run], places: dict[bytes, Location], buf: bytearray
    ) -> list[memoryview | None]:
        """Read `group` of `runs`, locating all of `runs` into `places` first if they are not
        yet: a request's first group costs one worker-thread call, not a second one before it
        to locate its runs (two thread switches, and a wait for the GIL on a busy sender)."""
        if not places:
            places.update(chunkio.locate_runs(self._index, runs, self._read_ahead))
        return chunkio.read_runs(self._index, group, places, buf)

    async def _answer_objects(self, request: GetObjects) -> None:
        ids = await self._allowed(list(request.ids))
        sizes = await trio.to_thread.run_sync(self._index.object_sizes, ids)
        for group in _groups_by_size([oid for oid in ids if oid in sizes], sizes, OBJECT_GROUP_BYTES):
            found = await trio.to_thread.run_sync(self._read_objects, group)
            await self._send_found(request.req, found)

    async def _send_found(self, req: int, found: Sequence[tuple[bytes, bytes | bytearray | None]]) -> None:
        """Send what was found; END later lists the rest (None: not held) as missing."""
        for oid, data in found:
            if data is not None:
                self.conn.send_data(req, oid, data)
        await self._flush()

    def _read_objects(self, ids: list[bytes]) -> list[tuple[bytes, bytes | None]]:
        found = self._index.get_objects(ids)
        return [(oid, found[oid][1] if oid in found else None) for oid in ids]

    # --- asking the peer (the fetch engine's Source) -----------------------------

    async def _request(
        self, make: Callable[[int], Message], deliver: Callable[[bytes, Any], None], totals: dict[bytes, int] | None = None
    ) -> list[bytes]:
        """Send the request `make(req)` builds; deliver its DATA (a run at a time) as it comes; the ids END lists."""
        await self._request_slot()
        req = self.conn.new_request_id()
        pending = _Pending(deliver, totals or {})
        self._pending[req] = pending
        try:
            await self.send(make(req))
            await pending.done.wait()
        except BaseException:
            if self._pending.pop(req, None) is not None and self._open:
                self.conn.send(Cancel(req))
                with trio.CancelScope(shield=True):
                    await self._flush_quietly()
            raise
        self._pending.pop(req, None)
        if pending.error is not None:
            raise pending.error
        return list(pending.missing)

    async def _request_slot(self) -> None:
        """Wait until fewer than MAX_OUTSTANDING_REQUESTS of ours are open.

        A request we cancelled stays open until the peer's END, so a fetch that
        starts right after another was interrupted may have to wait a moment.
        """
        while self._open and len(self.conn.sent_requests) >= MAX_OUTSTANDING_REQUESTS:
            await self._request_ended.wait()

    async def get_objects(self, ids: Sequence[bytes]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        got: list[tuple[bytes, bytes]] = []
        missing = await self._request(lambda req: GetObjects(req, tuple(ids)), lambda oid, data: got.append((oid, data)))
        return got, missing

    async def get_chunks(self, ids: Sequence[bytes], deliver: Callable[[bytes, bytes], None]) -> list[bytes]:
        return await self._request(lambda req: GetChunks(req, tuple(ids)), deliver)

    async def get_runs(self, runs: Sequence[Run], deliver: Callable[[bytes, bytes | memoryview], None]) -> list[bytes]:
        """Stream each run's bytes into `deliver(first id, bytes)`; return the first ids of the runs the peer lacks."""
        totals = {run.ids[0]: run.total for run in runs}
        return await self._request(lambda req: GetRuns(req, tuple(runs)), deliver, totals)


def _held_stretches(group: list[Run], views: list[memoryview | None]) -> Iterator[tuple[tuple[bytes, ...], int, int]]:
    """The stretches of `group`'s runs read back to back (`views`, None for a run not held):
    each as its runs' first ids and where its bytes start and end in the buffer."""
    firsts: list[bytes] = []
    pos = start = 0
    for run, view in zip(group, views):
        if view is not None:
            if not firsts:
                start = pos
            firsts.append(run.ids[0])
        elif firsts:
            yield tuple(firsts), start, pos
            firsts = []
        pos += run.total
    if firsts:
        yield tuple(firsts), start, pos


def _groups_by_size(ids: list[K], sizes: dict[K, int], limit: int) -> Iterator[list[K]]:
    """`ids` in order, cut into groups whose sizes add up to at most `limit` (or a single larger one)."""
    group: list[K] = []
    total = 0
    for oid in ids:
        if group and total + sizes[oid] > limit:
            yield group
            group, total = [], 0
        group.append(oid)
        total += sizes[oid]
    if group:
        yield group
