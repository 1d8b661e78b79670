"""The control server over real Unix sockets, driven by the real blocking client and raw streams."""

import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import pytest
import trio

from shoal.client.blocking import ControlClient
from shoal.daemon.config import load_config
from shoal.daemon.control.api import datasets as datasets_api
from shoal.daemon.control.api import method_table
from shoal.daemon.control.events import Events
from shoal.daemon.control.server import ControlServer
from shoal.daemon.service import serve
from shoal.errors import DaemonAlreadyRunning, DaemonError, DaemonNotRunning, ShoalError, UnknownDataset
from shoal.protocol.control import ErrorReply, Event, MessageDecoder, Request, Response, encode_message
from shoal.protocol.errors import LocalProtocolError
from shoal.protocol.format.identity import PeerId

pytestmark = pytest.mark.trio

TOPICS = ("news", "other")


@pytest.fixture
def home():
    # Under /tmp, not pytest's tmp_path: Unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="shoal-ctl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Handlers:
    """A few handlers with observable side effects."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.slow_started = trio.Event()
        self.release = trio.Event()
        self.cancelled = trio.Event()

    async def echo(self, params, progress):
        self.calls.append("echo")
        return {"got": params}

    async def counted(self, params, progress):
        for n in range(3):
            await progress({"n": n})
        return {"done": True}

    async def missing(self, params, progress):
        raise UnknownDataset("no dataset named 'x'; list them with `shoal ls`")

    async def grouped(self, params, progress):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.missing, params, progress)
        return {}

    async def coded(self, params, progress):
        error = ShoalError("no peer has it; try later")
        error.code = "no-peer"
        error.exit_code = 6
        raise error

    async def broken(self, params, progress):
        return {"value": 1 / 0}

    async def unencodable(self, params, progress):
        return {"path": Path("/x")}

    async def slow(self, params, progress):
        self.slow_started.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return {"slow": True}


@pytest.fixture
async def served(home):
    handlers = Handlers()
    names = ("echo", "counted", "missing", "grouped", "coded", "broken", "unencodable", "slow")
    server = ControlServer(
        home / "control.sock", {name: getattr(handlers, name) for name in names}, events=Events(TOPICS)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server, handlers
        nursery.cancel_scope.cancel()


async def call(path: Path, method: str, params=None, **kwargs):
    def blocking():
        with ControlClient.connect(path) as client:
            return client.call(method, params, timeout=10, **kwargs)

    return await trio.to_thread.run_sync(blocking)


async def read_message(stream: trio.SocketStream, decoder: MessageDecoder):
    while (message := decoder.next_message()) is None:
        data = await stream.receive_some(65536)
        if not data:
            return None
        decoder.feed(data)
    return message


async def test_call_returns_the_handler_result(served):
    server, _ = served
    assert await call(server.path, "echo", {"a": [1, "b"]}) == {"got": {"a": [1, "b"]}}


async def test_progress_arrives_before_the_result(served):
    server, _ = served
    seen = []
    result = await call(server.path, "counted", on_progress=seen.append)
    assert seen == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert result == {"done": True}


async def test_shoal_errors_become_error_replies_with_stable_codes(served):
    server, _ = served
    with pytest.raises(DaemonError) as caught:
        await call(server.path, "missing")
    assert (caught.value.code, caught.value.exit_code) == ("not-found", 4)
    assert str(caught.value) == "no dataset named 'x'; list them with `shoal ls`"
    with pytest.raises(DaemonError) as grouped:
        await call(server.path, "grouped")
    assert grouped.value.code == "not-found"
    with pytest.raises(DaemonError) as coded:
        await call(server.path, "coded")
    assert (coded.value.code, coded.value.exit_code) == ("no-peer", 6)


@pytest.mark.parametrize("method", ["broken", "unencodable"])
async def test_a_failing_handler_is_an_internal_error_and_the_server_survives(served, caplog, method):
    server, _ = served
    caplog.set_level(logging.ERROR, logger="shoal.daemon.control.server")
    with pytest.raises(DaemonError) as caught:
        await call(server.path, method)
    assert caught.value.code == "internal"
    assert caught.value.exit_code == 1
    assert any(record.exc_info for record in caplog.records), "the traceback must be logged"
    assert await call(server.path, "echo") == {"got": {}}


async def test_unknown_methods_are_refused_by_name(served):
    server, _ = served
    with pytest.raises(DaemonError) as caught:
        await call(server.path, "fetch")
    assert caught.value.code == "unknown-method"
    assert "'fetch'" in str(caught.value)


async def test_requests_on_one_connection_run_concurrently(served):
    server, handlers = served
    stream = await trio.open_unix_socket(str(server.path))
    decoder = MessageDecoder()
    async with stream:
        await stream.send_all(encode_message(Request(1, "slow", {})))
        await handlers.slow_started.wait()
        await stream.send_all(encode_message(Request(2, "echo", {"x": 1})))
        with trio.fail_after(5):
            assert await read_message(stream, decoder) == Response(2, {"got": {"x": 1}})
        handlers.release.set()
        with trio.fail_after(5):
            assert await read_message(stream, decoder) == Response(1, {"slow": True})


async def test_closing_the_connection_cancels_its_running_requests(served):
    server, handlers = served
    stream = await trio.open_unix_socket(str(server.path))
    await stream.send_all(encode_message(Request(1, "slow", {})))
    await handlers.slow_started.wait()
    await stream.aclose()
    with trio.fail_after(5):
        await handlers.cancelled.wait()


async def test_socket_is_0600_and_its_directory_0700(home):
    home.chmod(0o755)
    server = ControlServer(home / "control.sock", {})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        nursery.cancel_scope.cancel()
    assert not server.path.exists(), "the socket file is removed on the way out"


async def test_a_connection_from_another_uid_is_refused(home):
    handlers = Handlers()
    server = ControlServer(home / "control.sock", {"echo": handlers.echo}, allowed_uid=os.getuid() + 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        with pytest.raises(DaemonError) as caught:
            await call(server.path, "echo")
        nursery.cancel_scope.cancel()
    assert caught.value.code == "permission-denied"
    assert handlers.calls == []


PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
except BrokenPipeError:  # refused before our request went out
    pass
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except ConnectionResetError:  # the server closed with our request unread
    pass
print(data.hex())
"""


