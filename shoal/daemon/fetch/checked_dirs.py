"""How far a fetch's manifest walk has got, for the planner that follows behind it.

A fetch starts moving file data while the manifest is still arriving (the first
byte of a 200,000-file folder would otherwise wait for 200 directory pages). A
directory's files may be planned once its TREE, FILE and CHUNKS objects are
stored and checked; a subtree whose symlinks were checked deeper down is not yet
checked for a shallower place. Nothing is renamed into DEST before the whole walk
has passed every check (SPEC.md, "What a receiver checks before writing").
"""

import trio

from shoal.daemon.fetch.wakeup import Signal


class CheckedDirs:
    """Tree ids the walk has checked, each with the shallowest depth it was checked at."""

    def __init__(self) -> None:
        self._depth: dict[bytes, int] = {}
        #: Trees whose whole subtree is stored and checked (at the depth recorded).
        self._whole: set[bytes] = set()
        self._changed = Signal()
        self.complete = trio.Event()

    def add(self, tree_id: bytes, depth: int, *, whole: bool) -> None:
        """The walk has checked `tree_id` at `depth`: its own entries, or with `whole` all below it."""
        if depth < self._depth.get(tree_id, depth + 1):
            self._depth[tree_id] = depth
            self._whole.discard(tree_id)
        if whole and self._depth[tree_id] == depth:
            self._whole.add(tree_id)
        self._changed.notify()

    def finish(self) -> None:
        """Every directory is checked, and so is the version as a whole."""
        self.complete.set()
        self._changed.notify()

    def state(self, tree_id: bytes, depth: int) -> bool | None:
        """None: not checked yet for `depth`; False: its own entries are; True: its whole subtree is.

        Called from the planner's worker thread: it only reads."""
        if self.complete.is_set():
            return True
        checked_at = self._depth.get(tree_id)
        if checked_at is None or checked_at > depth:
            return None
        return tree_id in self._whole

    async def wait(self, tree_id: bytes, depth: int) -> None:
        """Return once `tree_id` is checked for `depth`."""
        while self.state(tree_id, depth) is None:
            await self._changed.wait()
