"""Getting data from peers: `fetch`, `browse`, `resolve` and `transfer.cancel|pause|resume`."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.daemon.control.api.lookup import VersionLookup
from shoal.daemon.control.api.params import (
    DEFAULT_FETCH_TIMEOUT,
    flag,
    limit,
    only,
    optional_text,
    text,
    timeout,
    transfer_id,
)
from shoal.daemon.control.server import Handler, ProgressFn
from shoal.daemon.fetch.manager import Transfers
from shoal.daemon.fetch.state import FetchSpec
from shoal.daemon.model import VersionInfo, VersionQuery
from shoal.daemon.net.trust import TrustStore
from shoal.errors import UsageError


@dataclass(frozen=True, slots=True)
class TransfersApi:
    """Fetches and the lookups that come before one."""

    trust: TrustStore
    transfers: Transfers
    versions: VersionLookup

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {
            "fetch": self.fetch,
            "browse": self.browse,
            "resolve": self.resolve,
            "transfer.cancel": self.cancel,
            "transfer.pause": self.pause,
            "transfer.resume": self.resume,
        }

    async def fetch(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Fetch a dataset version from trusted peers into a folder, reporting progress."""
        only(params, "name", "dest", "version", "include", "from", "timeout", "subset", "verify")
        dest = Path(text(params, "dest"))
        if not dest.is_absolute():
            raise UsageError(f"fetch needs an absolute destination, not {str(dest)!r}")
        include = params.get("include") or []
        if not isinstance(include, list) or not all(isinstance(item, str) and item for item in include):
            raise UsageError("include must be a list of non-empty glob patterns")
        wait = timeout(params)
        source = optional_text(params, "from")
        spec = FetchSpec(
            name=text(params, "name"),
            version=optional_text(params, "version"),
            dest=dest,
            include=tuple(include),
            from_peer=self.trust.resolve(source) if source else None,
            timeout=wait,
            subset=optional_text(params, "subset"),
            verify=flag(params, "verify"),
            fail_fast="timeout" not in params,
        )
        return await self.transfers.fetch(spec, progress)

    async def browse(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """One directory of a dataset version, local or on peers, without fetching its files."""
        only(params, "name", "version", "path", "limit", "timeout")
        path = params.get("path", "")
        if not isinstance(path, str):
            raise UsageError("path must be text")
        parts = tuple(part for part in path.split("/") if part)
        most = limit(params)
        query = VersionQuery(
            text(params, "name"),
            optional_text(params, "version"),
            timeout=float(params.get("timeout", DEFAULT_FETCH_TIMEOUT)),
            fail_fast="timeout" not in params,
        )
        return await self.versions.browse(query, parts, most)

    async def resolve(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The version a name and version text stand for, here or on peers."""
        only(params, "name", "version", "timeout")
        query = VersionQuery(
            text(params, "name"), optional_text(params, "version"), timeout=timeout(params),
            fail_fast="timeout" not in params,
        )
        version_id, record = await self.versions.resolve(query)
        return {"version": VersionInfo.from_record(version_id, record).to_json()}

    async def cancel(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop a running fetch; the next fetch of the same version resumes it."""
        only(params, "id")
        return {"transfer": self.transfers.cancel(transfer_id(params))}

    async def pause(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop asking peers for more of a fetch until it is resumed."""
        only(params, "id")
        return {"transfer": self.transfers.pause(transfer_id(params))}

    async def resume(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Ask peers again for a paused fetch."""
        only(params, "id")
        return {"transfer": self.transfers.resume(transfer_id(params))}