@pytest.mark.skipif(os.getuid() != 0 or not Path("/usr/bin/python3").exists(), reason="needs root to act as nobody")
async def test_a_real_other_user_is_refused_even_through_open_permissions(home):
    handlers = Handlers()
    server = ControlServer(home / "control.sock", {"echo": handlers.echo})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        # Loosen what the server set up, so only the SO_PEERCRED check stands in the way.
        home.chmod(0o755)
        server.path.chmod(0o666)
        request = encode_message(Request(1, "echo", {})).hex()
        probe = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                ["/usr/bin/python3", "-c", PROBE, str(server.path), request],
                user=65534,
                capture_output=True,
                text=True,
                timeout=20,
                cwd="/",
            )
        )
        nursery.cancel_scope.cancel()
    assert probe.returncode == 0, probe.stderr
    decoder = MessageDecoder()
    decoder.feed(bytes.fromhex(probe.stdout.strip()))
    reply = decoder.next_message()
    assert isinstance(reply, ErrorReply) and reply.code == "permission-denied"
    assert handlers.calls == []


async def test_events_reach_only_subscribers_of_their_topic(served):
    server, _ = served
    news = ControlClient.connect(server.path)
    other = ControlClient.connect(server.path)
    with news, other:
        assert await trio.to_thread.run_sync(news.subscribe, ["news"]) == ["news"]
        assert await trio.to_thread.run_sync(other.subscribe) == ["news", "other"]
        server.events.publish("news", {"n": 1})
        server.events.publish("other", {"n": 2})
        got_news = await trio.to_thread.run_sync(lambda: list(news.events(timeout=0.5)))
        got_other = await trio.to_thread.run_sync(lambda: list(other.events(timeout=0.5)))
    assert got_news == [Event("news", {"n": 1}, 1)]
    assert got_other == [Event("news", {"n": 1}, 1), Event("other", {"n": 2}, 2)]


