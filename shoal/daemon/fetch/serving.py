"""The peers serving one fetch's version as they come and go, for the manifest walk.

The walk asks whichever peers serve the version now; if every one of them
leaves while objects are still missing, it waits for one to come back, for up
to the fetch's timeout, as the data phase does (puller.py), and then fails
with the no-peer error that names the trusted peers and where they stand.
"""

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import overload

import trio

from shoal.daemon.fetch.errors import NoPeer
from shoal.daemon.fetch.source import Source


class Serving(Sequence[Source]):
    """The peers serving a version now: read afresh every time it is iterated."""

    def __init__(
        self, current: Callable[[], list[Source]], changed: Callable[[], Awaitable[None]], timeout: float,
        no_peer: Callable[[], NoPeer],
    ) -> None:
        self._current = current
        self._changed = changed
        self._timeout = timeout
        self._no_peer = no_peer

    def __iter__(self) -> Iterator[Source]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    @overload
    def __getitem__(self, i: int) -> Source: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Source]: ...
    def __getitem__(self, i: int | slice) -> Source | Sequence[Source]:
        return self._current()[i]

    async def wait_for_peer(self, asked: list[Source]) -> None:
        """Return once a session not yet `asked` serves the version (a peer that comes back
        does so on a new session); NoPeer once the fetch's timeout has passed."""
        with trio.move_on_after(self._timeout):
            while all(source in asked for source in self._current()):
                await self._changed()
            return
        raise self._no_peer()
