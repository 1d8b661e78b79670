"""A hostile but trusted peer, speaking the wire protocol of SPEC.md, against real daemons.

Two real `python -m shoal daemon` processes run for the module:

* `victim` shares a dataset and is attacked on its serving side: the hostile peer
  dials it and misbehaves (below the protocol, in the channel, in the frames and
  in the session rules). After every attack the daemon must still be the same
  process, say why it dropped the peer in its log, serve an honest peer, and
  not have grown by more than a few tens of MB.
* `fetcher` fetches from hostile seeders: in-test peers that dial it, advertise a
  signed version in their CATALOG and then serve lies (bytes that do not match
  their ids, escaping paths and symlinks, absurd sizes, self-references, wrong
  chunks, silence). The fetch must fail with one clear line (or complete from an
  honest seeder), and nothing may be written outside DEST.

Everything is loopback only. The peers here are blocking sockets driving the
sans-I/O `Connection` (or the bare `SecureChannel` where the attack sits below it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.client.blocking import ControlClient
from shoal.errors import ShoalError
from shoal.home import socket_path
from shoal.protocol.format.chunking import DEFAULT_PARAMS
from shoal.protocol.format.hashing import Kind, chunk_id, object_id
from shoal.protocol.format.identity import PeerId, public_key_bytes
from shoal.protocol.format.manifest import sign_version
from shoal.protocol.format.objects import (
    ChunkListNode,
    DirEntry,
    EntryType,
    FileEntry,
    FileObject,
    Ref,
    SymlinkEntry,
    TreeEntry,
    TreeNode,
    VersionRecord,
    decode,
    encode_with_id,
)
from shoal.protocol.wire.channel import Role, SecureChannel
from shoal.protocol.wire.connection import (
    MAX_OUTSTANDING_REQUESTS,
    NEED_DATA,
    Connection,
    ConnectionClosed,
    HelloReceived,
    MessageReceived,
    PeerAuthenticated,
)
from shoal.protocol.wire.framing import MAX_FRAME_SIZE
from shoal.protocol.wire.messages import (
    MAX_DATA_SIZE,
    PROTOCOL_VERSION,
    Catalog,
    CatalogEntry,
    Data,
    DataRuns,
    End,
    GetChunks,
    GetObjects,
    GetRuns,
    Hello,
    MessageType,
    Ping,
    Pong,
    encode_message,
)

pytestmark = pytest.mark.slow


MB = 1024 * 1024
#: How much a daemon may grow over one attack.
RSS_SLACK = 40 * MB
#: The daemon's handshake deadline (session.HANDSHAKE_TIMEOUT) plus scheduling slack.
HANDSHAKE_BOUND = 10.0 + 4.0


# --- a real daemon process ------------------------------------------------------------


class Daemon:
    """`python -m shoal --home HOME daemon` in the foreground, its log in HOME/test.log."""

    def __init__(self, label: str) -> None:
        # Under /tmp: the control socket path must stay under 108 bytes.
        self.home = Path(tempfile.mkdtemp(prefix=f"shoal-adv-{label}-", dir="/tmp"))
        (self.home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n')
        self.log_path = self.home / "test.log"
        env = dict(os.environ, SHOAL_NO_AUTOSTART="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shoal", "--home", str(self.home), "daemon",
                 "--listen", "127.0.0.1:0", "--no-discovery"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            try:
                status = self.call("status", timeout=2)
                break
            except ShoalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"daemon did not start:\n{self.log_tail()}") from None
                time.sleep(0.1)
        assert status["pid"] == self.pid
        self.port = int(status["listen"].rpartition(":")[2])
        self.peer_id = status["peer_id"]

    def call(self, method: str, params: dict | None = None, timeout: float = 10) -> dict:
        with ControlClient.connect(socket_path(self.home), timeout=timeout) as client:
            return client.call(method, params or {}, timeout=timeout)

    def trust(self, key: Ed25519PrivateKey) -> None:
        self.call("trust", {"peer_id": peer_id_text(key)})

    def rss(self) -> int:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}"
        status = self.call("status", timeout=5)
        assert status["pid"] == self.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.home, ignore_errors=True)


def peer_id_text(key: Ed25519PrivateKey) -> str:
    return str(PeerId.from_public_key(public_key_bytes(key)))


def wait_for_log(daemon: Daemon, offset: int, needles: tuple[str, ...], timeout: float = 5) -> str:
    """The log written since `offset`, once it holds one of `needles`."""
    deadline = time.monotonic() + timeout
    while True:
        text = daemon.log_since(offset)
        if any(n in text for n in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


# --- the hostile peer -----------------------------------------------------------------


class Peer:
    """A blocking-socket peer around the sans-I/O Connection, with raw escape hatches."""

    def __init__(self, key: Ed25519PrivateKey, port: int, role: Role = Role.INITIATOR) -> None:
        self.key = key
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.local_port = self.sock.getsockname()[1]
        self.conn = Connection(role, key)
        self.messages: list = []

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def next_event(self, deadline: float):
        """The next Connection event; ConnectionClosed on EOF; TimeoutError past the deadline."""
        while True:
            event = self.conn.next_event()
            self.flush()
            if event is not NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(256 * 1024)
            except TimeoutError:
                raise TimeoutError from None
            except OSError:
                data = b""
            self.conn.receive_data(data)

    def open(self, *, hello: bool = True, timeout: float = 10) -> None:
        """Handshake, AUTH both ways and (unless told not to) the HELLO exchange."""
        self.conn.start()
        self.flush()
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(deadline)
            if isinstance(event, PeerAuthenticated):
                self.conn.accept()
                if not hello:
                    self.flush()
                    return
                self.conn.send(Hello(PROTOCOL_VERSION, "hostile/0", None))
                self.flush()
            elif isinstance(event, HelloReceived):
                return
            elif isinstance(event, ConnectionClosed):
                raise AssertionError(f"the daemon refused the session: {event}")

    def write_plain(self, raw: bytes) -> None:
        """Put bytes in the encrypted stream as they are: frames we craft ourselves."""
        self.conn._channel.write(raw)
        self.flush()

    def frame(self, payload: bytes) -> None:
        self.write_plain(len(payload).to_bytes(4, "big") + payload)

    def wait_closed(self, timeout: float) -> ConnectionClosed | None:
        """Read until the daemon ends the session; None if it is still open at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.next_event(deadline)
            except TimeoutError:
                return None
            if isinstance(event, ConnectionClosed):
                return event
            if isinstance(event, MessageReceived):
                self.messages.append(event.message)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def raw_channel(port: int) -> tuple[socket.socket, SecureChannel]:
    """A Noise channel to the daemon with nothing sent inside it yet (no AUTH)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    channel = SecureChannel(Role.INITIATOR)
    channel.start()
    sock.sendall(channel.data_to_send())
    while not channel.established:
        data = sock.recv(4096)
        assert data, "the daemon closed during the Noise handshake"
        channel.receive_data(data)
        channel.read()
    return sock, channel


def socket_closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the daemon closed `sock` (reading and dropping whatever it sends), or None."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start


# --- an honest peer, to prove the daemon still serves -------------------------------


def honest_fetch(daemon: Daemon, dataset: str = "seed", timeout: float = 15) -> None:
    """As a freshly trusted peer: read the catalog, fetch the head's objects and a chunk, verify all."""
    key = Ed25519PrivateKey.generate()
    daemon.trust(key)
    peer = Peer(key, daemon.port)
    try:
        peer.open(timeout=timeout)
        deadline = time.monotonic() + timeout

        def message(kind):
            while True:
                event = peer.next_event(deadline)
                assert not isinstance(event, ConnectionClosed), f"honest session ended: {event}"
                if isinstance(event, MessageReceived) and isinstance(event.message, kind):
                    return event.message

        catalog = message(Catalog)
        entry = next(e for e in catalog.datasets if e.name == dataset)

        def get_object(kind: Kind, oid: bytes):
            req = peer.conn.new_request_id()
            peer.conn.send(GetObjects(req, (oid,)))
            peer.flush()
            data = message(Data)
            assert data.id == oid and object_id(kind, data.data) == oid
            assert message(End).missing == ()
            return decode(kind, data.data, oid)

        version = get_object(Kind.VERSION, entry.head)
        root = get_object(Kind.TREE, version.root)
        file_entry = next(e for e in root.entries if e.type == EntryType.FILE)
        file = get_object(Kind.FILE, file_entry.id)
        ids = tuple(r.id for r in file.entries[:4])
        req = peer.conn.new_request_id()
        peer.conn.send(GetChunks(req, ids))
        peer.flush()
        for _ in ids:
            data = message(Data)
            assert chunk_id(data.data) == data.id
        assert message(End).missing == ()
        peer.conn.close("done")
        peer.flush()
    finally:
        peer.close()


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    daemon = Daemon("victim")
    try:
        data = tmp_path_factory.mktemp("seed")
        (data / "big.bin").write_bytes(os.urandom(3 * MB))
        (data / "small.txt").write_bytes(b"hello\n")
        daemon.call("share", {"path": str(data), "name": "seed"}, timeout=30)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def fetcher():
    daemon = Daemon("fetcher")
    try:
        yield daemon
    finally:
        daemon.stop()


