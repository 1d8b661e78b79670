"""The manifest walk takes a few sibling directories at once (fetch/walk.py, WALK_DIRS): their
totals come back in order, no more than WALK_DIRS are walked together, and the first
error stops the rest and reaches the fetch as itself, not inside an exception group."""

import pytest
import trio

from shoal.daemon.fetch.walk import WALK_DIRS, Totals, Walk
from shoal.protocol.errors import IntegrityError
from shoal.protocol.format.objects import DirEntry

pytestmark = pytest.mark.trio


class Subtrees(Walk):
    """A walk whose subdirectories take a while each (and one may fail): only `_subtrees` is real."""

    def __init__(self, bad: str | None = None) -> None:
        super().__init__(None, None, (), lambda parts, is_dir: True, remember=False)  # type: ignore[arg-type]
        object.__setattr__(self, "bad", bad)
        object.__setattr__(self, "log", {"now": 0, "most": 0, "started": []})

    async def tree(self, tree_id: bytes, prefix: tuple[str, ...] = (), old_id: bytes | None = None) -> Totals:
        log = self.log  # type: ignore[attr-defined]
        log["started"].append(prefix[-1])
        log["now"] += 1
        log["most"] = max(log["most"], log["now"])
        try:
            await trio.sleep(0.01 * (1 + int(tree_id) % 3))
            if prefix[-1] == self.bad:  # type: ignore[attr-defined]
                raise IntegrityError(f"{prefix[-1]}: a bad entry")
            return int(tree_id), 1, 2
        finally:
            log["now"] -= 1


def _dirs(n: int) -> list[tuple[DirEntry, bytes | None]]:
    return [(DirEntry(f"d{i}", i, str(i).encode()), None) for i in range(n)]


async def test_siblings_are_walked_a_few_at_a_time_and_their_totals_kept_in_order() -> None:
    walk = Subtrees()
    totals = await walk._subtrees(("top",), _dirs(20))
    assert totals == [(i, 1, 2) for i in range(20)]
    assert walk.log["most"] == WALK_DIRS  # type: ignore[attr-defined]


async def test_the_first_error_stops_the_rest_and_is_raised_as_itself() -> None:
    walk = Subtrees(bad="d5")
    with pytest.raises(IntegrityError, match="d5: a bad entry"):
        await walk._subtrees(("top",), _dirs(40))
    assert len(walk.log["started"]) < 40  # type: ignore[attr-defined]
    assert walk.log["now"] == 0  # type: ignore[attr-defined]


class Fetching(Subtrees):
    """Subdirectories whose own objects take a while, fetched under the walk's limiter as `Walk.tree` does."""

    async def tree(self, tree_id: bytes, prefix: tuple[str, ...] = (), old_id: bytes | None = None) -> Totals:
        async with self.fetching:
            return await super().tree(tree_id, prefix, old_id)


async def test_a_walk_that_starts_narrow_takes_one_directory_at_a_time_until_widened() -> None:
    walk = Fetching()
    object.__setattr__(walk, "fetching", trio.CapacityLimiter(1))
    assert await walk._subtrees(("top",), _dirs(6)) == [(i, 1, 2) for i in range(6)]
    assert walk.log["most"] == 1  # type: ignore[attr-defined]
    walk.widen()
    await walk._subtrees(("top",), _dirs(12))
    assert walk.log["most"] == WALK_DIRS  # type: ignore[attr-defined]
