"""The asyncio control client against a tiny in-test control server on a real Unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal.client.aio import Connected, ControlClient, Disconnected
from shoal.errors import DaemonError, DaemonNotRunning
from shoal.protocol.control import ErrorReply, Event, MessageDecoder, Progress, Request, Response, encode_message

pytestmark = pytest.mark.asyncio


class MiniDaemon:
    """Answers subscribe, `id` (with one progress message) and refuses everything else."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    def publish(self, topic: str, data: dict) -> None:
        for writer in self.writers:
            writer.write(encode_message(Event(topic, data)))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        decoder = MessageDecoder()
        while data := await reader.read(65536):
            decoder.feed(data)
            while (request := decoder.next_message()) is not None:
                assert isinstance(request, Request)
                if request.method == "subscribe":
                    assert request.params == {}
                    writer.write(encode_message(Response(request.id, {"topics": ["datasets", "peers"]})))
                elif request.method == "id":
                    writer.write(encode_message(Progress(request.id, {"step": 1})))
                    writer.write(encode_message(Response(request.id, {"peer_id": "ABCDE"})))
                else:
                    writer.write(encode_message(ErrorReply(request.id, "unknown-method", "no such method", 1)))


async def test_connects_calls_streams_events_and_reconnects(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    client = ControlClient(path, min_backoff=0.01, max_backoff=0.05)
    signals = client.signals()

    down = await asyncio.wait_for(anext(signals), 2)
    assert isinstance(down, Disconnected) and down.retry_in == 0.01
    with pytest.raises(DaemonNotRunning):
        await client.call("id")

    daemon = MiniDaemon(path)
    await daemon.start()
    while not isinstance(signal := await asyncio.wait_for(anext(signals), 2), Connected):
        assert isinstance(signal, Disconnected)
    progress: list[dict] = []
    assert await client.call("id", on_progress=progress.append) == {"peer_id": "ABCDE"}
    assert progress == [{"step": 1}]
    with pytest.raises(DaemonError) as refused:
        await client.call("nope")
    assert refused.value.code == "unknown-method"

    daemon.publish("peers", {"change": "online"})
    assert await asyncio.wait_for(anext(signals), 2) == Event("peers", {"change": "online"})

    await daemon.stop()
    lost = await asyncio.wait_for(anext(signals), 2)
    assert isinstance(lost, Disconnected) and lost.retry_in == 0.0
    await daemon.start()
    while not isinstance(signal := await asyncio.wait_for(anext(signals), 2), Connected):
        assert isinstance(signal, Disconnected)
    assert await client.call("id") == {"peer_id": "ABCDE"}
    await signals.aclose()
    await daemon.stop()