class Watch:
    """Same pid before and after, bounded RSS growth, and the log written meanwhile."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.rss = daemon.rss()
        self.log = daemon.log_size()

    def check(self) -> None:
        self.daemon.assert_alive()
        grown = self.daemon.rss() - self.rss
        assert grown < RSS_SLACK, f"daemon grew by {grown / MB:.1f} MB over the attack"


# --- serving side: the hostile peer dials the daemon ------------------------------------


def _open_hostile(daemon: Daemon, hello: bool = True) -> Peer:
    key = Ed25519PrivateKey.generate()
    daemon.trust(key)
    peer = Peer(key, daemon.port)
    peer.open(hello=hello)
    return peer


def _session_attack(send: Callable[[Peer], None], hello: bool = True) -> Callable[[Daemon], tuple[str, ...]]:
    def attack(daemon: Daemon) -> tuple[str, ...]:
        peer = _open_hostile(daemon, hello)
        try:
            send(peer)
            closed = peer.wait_closed(5)
            assert closed is not None, "the daemon kept the session open after the violation"
            return (closed.error_code or "", closed.reason)
        finally:
            peer.close()
    return attack


def _truncated_close(daemon: Daemon) -> tuple[str, ...]:
    peer = _open_hostile(daemon)
    peer.write_plain((1000).to_bytes(4, "big") + b"\x92\x09")  # a frame header and 2 of 1000 bytes
    peer.sock.shutdown(socket.SHUT_WR)
    # The daemon cannot answer a dead stream; it only ends the session and logs it.
    peer.wait_closed(5)
    peer.close()
    return ("truncated",)


def _truncated_record(daemon: Daemon) -> tuple[str, ...]:
    peer = _open_hostile(daemon)
    peer.sock.sendall(b"\x01\x00" + os.urandom(50))  # a record header promising 256 bytes, then EOF
    peer.sock.shutdown(socket.SHUT_WR)
    peer.wait_closed(5)
    peer.close()
    return ("truncated",)


def _oversized_after_hello(peer: Peer) -> None:
    peer.write_plain((2**32 - 1).to_bytes(4, "big") + b"x" * 100)


def _second_hello(peer: Peer) -> None:
    peer.frame(encode_message(Hello(PROTOCOL_VERSION, "hostile/0", None)))


def _data_before_hello(peer: Peer) -> None:
    peer.frame(encode_message(Data(0, bytes(32), b"surprise")))


def _get_before_hello(peer: Peer) -> None:
    peer.frame(encode_message(GetObjects(0, (bytes(32),))))


def _data_unasked(peer: Peer) -> None:
    peer.frame(encode_message(Data(7, bytes(32), b"surprise")))


def _request_flood(daemon: Daemon) -> tuple[str, ...]:
    """33 requests (one over MAX_OUTSTANDING_REQUESTS) in one write, for real chunks, then 2000 more."""
    peer = _open_hostile(daemon)
    try:
        deadline = time.monotonic() + 5
        catalog = None
        while catalog is None:
            event = peer.next_event(deadline)
            if isinstance(event, MessageReceived) and isinstance(event.message, Catalog):
                catalog = event.message
        head = next(e.head for e in catalog.datasets if e.name == "seed")
        ids = (head,) + tuple(os.urandom(32) for _ in range(1023))
        burst = b""
        for req in range(MAX_OUTSTANDING_REQUESTS + 1 + 2000):
            payload = encode_message(GetObjects(req, ids))
            burst += len(payload).to_bytes(4, "big") + payload
            peer.conn.sent_requests.add(req, ids)  # so our side reads the answers without complaint
            if len(burst) > 4 * MB:
                break
        peer.conn._channel.write(burst)
        data = peer.conn.data_to_send()
        peer.sock.settimeout(10)
        try:
            peer.sock.sendall(data)
        except OSError:
            pass  # the daemon may close while we are still writing
        closed = peer.wait_closed(10)
        assert closed is not None, "the daemon neither refused the flood nor finished with it"
        return (closed.error_code or "", closed.reason)
    finally:
        peer.close()


def _preauth_oversized(daemon: Daemon) -> tuple[str, ...]:
    """Before AUTH the frame limit is 4096 bytes, checked on the header (SPEC, Frames)."""
    sock, channel = raw_channel(daemon.port)
    try:
        channel.write((MAX_FRAME_SIZE - 10).to_bytes(4, "big"))
        sock.sendall(channel.data_to_send())
        took = socket_closed_within(sock, 2)
        assert took is not None, (
            "a frame header declaring 16 MiB before AUTH was not refused at once "
            "(SPEC: until HELLO the limit is 4,096 bytes, checked before buffering the payload)"
        )
        return ("frame-too-large",)
    finally:
        sock.close()


def _oversize_run(peer: Peer) -> None:
    """A run whose sizes add up to more than a DATA_RUNS may carry (the constructor refuses to build it)."""
    run = [[bytes(32), bytes([1] * 32)], [MAX_DATA_SIZE, 1]]
    peer.frame(msgpack.packb([MessageType.GET_RUNS, 1, [run]], use_bin_type=True))


def _too_many_run_chunks(peer: Peer) -> None:
    runs = [[[i.to_bytes(32, "big")] * 5, [1] * 5] for i in range(205)]
    peer.frame(msgpack.packb([MessageType.GET_RUNS, 1, runs], use_bin_type=True))


SERVING_ATTACKS = {
    "oversized-frame-after-hello": (_session_attack(_oversized_after_hello), ("frame-too-large",)),
    "oversized-frame-before-auth": (_preauth_oversized, ("frame-too-large",)),
    "truncated-frame-then-close": (_truncated_close, ("truncated",)),
    "truncated-record-then-close": (_truncated_record, ("truncated",)),
    "invalid-msgpack": (_session_attack(lambda p: p.frame(b"\xc1\xc1\xc1")), ("bad-message",)),
    "trailing-bytes": (_session_attack(lambda p: p.frame(msgpack.packb([9, 1]) + b"\x00")), ("bad-message",)),
    "unknown-message-type": (_session_attack(lambda p: p.frame(msgpack.packb([99, 1]))), ("unknown-message",)),
    "data-before-hello": (_session_attack(_data_before_hello, hello=False), ("DATA before HELLO",)),
    "get-before-hello": (_session_attack(_get_before_hello, hello=False), ("GET_OBJECTS before HELLO",)),
    "second-hello": (_session_attack(_second_hello), ("unexpected-message",)),
    "data-not-asked-for": (_session_attack(_data_unasked), ("bad-request",)),
    "data-run-not-asked-for": (
        _session_attack(lambda p: p.frame(encode_message(DataRuns(7, (bytes(32),), b"surprise")))), ("bad-request",),
    ),
    "oversize-run": (_session_attack(_oversize_run), ("bad-message",)),
    "too-many-chunks-in-runs": (_session_attack(_too_many_run_chunks), ("bad-message",)),
    "request-flood": (_request_flood, ("bad-request", "more than 32", "peer closed")),
}


@pytest.mark.parametrize("name", list(SERVING_ATTACKS))
def test_serving_side_attack(victim: Daemon, name: str) -> None:
    attack, reasons = SERVING_ATTACKS[name]
    watch = Watch(victim)
    attack(victim)
    log = wait_for_log(victim, watch.log, reasons)
    assert any(r in log for r in reasons), f"no reason {reasons} in the daemon's log:\n{log}"
    honest_fetch(victim)
    watch.check()


def test_garbage_instead_of_noise(victim: Daemon) -> None:
    watch = Watch(victim)
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x21" + os.urandom(33), os.urandom(70_000)):
        with socket.create_connection(("127.0.0.1", victim.port), timeout=5) as sock:
            sock.sendall(garbage)
            took = socket_closed_within(sock, 3)
            assert took is not None, f"the daemon kept a connection open after {garbage[:8]!r}..."
    log = wait_for_log(victim, watch.log, ("handshake",))
    assert "handshake" in log and "failed" in log, log
    honest_fetch(victim)
    watch.check()


def test_slow_attacks_are_bounded_and_do_not_block_honest_peers(victim: Daemon) -> None:
    """Run concurrently: a handshake that never completes, one cut after message 1, a peer
    that authenticates but never sends HELLO, and two slowlorises (before AUTH, and inside
    an open session), while an honest peer fetches."""
    watch = Watch(victim)
    closed_after: dict[str, float | None] = {}
    stop = threading.Event()

    def silent() -> None:
        with socket.create_connection(("127.0.0.1", victim.port), timeout=5) as sock:
            closed_after["silent"] = socket_closed_within(sock, HANDSHAKE_BOUND)

    def half_handshake() -> None:
        with socket.create_connection(("127.0.0.1", victim.port), timeout=5) as sock:
            sock.sendall(b"\x00\x20" + os.urandom(16))  # half of message 1
            closed_after["half"] = socket_closed_within(sock, HANDSHAKE_BOUND)

    def slowloris_preauth() -> None:
        sock, channel = raw_channel(victim.port)
        start = time.monotonic()
        try:
            channel.write((4000).to_bytes(4, "big"))
            sock.sendall(channel.data_to_send())
            while time.monotonic() - start < HANDSHAKE_BOUND:
                channel.write(b"\x00")
                try:
                    sock.sendall(channel.data_to_send())
                except OSError:
                    break
                if socket_closed_within(sock, 1.0) is not None:
                    break
            took = time.monotonic() - start
            closed_after["slowloris-preauth"] = took if took < HANDSHAKE_BOUND else None
        finally:
            sock.close()

    def no_hello() -> None:
        # Authenticated both ways, then silent: the 10 s cover AUTH and HELLO too (SPEC "Session").
        peer = _open_hostile(victim, hello=False)
        try:
            closed_after["no-hello"] = socket_closed_within(peer.sock, HANDSHAKE_BOUND)
        finally:
            peer.close()

    def slowloris_session() -> None:
        peer = _open_hostile(victim)
        try:
            peer.write_plain((4000).to_bytes(4, "big"))
            while not stop.wait(1.0):
                peer.write_plain(b"\x00")
        finally:
            peer.close()

    attackers = (silent, half_handshake, slowloris_preauth, no_hello, slowloris_session)
    threads = [threading.Thread(target=f, daemon=True) for f in attackers]
    for t in threads:
        t.start()
    time.sleep(1.0)
    # An honest peer is served while all four hold their connections.
    honest_fetch(victim)
    during = victim.rss() - watch.rss
    for t in threads[:4]:
        t.join(HANDSHAKE_BOUND + 5)
    stop.set()
    threads[4].join(5)
    assert closed_after.get("silent") is not None, "a connection that never handshakes was kept past 10 s"
    assert closed_after.get("half") is not None, "a half handshake was kept past 10 s"
    assert closed_after.get("slowloris-preauth") is not None, "a pre-AUTH slowloris was kept past 10 s"
    assert closed_after.get("no-hello") is not None, "a peer that never sent HELLO was kept past 10 s"
    log = wait_for_log(victim, watch.log, ("TooSlow",))
    assert "TooSlowError" in log, log
    honest_fetch(victim)
    assert during < RSS_SLACK
    watch.check()


def test_preauth_frames_cannot_pile_up_memory(victim: Daemon) -> None:
    """Anyone who can connect (no trust needed) declares a big frame before AUTH and streams it.

    SPEC: until HELLO a frame over 4,096 bytes is fatal, checked on its header, so
    none of this may be buffered."""
    watch = Watch(victim)
    conns = 6
    socks: list[socket.socket] = []
    peak = 0

    def stream(sock: socket.socket, channel: SecureChannel) -> None:
        size = 16 * MB
        channel.write(size.to_bytes(4, "big"))
        piece = bytes(1 * MB)
        try:
            for _ in range(size // len(piece) - 1):
                channel.write(piece)
                sock.sendall(channel.data_to_send())
        except OSError:
            pass  # refused: what should happen

    try:
        threads = []
        for _ in range(conns):
            sock, channel = raw_channel(victim.port)
            socks.append(sock)
            threads.append(threading.Thread(target=stream, args=(sock, channel), daemon=True))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            peak = max(peak, victim.rss() - watch.rss)
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.05)
        for _ in range(20):
            peak = max(peak, victim.rss() - watch.rss)
            time.sleep(0.05)
    finally:
        for sock in socks:
            sock.close()
    honest_fetch(victim)
    victim.assert_alive()
    assert peak < RSS_SLACK, (
        f"{conns} unauthenticated connections each streaming one 16 MiB pre-AUTH frame grew the daemon "
        f"by {peak / MB:.0f} MB"
    )


def _next_message(peer: Peer, kind: type, deadline: float):
    """The next message of `kind` from the daemon, skipping others; the session must stay open."""
    while True:
        event = peer.next_event(deadline)
        assert not isinstance(event, ConnectionClosed), f"the daemon closed the session: {event}"
        if isinstance(event, MessageReceived) and isinstance(event.message, kind):
            return event.message


def test_a_second_session_with_the_same_peer_is_refused_with_duplicate_session(victim: Daemon) -> None:
    """SPEC "Session": one session per peer; the newer one ends with ERROR("duplicate-session")."""
    key = Ed25519PrivateKey.generate()
    victim.trust(key)
    first, second = Peer(key, victim.port), Peer(key, victim.port)
    try:
        first.open()
        second.open()
        closed = second.wait_closed(5)
        assert closed is not None, "the daemon kept two sessions with one peer"
        assert (closed.error_code, closed.by_peer) == ("duplicate-session", True), closed
        first.conn.send(Ping(3))
        first.flush()
        assert _next_message(first, Pong, time.monotonic() + 5) == Pong(3)
    finally:
        first.close()
        second.close()


def test_objects_are_not_served_as_chunks_nor_chunks_as_objects(victim: Daemon) -> None:
    """SPEC "Session": an id of the other kind is answered as missing, and the session goes on."""
    peer = _open_hostile(victim)
    try:
        deadline = time.monotonic() + 10
        head = next(e.head for e in _next_message(peer, Catalog, deadline).datasets if e.name == "seed")

        def ask(message_type, oid: bytes) -> tuple[dict[bytes, bytes], tuple[bytes, ...]]:
            req = peer.conn.new_request_id()
            peer.conn.send(message_type(req, (oid,)))
            peer.flush()
            delivered = {}
            while True:
                message = _next_message(peer, (Data, End), deadline)
                if isinstance(message, End):
                    return delivered, message.missing
                delivered[message.id] = message.data

        def get(kind: Kind, oid: bytes):
            delivered, missing = ask(GetObjects, oid)
            assert list(delivered) == [oid] and missing == ()
            return decode(kind, delivered[oid], oid)

        version = get(Kind.VERSION, head)
        root = get(Kind.TREE, version.root)
        file_ref = next(e.id for e in root.entries if e.type == EntryType.FILE)
        chunk = get(Kind.FILE, file_ref).entries[0].id
        assert list(ask(GetChunks, chunk)[0]) == [chunk]
        assert ask(GetObjects, chunk) == ({}, (chunk,))
        assert ask(GetChunks, head) == ({}, (head,))
    finally:
        peer.close()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the main thread's, the whole process's) CPU seconds, user + system. The process
    total counts threads that have already exited, such as idle trio workers."""

    def stat(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return stat(f"/proc/{pid}/task/{pid}/stat"), stat(f"/proc/{pid}/stat")


def _try_resolve(daemon: Daemon, name: str) -> None:
    try:
        daemon.call("resolve", {"name": name, "timeout": 10}, timeout=30)
    except ShoalError:
        pass  # the peer says it does not have the version: all the test needs is the request


def test_large_catalogs_are_decoded_off_the_event_loop(victim: Daemon) -> None:
    """Five legal CATALOGs of 100,000 entries (SPEC's limit), ~9 MB each. Decoding one costs
    about a second of CPU; it must happen on a worker thread, not on the thread that runs
    the event loop (which answers the control socket and every other peer)."""
    entries = tuple(
        CatalogEntry(f"ds-{i:06}", os.urandom(32), 1, i, 1, 1_790_000_000, (os.urandom(32),)) for i in range(100_000)
    )
    payload = encode_message(Catalog(entries))
    key = Ed25519PrivateKey.generate()
    victim.trust(key)
    peer = Peer(key, victim.port)
    try:
        peer.open()
        main_before, total_before = cpu_seconds(victim.pid)
        for _ in range(5):
            peer.frame(payload)
        peer.conn.send(Ping(5))
        peer.flush()
        # Frames are handled in order: the PONG comes once all five catalogs are applied.
        deadline = time.monotonic() + 60
        while True:
            event = peer.next_event(deadline)
            assert not isinstance(event, ConnectionClosed), f"the daemon closed the session: {event}"
            if isinstance(event, MessageReceived) and event.message == Pong(5):
                break
        main_after, total_after = cpu_seconds(victim.pid)
        # The catalog is in use: resolving one of its datasets asks this peer for its head.
        resolving = threading.Thread(target=_try_resolve, args=(victim, "ds-099999"), daemon=True)
        resolving.start()
        while True:
            event = peer.next_event(deadline)
            assert not isinstance(event, ConnectionClosed), f"the daemon closed the session: {event}"
            if isinstance(event, MessageReceived) and isinstance(event.message, GetObjects):
                break
        assert event.message.ids == (entries[-1].head,)
        peer.conn.send(End(event.message.req, event.message.ids))
        peer.flush()
        resolving.join(30)
        # More offers than one control reply holds: the listing says how many it left out.
        listing = victim.call("ls", {"remote": True}, timeout=30)
        assert (len(listing["datasets"]), listing["total"]) == (10_000, 100_000)
    finally:
        peer.close()
    on_loop = main_after - main_before
    elsewhere = (total_after - total_before) - on_loop
    assert on_loop < elsewhere / 2, f"the event loop thread spent {on_loop:.2f}s, other threads {elsewhere:.2f}s"
    honest_fetch(victim)
    victim.assert_alive()


# --- fetching side: the daemon fetches from hostile seeders ----------------------------


class Store:
    """Objects and chunks of hand-built versions, hashed correctly (the lies come later)."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.chunks: dict[bytes, bytes] = {}

    def put(self, obj) -> bytes:
        oid, data = encode_with_id(obj)
        self.objects[oid] = data
        return oid

    def file(self, content: bytes) -> tuple[bytes, int]:
        refs = []
        for i in range(0, len(content), 64 * 1024):
            piece = content[i : i + 64 * 1024]
            cid = chunk_id(piece)
            self.chunks[cid] = piece
            refs.append(Ref(len(piece), cid))
        return self.put(FileObject(len(content), DEFAULT_PARAMS, 0, tuple(refs))), len(content)

    def tree(self, entries: list[TreeEntry]) -> bytes:
        return self.put(TreeNode(0, tuple(sorted(entries, key=lambda e: e.name.encode("utf-8")))))

    def version(self, key: Ed25519PrivateKey, name: str, root: bytes, size: int, files: int) -> bytes:
        record = VersionRecord(name, 1, root, (), size, files, public_key_bytes(key), int(time.time()), "hostile")
        return self.put(sign_version(record, key))


def file_entry(store: Store, name: str, content: bytes) -> TreeEntry:
    fid, size = store.file(content)
    return FileEntry(name, size, fid)


def link_entry(name: str, target: str) -> TreeEntry:
    return SymlinkEntry(name, target)


def dir_entry(name: str, tree_id: bytes, size: int) -> TreeEntry:
    return DirEntry(name, size, tree_id)


class Seeder:
    """A trusted peer that dials the daemon, advertises one version and answers GETs by policy."""

    def __init__(
        self,
        daemon: Daemon,
        store: Store,
        name: str,
        version_id: bytes,
        *,
        objects: Callable[[bytes, bytes], bytes | None] = lambda oid, data: data,
        chunks: Callable[[bytes, bytes], bytes | None] = lambda cid, data: data,
        answer_objects: bool = True,
        answer_chunks: bool = True,
        key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.id = peer_id_text(self.key)
        self.store = store
        self.objects_policy = objects
        self.chunks_policy = chunks
        self.answer_objects = answer_objects
        self.answer_chunks = answer_chunks
        self.asked_chunks = threading.Event()
        self.lied_chunks = threading.Event()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        daemon.trust(self.key)
        self.peer = Peer(self.key, daemon.port)
        self.peer.open()
        record = decode(Kind.VERSION, store.objects[version_id], version_id)
        entry = CatalogEntry(name, version_id, record.seq, record.size, record.files, record.time, (version_id,))
        self.peer.conn.send(Catalog((entry,)))
        self.peer.flush()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    event = self.peer.next_event(time.monotonic() + 0.2)
                except TimeoutError:
                    continue
                if isinstance(event, ConnectionClosed):
                    return
                if isinstance(event, MessageReceived):
                    self._answer(event.message)
        except BaseException as e:  # surfaced by the test
            self.errors.append(e)

    def _answer(self, message) -> None:
        if isinstance(message, GetRuns):
            self.asked_chunks.set()
            if self.answer_chunks:
                self._answer_runs(message)
            return
        if isinstance(message, GetObjects):
            if not self.answer_objects:
                return
            table, policy = self.store.objects, self.objects_policy
        elif isinstance(message, GetChunks):
            self.asked_chunks.set()
            if not self.answer_chunks:
                return
            table, policy = self.store.chunks, self.chunks_policy
        else:
            return
        missing = []
        for oid in message.ids:
            data = table.get(oid)
            sent = policy(oid, data) if data is not None else None
            if sent is None:
                missing.append(oid)
                continue
            if sent != data and isinstance(message, GetChunks):
                self.lied_chunks.set()
            self.peer.conn.send(Data(message.req, oid, sent))
        self.peer.conn.send(End(message.req, tuple(missing)))
        self.peer.flush()

    def _answer_runs(self, message: GetRuns) -> None:
        """Each run as the chunk policy has it (a lie in any chunk lies in its run), all in one DATA_RUNS."""
        missing = []
        firsts = []
        data = []
        for run in message.runs:
            held = [self.store.chunks.get(cid) for cid in run.ids]
            sent = [self.chunks_policy(cid, data) if data is not None else None for cid, data in zip(run.ids, held)]
            if any(piece is None for piece in sent):
                missing.append(run.ids[0])
                continue
            if sent != held:
                self.lied_chunks.set()
            firsts.append(run.ids[0])
            data += sent
        if firsts:
            self.peer.conn.send(DataRuns(message.req, tuple(firsts), b"".join(data)))
        self.peer.conn.send(End(message.req, tuple(missing)))
        self.peer.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peer.close()


def wait_offered(daemon: Daemon, name: str, peers: set[str], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remote = daemon.call("ls", {"remote": True})["datasets"]
        if peers <= {d["peer_id"] for d in remote if d["name"] == name}:
            return
        assert time.monotonic() < deadline, f"{name} not offered by {peers}: {remote}"
        time.sleep(0.05)


class Fetch:
    """A `fetch` request on its own control connection, in a thread; closing it cancels the fetch."""

    def __init__(self, daemon: Daemon, name: str, dest: Path, timeout: float) -> None:
        self.result: dict | None = None
        self.error: ShoalError | None = None
        self.client = ControlClient.connect(socket_path(daemon.home), timeout=5)
        self.done = threading.Event()
        params = {"name": name, "dest": str(dest), "timeout": timeout}
        self._thread = threading.Thread(target=self._run, args=(params,), daemon=True)
        self._thread.start()

    def _run(self, params: dict) -> None:
        try:
            self.result = self.client.call("fetch", params)
        except ShoalError as e:
            self.error = e
        except OSError as e:
            self.error = ShoalError(f"control connection: {e}")
        finally:
            self.done.set()

    def wait(self, bound: float) -> bool:
        finished = self.done.wait(bound)
        if not finished:
            self.client.close()  # cancel the fetch in the daemon
            self.done.wait(5)
        else:
            self.client.close()
        return finished


def snapshot(base: Path, dest: Path) -> dict[str, object]:
    """Every path under `base` except DEST's own tree, with what it is; symlinks are not followed."""
    out: dict[str, object] = {}
    for root, dirs, files in os.walk(base, followlinks=False):
        rootp = Path(root)
        if rootp == dest or dest in rootp.parents:
            continue
        for name in dirs + files:
            p = rootp / name
            if p == dest:
                continue
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                out[str(p)] = ("file", p.read_bytes())
            else:
                out[str(p)] = ("dir",)
    return out


def check_dest(dest: Path, expected: dict[str, bytes]) -> None:
    """DEST holds no link out of DEST and no file whose bytes differ from the version's."""
    if not dest.exists():
        return
    real_dest = os.path.realpath(dest)
    for root, dirs, files in os.walk(dest, followlinks=False):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(dest))
            if p.is_symlink():
                target = os.path.realpath(p)
                assert target == real_dest or target.startswith(real_dest + os.sep), (
                    f"DEST holds a symlink {rel} -> {os.readlink(p)} that leaves DEST"
                )
            elif p.is_file() and ".shoal-partial" not in p.parts:
                assert rel in expected, f"DEST holds {rel}, which the version does not"
                assert p.read_bytes() == expected[rel], f"DEST/{rel} has wrong content"


