"""The puller asks for the next batch while the writer still writes the one before, and no further."""

import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from shoal.daemon.fetch import puller as puller_mod
from shoal.daemon.fetch.puller import Arrival, Puller
from shoal.daemon.fetch.schedule import Batch
from shoal.daemon.fetch.state import FetchSpec, Transfer
from shoal.protocol.wire.messages import Run

pytestmark = pytest.mark.trio


class OneRunPeer:
    """Answers each request at once with the bytes of its runs."""

    peer_id = "peer"
    peer_cap = 0

    def __init__(self, log: list[str]) -> None:
        self.bytes_in = 0
        self.log = log

    async def get_runs(self, runs: Sequence[Run], deliver: Callable[[bytes, bytes | memoryview], None]) -> list[bytes]:
        for run in runs:
            self.log.append(f"asked {run.ids[0][0]}")
            self.bytes_in += run.total
            deliver(run.ids[0], bytes(run.total))
        await trio.lowlevel.checkpoint()
        return []


def batch_of(n: int) -> Batch[Any]:
    batch: Batch[Any] = Batch()
    batch.add_run(Run((bytes([n]) * 32,), (100,)), ("file", 0))
    return batch


async def test_the_next_batch_is_asked_for_while_the_last_is_written_and_no_further(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One request open at a time, so that only settling beside it can overlap the writer.
    monkeypatch.setattr(puller_mod, "WINDOW_PER_PEER", 1)
    log: list[str] = []
    peer = OneRunPeer(log)
    spec = FetchSpec("data", None, tmp_path)
    job = SimpleNamespace(spec=spec, transfer=Transfer(spec), name_of=str)
    arrivals_out, arrivals_in = trio.open_memory_channel[Arrival](math.inf)
    batches_out, batches_in = trio.open_memory_channel[Batch[Any]](math.inf)
    puller = Puller(job, lambda: [peer], trio.sleep_forever, arrivals_out)  # type: ignore[arg-type]
    release_first = trio.Event()

    async def writer() -> None:
        async with arrivals_in:
            async for arrival in arrivals_in:
                if arrival.cid[0] == 1:
                    await release_first.wait()
                log.append(f"wrote {arrival.cid[0]}")
                puller.written([arrival], [True])

    async def watch() -> None:
        # Batch 1 stays unwritten until batch 2 has been asked for; batch 3 waits for batch 1.
        while "asked 2" not in log:
            await trio.sleep(0.01)
        await trio.sleep(0.2)
        assert "asked 3" not in log
        release_first.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(watch)
            for n in (1, 2, 3):
                batches_out.send_nowait(batch_of(n))
            batches_out.close()
            await puller.run(batches_in)

    assert log.index("asked 2") < log.index("wrote 1") < log.index("asked 3")
    assert sorted(entry for entry in log if entry.startswith("wrote")) == ["wrote 1", "wrote 2", "wrote 3"]
    assert puller.schedule.finished


async def test_a_request_is_cancelled_once_its_peer_has_sent_too_little_for_the_timeout() -> None:
    def open_request(source: SimpleNamespace) -> Any:
        return puller_mod._Open(trio.CancelScope(), source, source.bytes_in, 0.0)  # type: ignore[arg-type]

    # Over 3 s one peer sends more than SILENT_BYTES, the other less.
    enough, trickle = SimpleNamespace(bytes_in=0), SimpleNamespace(bytes_in=0)
    busy, slow = open_request(enough), open_request(trickle)
    cancelled_at = {}
    for second in range(1, 10):
        if second <= 6:
            enough.bytes_in += puller_mod.SILENT_BYTES * 3 // 8
        trickle.bytes_in += puller_mod.SILENT_BYTES // 4
        puller_mod.cancel_silent([busy, slow], float(second), 3.0)
        for name, request in (("busy", busy), ("slow", slow)):
            if request.scope.cancel_called:
                cancelled_at.setdefault(name, second)
    # The busy peer went quiet after 6 s, when it was last heard from in full.
    assert cancelled_at == {"slow": 3, "busy": 9}
