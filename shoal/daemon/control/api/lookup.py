"""Looking versions up, here or on peers, without fetching them: what `resolve`, `diff` and `browse` need."""

from pathlib import Path
from typing import Any, Protocol

from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.fetch.state import FetchSpec
from shoal.daemon.model import VersionQuery
from shoal.protocol.format.objects import VersionRecord


class VersionLookup(Protocol):
    """The fetch engine's resolver, as the control API uses it."""

    async def resolve(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        """The version `query` names, as a fetch would pick it."""
        ...

    async def manifest(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        """The version `query` names, with its whole manifest stored here."""
        ...

    async def browse(self, query: VersionQuery, path: tuple[str, ...], limit: int) -> dict[str, Any]:
        """One directory of the version `query` names, as the `browse` reply shows it."""
        ...


class FetcherLookup:
    """`VersionLookup` over a `Fetcher` whose resolver still takes a whole `FetchSpec`.

    Goes once the Fetcher takes a `VersionQuery` itself; the daemon then passes the Fetcher.
    """

    def __init__(self, fetcher: Fetcher, home: Path) -> None:
        self._fetcher = fetcher
        # Resolving never reads a spec's destination; the home is a folder that surely exists.
        self._home = home

    def _spec(self, query: VersionQuery) -> FetchSpec:
        return FetchSpec(
            name=query.name, version=query.version, dest=self._home, from_peer=query.from_peer, timeout=query.timeout
        )

    async def resolve(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        return await self._fetcher.resolve(self._spec(query))

    async def manifest(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        return await self._fetcher.manifest(self._spec(query))

    async def browse(self, query: VersionQuery, path: tuple[str, ...], limit: int) -> dict[str, Any]:
        return await self._fetcher.browse(self._spec(query), path, limit)
