"""The control socket: a trio Unix-socket server that local clients drive the daemon through.

Only the daemon's own user may connect: the home is 0700, the socket 0600, and each
connection's uid is checked with SO_PEERCRED where the platform has it. Each client
gets its own task; requests on one connection run concurrently, and closing the
connection cancels the requests still running on it. A failing handler answers an
error reply and never takes the daemon down.
"""

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from shoal.daemon.control.events import Events, Subscription
from shoal.errors import DaemonAlreadyRunning, ShoalError, single_exception
from shoal.home import ensure_home
from shoal.protocol.control import (
    CONNECTION_ID,
    ErrorReply,
    ExitCode,
    MessageDecoder,
    Progress,
    Request,
    Response,
    classify_error,
    encode_message,
)
from shoal.protocol.errors import LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], ProgressFn], Awaitable[dict[str, Any]]]

SUBSCRIBE = "subscribe"
#: Requests one client may have running at once; further ones wait to be read.
MAX_INFLIGHT_PER_CONNECTION = 32
RECEIVE_SIZE = 65536


def error_reply(request_id: int, exc: ShoalError) -> ErrorReply:
    """The reply that reports a deliberate error to the client."""
    code, exit_code = classify_error(exc)
    return ErrorReply(request_id, code, str(exc) or type(exc).__name__, exit_code)