async def test_subscribing_to_an_unknown_topic_is_a_usage_error(served):
    server, _ = served
    with pytest.raises(DaemonError) as caught:
        await call(server.path, "subscribe", {"topics": ["news", "gossip"]})
    assert caught.value.code == "usage"
    assert "gossip" in str(caught.value)


async def test_a_slow_subscriber_is_dropped_and_never_blocks_the_others(home):
    server = ControlServer(home / "control.sock", {}, events=Events(TOPICS, buffer=8))
    payload = "x" * 32768
    count = 200
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        stuck = await trio.open_unix_socket(str(server.path))
        await stuck.send_all(encode_message(Request(1, "subscribe", {"topics": ["news"]})))
        assert isinstance(await read_message(stuck, MessageDecoder()), Response)
        fast = ControlClient.connect(server.path)
        await trio.to_thread.run_sync(fast.subscribe, ["news"])
        assert server.events.subscriber_count == 2

        received: list[int] = []

        def drain() -> None:
            for event in fast.events(timeout=5):
                received.append(event.data["n"])
                if len(received) == count:
                    return

        async with trio.open_nursery() as readers:
            readers.start_soon(trio.to_thread.run_sync, drain)
            for n in range(count):
                server.events.publish("news", {"n": n, "pad": payload})
                await trio.sleep(0.001)
        assert received == list(range(count))
        assert server.events.subscriber_count == 1, "the stuck subscriber was dropped, the reading one kept"
        fast.close()
        with trio.fail_after(5):
            while True:
                data = await stuck.receive_some(1 << 20)
                if not data:
                    break
        nursery.cancel_scope.cancel()


async def test_a_malformed_frame_gets_a_connection_error_and_a_close(served):
    server, _ = served
    stream = await trio.open_unix_socket(str(server.path))
    decoder = MessageDecoder()
    async with stream:
        await stream.send_all(b"\x00\x00\x00\x03\xc1\xc1\xc1")
        with trio.fail_after(5):
            reply = await read_message(stream, decoder)
            assert isinstance(reply, ErrorReply) and reply.id == 0 and reply.code == "bad-message"
            assert await read_message(stream, decoder) is None
    assert await call(server.path, "echo") == {"got": {}}


async def test_stop_lets_running_requests_finish_and_refuses_new_connections(served):
    server, handlers = served
    async with trio.open_nursery() as nursery:
        result = {}

        async def slow_call():
            result["value"] = await call(server.path, "slow")

        nursery.start_soon(slow_call)
        await handlers.slow_started.wait()
        stopped = trio.Event()

        async def stop():
            await server.stop(grace=10)
            stopped.set()

        nursery.start_soon(stop)
        await trio.sleep(0.05)
        with pytest.raises(DaemonNotRunning):
            await call(server.path, "echo")
        assert not stopped.is_set()
        handlers.release.set()
    assert result["value"] == {"slow": True}
    with trio.fail_after(5):
        await stopped.wait()


async def test_stop_cancels_requests_still_running_after_the_grace(served):
    server, handlers = served
    async with trio.open_nursery() as nursery:
        outcome = {}

        async def slow_call():
            with pytest.raises(DaemonNotRunning) as caught:
                await call(server.path, "slow")
            outcome["error"] = caught.value

        nursery.start_soon(slow_call)
        await handlers.slow_started.wait()
        with trio.fail_after(5):
            await server.stop(grace=0.1)
    assert handlers.cancelled.is_set()
    assert "closed the connection" in str(outcome["error"])


