"""Looking versions up, here or on peers, without fetching them: what `resolve`, `diff` and `browse` need."""

from typing import Any, Protocol

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
