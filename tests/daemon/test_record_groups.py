"""Installed files are recorded many to a transaction: what the finisher sends within a moment goes together."""

from pathlib import Path

import pytest
import trio

from shoal.daemon.fetch import record
from shoal.daemon.fetch.record import Installed, record_stage

pytestmark = pytest.mark.trio


class FakeJob:
    index = None
    dest = Path("/dest")


async def test_groups_sent_close_together_are_recorded_together_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "RECORD_FILES", 5)
    calls: list[list[int]] = []
    monkeypatch.setattr(record, "record_installed", lambda index, dest, group: calls.append([n for n, _ in group]))
    send, receive = trio.open_memory_channel[list[Installed]](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_stage, FakeJob(), receive)
        async with send:
            for group in ([1, 2], [3], [4, 5, 6], [7]):
                await send.send([(n, None) for n in group])
            await trio.sleep(2 * record.RECORD_GATHER)
            await send.send([(8, None)])
    assert calls == [[1, 2, 3, 4, 5, 6], [7], [8]]