async def test_a_stale_socket_file_is_replaced_but_a_live_one_is_not(home):
    path = home / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    first = ControlServer(path, {"ping": lambda params, progress: _pong()})
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve)
        assert await call(path, "ping") == {"pong": True}
        with pytest.raises(DaemonAlreadyRunning):
            await ControlServer(path, {}).serve()
        assert await call(path, "ping") == {"pong": True}
        nursery.cancel_scope.cancel()


async def _pong():
    return {"pong": True}


async def test_the_daemon_publishes_what_changes_and_stops_on_request(home, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_api, "PROGRESS_INTERVAL", 0.01)
    (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n')
    data = tmp_path / "data"
    data.mkdir()
    # Several hashing batches, so progress is reported between two of them.
    for n in range(2500):
        (data / f"{n:04}.bin").write_bytes(os.urandom(2000))
    peer_id = str(PeerId.from_public_key(os.urandom(32)))
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, home, load_config(home), listen=None, discovery=False))
        watcher = ControlClient.connect(handle.socket)
        await trio.to_thread.run_sync(watcher.subscribe)
        progress: list[dict] = []
        shared = await call(handle.socket, "share", {"path": str(data), "message": "m"}, on_progress=progress.append)
        await call(handle.socket, "trust", {"peer_id": peer_id, "name": "bob"})
        (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n[retention]\nmax_versions = 2\n')
        reloaded = await call(handle.socket, "config.reload")
        assert await call(handle.socket, "shutdown") == {"stopping": True, "pid": os.getpid()}
        events: list[Event] = []

        def collect() -> None:
            with pytest.raises(DaemonNotRunning):
                events.extend(watcher.events(timeout=5))

        await trio.to_thread.run_sync(collect)
        watcher.close()
    assert shared["created"] and shared["version"]["files"] == 2500
    assert progress and progress[-1]["files_done"] > 0 and set(progress[-1]) >= {"bytes_done", "files_total", "path"}
    assert reloaded["changed"] == ["retention.max_versions"] and reloaded["restart_required"] == []
    assert [event.topic for event in events] == ["datasets", "peers", "config", "daemon"]
    assert events[0].data["version"] == shared["version"]
    assert events[1].data["change"] == "trusted" and events[1].data["peer"]["name"] == "bob"
    assert events[3].data == {"state": "stopping"}
    assert not handle.socket.exists()


#: Every method the daemon serves besides `subscribe` (SPEC.md, "Control socket").
DAEMON_METHODS = (
    "id", "status", "shutdown", "config.reload", "gc",
    "share", "unshare", "audience", "subset", "verify",
    "ls", "log", "diff",
    "peers", "trust", "untrust",
    "fetch", "browse", "resolve", "transfer.cancel", "transfer.pause", "transfer.resume",
    "watch", "unwatch", "watches", "subscription.add", "subscription.remove", "subscription.list",
)


async def test_the_daemon_routes_every_method_to_a_handler_that_checks_its_params(home):
    (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n')
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, home, load_config(home), listen=None, discovery=False))
        for method in DAEMON_METHODS:
            # Every handler checks its params first, so this touches no state.
            with pytest.raises(ShoalError, match="unknown parameters bogus") as caught:
                await call(handle.socket, method, {"bogus": 1})
            assert caught.value.exit_code == 2, method
        with pytest.raises(DaemonError) as caught:
            await call(handle.socket, "no.such.method")
        assert caught.value.code == "unknown-method"
        handle.shutdown()


async def test_subscribe_and_a_method_claimed_by_two_areas_are_refused_at_build_time(home):
    with pytest.raises(LocalProtocolError):
        ControlServer(home / "control.sock", {"subscribe": Handlers().echo})

    class Area:
        def methods(self):
            return {"echo": Handlers().echo}

    with pytest.raises(ValueError, match="'echo' is defined twice"):
        method_table(Area(), Area())