def peer_uid(sock: trio.socket.SocketType) -> int | None:
    """The uid of the process at the other end, or None where SO_PEERCRED does not exist."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ControlServer:
    """Serves `methods` and the built-in `subscribe` (to `events`) on one Unix socket."""

    def __init__(
        self,
        path: Path,
        methods: Mapping[str, Handler],
        *,
        events: Events | None = None,
        allowed_uid: int | None = None,
    ) -> None:
        if SUBSCRIBE in methods:
            raise LocalProtocolError(f"control method {SUBSCRIBE!r} is built in")
        self.path = path
        self.events = events if events is not None else Events()
        self._allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._handlers = dict(methods)
        self._closing = False
        self._inflight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._nursery: trio.Nursery | None = None
        self._accepting = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled or `stop`ped; the socket file is removed on the way out."""
        listener = await self._listen()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def stop(self, grace: float) -> None:
        """Stop accepting; within `grace` seconds let running requests finish and queued events go out; close."""
        self._closing = True
        self._accepting.cancel()
        with trio.move_on_after(grace):
            while self._inflight:
                await self._idle.wait()
            await self.events.flush()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _listen(self) -> trio.SocketListener:
        ensure_home(self.path.parent)
        await self._remove_stale_socket()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(self.path))
            # The 0700 home keeps other users out until this chmod lands.
            os.chmod(self.path, 0o600)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        if getattr(socket, "SO_PEERCRED", None) is None:
            log.warning("SO_PEERCRED is unavailable; only file permissions guard %s", self.path)
        return trio.SocketListener(sock)

    async def _remove_stale_socket(self) -> None:
        if not self.path.exists():
            return
        probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with probe:
            try:
                await probe.connect(str(self.path))
            except OSError:
                log.info("removing stale control socket %s", self.path)
                self.path.unlink(missing_ok=True)
                return
        raise DaemonAlreadyRunning(f"another daemon answers on {self.path}; stop it with `shoal daemon stop`")

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        with self._accepting:
            async with listener:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        # Out of file descriptors and the like: back off instead of spinning.
                        log.error("control socket accept failed: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        connection = _Connection(self, stream)
        try:
            async with stream:
                if self._refuse(stream):
                    await connection.refuse()
                    return
                await connection.run()
        except Exception:
            log.exception("control connection failed")
        finally:
            if connection.subscription is not None:
                self.events.remove(connection.subscription)

    def _refuse(self, stream: trio.SocketStream) -> bool:
        uid = peer_uid(stream.socket)
        if uid is None or uid == self._allowed_uid:
            return False
        log.warning("refused a control connection from uid %d", uid)
        return True

    def _request_started(self) -> None:
        if self._inflight == 0:
            self._idle = trio.Event()
        self._inflight += 1

    def _request_finished(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _dispatch(self, request: Request, progress: ProgressFn) -> bytes:
        """Run the handler and return the encoded final reply."""
        handler = self._handlers.get(request.method)
        if self._closing:
            message = "the daemon is shutting down; retry once it is back"
            return encode_message(ErrorReply(request.id, "shutting-down", message, int(ExitCode.UNREACHABLE)))
        if handler is None:
            return encode_message(
                ErrorReply(
                    request.id,
                    "unknown-method",
                    f"this daemon has no {request.method!r} method; upgrade shoal and restart the daemon",
                    int(ExitCode.ERROR),
                )
            )
        try:
            result = await handler(request.params, progress)
            if not isinstance(result, dict):
                raise TypeError(f"handler returned {type(result).__name__}, not a dict")
            return encode_message(Response(request.id, result))
        except Exception as exc:
            return self._failure(request, single_exception(exc))

    def _failure(self, request: Request, exc: BaseException) -> bytes:
        if isinstance(exc, ShoalError) and not isinstance(exc, LocalProtocolError):
            return encode_message(error_reply(request.id, exc))
        log.error("control method %r failed", request.method, exc_info=exc)
        message = f"internal error in {request.method!r} ({type(exc).__name__}); the daemon's log has the details"
        return encode_message(ErrorReply(request.id, "internal", message, int(ExitCode.ERROR)))


class _Connection:
    """One client: reads requests, runs each in its own task, writes replies in order of completion."""

    def __init__(self, server: ControlServer, stream: trio.SocketStream) -> None:
        self._server = server
        self._stream = stream
        self._send_lock = trio.Lock()
        self._slots = trio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        self._inflight_ids: set[int] = set()
        self._scope = trio.CancelScope()
        self.subscription: Subscription | None = None

    def close(self) -> None:
        """Abandon this client: its running requests are cancelled and the socket closed."""
        self._scope.cancel()

    async def refuse(self) -> None:
        message = "this daemon belongs to another user"
        reply = ErrorReply(CONNECTION_ID, "permission-denied", message, int(ExitCode.UNREACHABLE))
        with trio.move_on_after(1):
            await self._send(encode_message(reply))

    async def run(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                await self._read_requests(nursery)
                nursery.cancel_scope.cancel()

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        decoder = MessageDecoder()
        while True:
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            decoder.feed(data)
            try:
                while (message := decoder.next_message()) is not None:
                    await self._start(message, nursery)
            except RemoteProtocolError as exc:
                reply = ErrorReply(CONNECTION_ID, exc.code, f"bad control message: {exc}", int(ExitCode.ERROR))
                await self._send(encode_message(reply))
                return

    async def _start(self, message: object, nursery: trio.Nursery) -> None:
        if not isinstance(message, Request):
            raise RemoteProtocolError(f"clients send requests, not {type(message).__name__}", code="bad-message")
        if message.id in self._inflight_ids:
            raise RemoteProtocolError(f"request id {message.id} is already in use", code="bad-message")
        await self._slots.acquire()
        self._inflight_ids.add(message.id)
        self._server._request_started()
        nursery.start_soon(self._answer, message, nursery)

    async def _answer(self, request: Request, nursery: trio.Nursery) -> None:
        try:
            if request.method == SUBSCRIBE:
                await self._subscribe(request, nursery)
            else:
                await self._send(await self._server._dispatch(request, self._progress_sender(request.id)))
        finally:
            self._slots.release()
            self._inflight_ids.discard(request.id)
            self._server._request_finished()

    def _progress_sender(self, request_id: int) -> ProgressFn:
        async def progress(data: dict[str, Any]) -> None:
            await self._send(encode_message(Progress(request_id, data)))

        return progress

    async def _subscribe(self, request: Request, nursery: trio.Nursery) -> None:
        events = self._server.events
        known = events.topics
        topics = request.params.get("topics", sorted(known))
        valid = isinstance(topics, list) and all(isinstance(topic, str) and topic in known for topic in topics)
        if not valid:
            message = f"cannot subscribe to {topics!r}; known topics: {', '.join(sorted(known))}"
            await self._send(encode_message(ErrorReply(request.id, "usage", message, int(ExitCode.USAGE))))
            return
        if self.subscription is not None:
            self.subscription.topics = frozenset(topics)
            await self._send(encode_message(Response(request.id, {"topics": sorted(topics)})))
            return
        send, receive = trio.open_memory_channel[bytes](events.buffer)
        self.subscription = Subscription(frozenset(topics), send, self.close)
        # Registered before the reply so no event published in between is lost.
        events.add(self.subscription)
        await self._send(encode_message(Response(request.id, {"topics": sorted(topics)})))
        nursery.start_soon(self._forward_events, receive, self.subscription.flushed)

    async def _forward_events(self, receive: trio.MemoryReceiveChannel[bytes], flushed: trio.Event) -> None:
        try:
            async with receive:
                async for frame in receive:
                    await self._send(frame)
        finally:
            flushed.set()

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close()