class Scenario:
    """A hostile fetch: one or more seeders, a DEST beside an `outside` folder with a canary."""

    def __init__(self, daemon: Daemon, tmp_path: Path) -> None:
        self.daemon = daemon
        self.base = tmp_path / "area"
        self.dest = self.base / "dest"
        self.outside = self.base / "outside"
        self.outside.mkdir(parents=True)
        (self.outside / "canary.txt").write_text("untouched\n")
        self.before = snapshot(self.base, self.dest)
        self.watch = Watch(daemon)
        self.seeders: list[Seeder] = []

    def seeder(self, *args, **kwargs) -> Seeder:
        seeder = Seeder(self.daemon, *args, **kwargs)
        self.seeders.append(seeder)
        return seeder

    def finish(self, expected: dict[str, bytes]) -> None:
        for s in self.seeders:
            s.stop()
        assert snapshot(self.base, self.dest) == self.before, "something outside DEST changed"
        check_dest(self.dest, expected)
        self.watch.check()
        for s in self.seeders:
            assert not s.errors, s.errors


#: A peer id as shoal writes one, 8 groups of 7: a message names a peer by its trust name instead.
FULL_PEER_ID = re.compile(r"[A-Z2-7]{7}(-[A-Z2-7]{7}){7}")


def fetch_fails(scenario: Scenario, name: str, *, timeout: float = 3, bound: float = 15) -> str:
    fetch = Fetch(scenario.daemon, name, scenario.dest, timeout)
    finished = fetch.wait(bound)
    assert finished, (
        f"fetch of {name} still running after {bound:g}s (fetch timeout {timeout:g}s); "
        f"daemon log:\n{scenario.daemon.log_tail(10)}"
    )
    assert fetch.result is None, f"fetch of a hostile version succeeded: {fetch.result}"
    message = str(fetch.error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert getattr(fetch.error, "code", None) != "internal", (
        f"the daemon hit a bug: {message}\n{scenario.daemon.log_tail(12)}"
    )
    assert not FULL_PEER_ID.search(message), f"a peer is named by its whole id, not its trust name: {message}"
    return message


def _plain_version(store: Store, key: Ed25519PrivateKey, name: str) -> tuple[bytes, dict[str, bytes]]:
    content = {"a.bin": os.urandom(200_000), "sub/b.txt": b"bee\n" * 100}
    sub = store.tree([file_entry(store, "b.txt", content["sub/b.txt"])])
    root = store.tree([
        file_entry(store, "a.bin", content["a.bin"]),
        dir_entry("sub", sub, len(content["sub/b.txt"])),
    ])
    size = sum(map(len, content.values()))
    return store.version(key, name, root, size, 2), content


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def test_objects_whose_bytes_do_not_match_their_id(fetcher: Daemon, tmp_path: Path) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    vid, _ = _plain_version(store, key, "badobj")
    sc.seeder(store, "badobj", vid, objects=lambda oid, data: data if oid == vid else _flip(data))
    message = fetch_fails(sc, "badobj")
    assert "tree" in message or "object" in message, message
    sc.finish({})


def test_lying_object_peer_is_skipped_for_an_honest_one(fetcher: Daemon, tmp_path: Path) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    vid, content = _plain_version(store, key, "mixedobj")
    liar = sc.seeder(store, "mixedobj", vid, objects=lambda oid, data: data if oid == vid else _flip(data))
    wait_offered(fetcher, "mixedobj", {liar.id})
    honest = sc.seeder(store, "mixedobj", vid, key=key)
    wait_offered(fetcher, "mixedobj", {liar.id, honest.id})
    fetch = Fetch(fetcher, "mixedobj", sc.dest, 5)
    assert fetch.wait(20), "fetch did not finish"
    assert fetch.error is None, fetch.error
    check_dest(sc.dest, content)
    placed = {str(p.relative_to(sc.dest)) for p in sc.dest.rglob("*") if p.is_file() and ".shoal-partial" not in p.parts}
    assert placed == set(content)
    sc.finish(content)


BAD_PATHS = {
    "name-dotdot": lambda s: [file_entry(s, "..", b"evil\n")],
    "name-absolute": lambda s: [file_entry(s, "/tmp/shoal-adversarial-evil", b"evil\n")],
    "name-a-dotdot-dotdot": lambda s: [file_entry(s, "a/../..", b"evil\n")],
    "symlink-up-and-out": lambda s: [link_entry("up", "../outside/canary.txt")],
    "symlink-absolute": lambda s: [link_entry("abs", "/etc/passwd")],
    "symlink-a-dotdot-dotdot": lambda s: [link_entry("lnk", "a/../..")],
    "symlink-depth1-climbs-2": lambda s: [
        dir_entry("sub", s.tree([link_entry("up", "../../outside")]), len("../../outside"))
    ],
    "partial-dir-as-symlink": lambda s: [link_entry(".shoal-partial", "../outside"), file_entry(s, "z.bin", b"zz" * 1000)],
    # One subtree, checked where its link stays inside (a/b), then reused where it escapes (c).
    "shared-subtree-shallower": lambda s: _shared_subtree(s),
}


def _shared_subtree(store: Store) -> list[TreeEntry]:
    target = "../../outside"
    inner = store.tree([link_entry("up", target)])
    deep = store.tree([dir_entry("b", inner, len(target))])
    return [dir_entry("a", deep, len(target)), dir_entry("c", inner, len(target))]


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_manifest_with_escaping_paths(fetcher: Daemon, tmp_path: Path, case: str) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    name = f"paths-{case}"
    ok = b"fine\n"
    entries = BAD_PATHS[case](store) + [file_entry(store, "ok.txt", ok)]
    size = sum(e.size for e in entries if e.type != EntryType.DIR) + sum(e.size for e in entries if e.type == EntryType.DIR)
    files = sum(1 for e in entries if e.type == EntryType.FILE)
    vid = store.version(key, name, store.tree(entries), size, files)
    sc.seeder(store, name, vid, key=key)
    message = fetch_fails(sc, name)
    # The user is told why, not that the objects are missing.
    assert "no trusted peer has" not in message, message
    assert any(why in message for why in ("breaks the rules", "symlink", "reserves", "not allowed")), message
    # Whatever did land must be exactly the version's good file.
    sc.finish({"ok.txt": ok})
    assert not os.path.lexists("/tmp/shoal-adversarial-evil")


@pytest.mark.parametrize("bits", [62, 43])
def test_absurd_file_size(fetcher: Daemon, tmp_path: Path, bits: int) -> None:
    """A FILE declaring 2**62 (or 2**43, under ext4's limit) bytes, its two level-0 pages each
    claiming half but holding 6 bytes."""
    sc = Scenario(fetcher, tmp_path)
    name = f"huge{bits}"
    key = Ed25519PrivateKey.generate()
    store = Store()
    pages = []
    for i in range(2):
        piece = f"page{i}\n".encode()
        cid = chunk_id(piece)
        store.chunks[cid] = piece
        pages.append(Ref(2 ** (bits - 1), store.put(ChunkListNode(0, (Ref(len(piece), cid),)))))
    huge = store.put(FileObject(2**bits, DEFAULT_PARAMS, 1, tuple(pages)))
    root = store.tree([FileEntry("huge.bin", 2**bits, huge)])
    vid = store.version(key, name, root, 2**bits, 1)
    sc.seeder(store, name, vid, key=key)
    fetch_fails(sc, name)
    sc.finish({})
    partial = sc.dest / ".shoal-partial"
    if partial.exists():
        sizes = {p.name: p.stat().st_size for p in partial.iterdir() if p.is_file()}
        assert all(s < MB for s in sizes.values()), f"partial files sized from the lie: {sizes}"


@pytest.mark.parametrize("case", ["dir-size", "file-entry-size", "version-counts", "version-files"])
def test_absurd_declared_sizes_and_counts(fetcher: Daemon, tmp_path: Path, case: str) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    body = b"x" * 1000
    name = f"sizes-{case}"
    if case == "dir-size":
        sub = store.tree([file_entry(store, "x", body)])
        root = store.tree([dir_entry("d", sub, 2**62)])
        vid = store.version(key, name, root, 2**62, 1)
    elif case == "file-entry-size":
        fid, _ = store.file(body)
        root = store.tree([FileEntry("x", 2**62, fid)])
        vid = store.version(key, name, root, 2**62, 1)
    elif case == "version-counts":
        root = store.tree([file_entry(store, "x", body)])
        vid = store.version(key, name, root, 1000, 2**62)
    else:
        # A small lie that passes the room check: the data streams while the manifest is
        # walked, and only the walk's end finds it; nothing may be left in DEST.
        sub = store.tree([file_entry(store, "x", body)])
        root = store.tree([dir_entry("d", sub, 1000)])
        vid = store.version(key, name, root, 1000, 2)
    sc.seeder(store, name, vid, key=key)
    fetch_fails(sc, name)
    sc.finish({})
    if sc.dest.exists():
        assert [p.name for p in sc.dest.iterdir() if p.name != ".shoal-partial"] == []


def test_tree_that_references_itself(fetcher: Daemon, tmp_path: Path) -> None:
    """An id cannot hash its own bytes, so a cycle needs a lie: the subdirectory's id is
    answered with the root tree's own bytes."""
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    fake = os.urandom(32)
    root = store.tree([dir_entry("loop", fake, 0)])
    store.objects[fake] = store.objects[root]
    vid = store.version(key, "cycle", root, 0, 0)
    sc.seeder(store, "cycle", vid, key=key)
    fetch_fails(sc, "cycle")
    sc.finish({})


def test_tree_sharing_bomb(fetcher: Daemon, tmp_path: Path) -> None:
    """The hashed stand-in for a cycle: three 1,024-entry trees, each pointing every entry at the
    next, name 1024**3 empty directories in ~120 KB. The fetch must end (fail or finish) within a
    bound instead of walking a billion directories, and the daemon must stay responsive."""
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    tree = store.tree([])
    for _ in range(3):
        tree = store.tree([dir_entry(f"d{i:04}", tree, 0) for i in range(1024)])
    vid = store.version(key, "bomb", tree, 0, 0)
    sc.seeder(store, "bomb", vid, key=key)
    fetch = Fetch(fetcher, "bomb", sc.dest, 3)
    finished = fetch.wait(6)
    fetcher.assert_alive()
    sc.finish({})
    assert finished, "a 4-object version naming 1024**3 directories kept the fetch busy past 6 s"


def _chunk_liar(cid: bytes, data: bytes) -> bytes:
    return bytes(len(data))  # right length, wrong bytes


@pytest.mark.parametrize("lie", ["same-length", "wrong-length"])
def test_wrong_chunks_fail_the_fetch(fetcher: Daemon, tmp_path: Path, lie: str) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    name = f"chunks-{lie}"
    vid, content = _plain_version(store, key, name)
    policy = _chunk_liar if lie == "same-length" else (lambda cid, data: os.urandom(len(data) + 1))
    sc.seeder(store, name, vid, key=key, chunks=policy)
    message = fetch_fails(sc, name, timeout=2)
    # The peer, and what it did.
    assert "peer" in message, message
    assert ("runs of" if lie == "wrong-length" else "do not match their ids") in message, message
    # A file whose chunks the daemon already held may land, with its right bytes.
    sc.finish(content)


def test_wrong_chunks_then_honest_peer_completes(fetcher: Daemon, tmp_path: Path) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    vid, content = _plain_version(store, key, "chunkmix")
    liar = sc.seeder(store, "chunkmix", vid, chunks=_chunk_liar)
    wait_offered(fetcher, "chunkmix", {liar.id})
    fetch = Fetch(fetcher, "chunkmix", sc.dest, 10)
    assert liar.lied_chunks.wait(10), "the liar was never asked for chunks"
    sc.seeder(store, "chunkmix", vid, key=key)
    assert fetch.wait(20), "fetch did not finish"
    assert fetch.error is None, fetch.error
    # Trusted without a name, the liar is named by its short id, as `shoal peers` shows it.
    short = PeerId.parse(liar.id).short()
    assert fetch.result["warnings"] == [f"dropped peer {short}: sent chunks whose bytes do not match their ids"]
    check_dest(sc.dest, content)
    sc.finish(content)


def test_peer_that_never_answers(fetcher: Daemon, tmp_path: Path) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    vid, _ = _plain_version(store, key, "silent")
    sc.seeder(store, "silent", vid, key=key, answer_objects=False, answer_chunks=False)
    start = time.monotonic()
    message = fetch_fails(sc, "silent", timeout=2, bound=8)
    assert time.monotonic() - start < 8
    assert "silent" in message, message
    sc.finish({})


def test_peer_that_serves_the_manifest_but_never_the_chunks(fetcher: Daemon, tmp_path: Path) -> None:
    sc = Scenario(fetcher, tmp_path)
    key = Ed25519PrivateKey.generate()
    store = Store()
    vid, content = _plain_version(store, key, "stall")
    seeder = sc.seeder(store, "stall", vid, key=key, answer_chunks=False)
    fetch = Fetch(fetcher, "stall", sc.dest, 2)
    assert seeder.asked_chunks.wait(10)
    finished = fetch.wait(6)
    sc.finish(content)  # a file the daemon already held the chunks of may land, with its right bytes
    assert finished, "a peer that never answers GET_CHUNKS kept the fetch waiting past 3x its timeout"
