"""The daemon's pool of run read buffers: bounded however many sessions serve at once."""

import pytest
import trio
import trio.testing

from shoal.daemon.net.run_buffers import RunBuffers

pytestmark = pytest.mark.trio


async def test_a_third_lease_waits_for_a_buffer_to_come_back_and_then_reuses_it() -> None:
    pool = RunBuffers(count=2, size=1024)
    seen: list[int] = []
    release = trio.Event()

    async def hold() -> None:
        async with pool.lease() as buf:
            seen.append(id(buf))
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        third = trio.Event()

        async def late() -> None:
            async with pool.lease() as buf:
                seen.append(id(buf))
                third.set()

        nursery.start_soon(late)
        await trio.testing.wait_all_tasks_blocked()
        assert not third.is_set() and len(seen) == 2
        release.set()
        await third.wait()
    assert len(seen) == 3 and seen[2] in seen[:2]
    async with pool.lease() as buf:
        assert len(buf) == 1024
