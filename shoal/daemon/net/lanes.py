"""Opening a lane: one more connection to a peer beside the daemon's session with it.

A fetch worker process has no PeerManager: it dials the peer itself with the
daemon's identity key and asks for objects and runs over a lane of its own
(SPEC "Lanes"), with its own handshake and cipher state. The peer serves a
lane only while the daemon's main session with it is open.
"""

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.net.peers import DIAL_TIMEOUT, split_address
from shoal.daemon.net.session import HANDSHAKE_TIMEOUT, PeerSession, Rejected, establish
from shoal.daemon.store.index import Index
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.identity import PeerId
from shoal.protocol.wire.channel import Role


async def open_lane(
    nursery: trio.Nursery,
    key: Ed25519PrivateKey,
    address: str,
    peer_id: str,
    lane: int,
    index: Index,
    name: str | None = None,
) -> PeerSession:
    """Open lane `lane` (1..MAX_LANE) to `peer_id` at `address` ("host:port") and run it in
    `nursery`; the session returned is ready for get_objects, get_runs and get_chunks, and
    serves `index` should the peer ask it for anything.

    Raises OSError when the peer cannot be reached, Rejected when the key at `address` is
    not `peer_id`, ProtocolError when the peer refuses the lane (its code says why:
    `no-session`, `duplicate-session`, …) and trio.TooSlowError when the handshake takes
    too long: the types the daemon's dialler handles, each naming the peer and the lane.
    """
    what = f"lane {lane} to {name or PeerId.parse(peer_id).short()} at {address}"
    stream = await _connect(address, what)
    try:
        conn, peer = await establish(
            stream, Role.INITIATOR, key, lambda p: str(p) == peer_id, listen_port=None, expected=peer_id, lane=lane
        )
    except (OSError, ProtocolError, Rejected, trio.TooSlowError, trio.BrokenResourceError) as e:
        await trio.aclose_forcefully(stream)
        raise _named(e, what) from e
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    # No caps of its own: the peer's caps, shared by its session and lanes, pace what it sends.
    session = PeerSession(conn, stream, peer, address, index, on_catalog=lambda s: None, name=name)
    nursery.start_soon(session.run)
    return session


async def _connect(address: str, what: str) -> trio.SocketStream:
    host, port = split_address(address)
    try:
        with trio.fail_after(DIAL_TIMEOUT):
            return await trio.open_tcp_stream(host, port)
    except OSError as e:
        raise _named(e, what) from e
    except trio.TooSlowError:
        raise trio.TooSlowError(f"{what}: no answer within {DIAL_TIMEOUT:g}s") from None


def _named(error: Exception, what: str) -> Exception:
    """`error` as the same type (the ones a dialler handles), its message naming the lane."""
    if isinstance(error, ProtocolError):
        return ProtocolError(f"{what}: {error}", code=error.code)
    if isinstance(error, Rejected):
        return Rejected(f"{what}: the key there is {error}")
    if isinstance(error, trio.TooSlowError):
        return trio.TooSlowError(f"{what}: the handshake took over {HANDSHAKE_TIMEOUT:g}s")
    if isinstance(error, OSError):
        return OSError(error.errno, f"{what}: {error.strerror}") if error.strerror else OSError(f"{what}: {error}")
    return trio.BrokenResourceError(f"{what}: the connection broke during the handshake: {error}")
