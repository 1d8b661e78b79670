"""The manifest walk's progress as the planner sees it."""

import pytest
import trio
import trio.testing

from shoal.daemon.fetch.checked_dirs import CheckedDirs

pytestmark = pytest.mark.trio

A, B = b"a" * 32, b"b" * 32


async def test_a_directory_is_ready_once_checked_at_its_depth_or_shallower() -> None:
    checked = CheckedDirs()
    assert checked.state(A, 2) is None
    checked.add(A, 3, whole=True)
    assert checked.state(A, 3) is True and checked.state(A, 5) is True
    # Checked deeper down: its symlinks may climb too far up at depth 2.
    assert checked.state(A, 2) is None
    checked.add(A, 2, whole=False)
    assert checked.state(A, 2) is False and checked.state(A, 3) is False
    checked.add(A, 2, whole=True)
    assert checked.state(A, 2) is True


async def test_wait_returns_when_the_walk_gets_there_or_finishes() -> None:
    checked = CheckedDirs()
    order = []

    async def planner(tree: bytes) -> None:
        await checked.wait(tree, 0)
        order.append(tree)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(planner, A)
        nursery.start_soon(planner, B)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []
        checked.add(A, 0, whole=False)
        await trio.testing.wait_all_tasks_blocked()
        assert order == [A]
        checked.finish()
    assert order == [A, B]
    assert checked.state(B, 0) is True
