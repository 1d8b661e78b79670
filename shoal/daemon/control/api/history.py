"""What datasets hold: `ls`, `log` and `diff`."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from shoal.daemon.control.api.lookup import VersionLookup
from shoal.daemon.control.api.params import audience_fields, flag, limit, only, text, timeout
from shoal.daemon.control.server import Handler, ProgressFn
from shoal.daemon.library.datasets import Library
from shoal.daemon.library.history import diff_report, parent_stats, version_kind
from shoal.daemon.model import VersionInfo, VersionQuery
from shoal.daemon.net.peers import PeerManager
from shoal.daemon.net.trust import TrustStore
from shoal.protocol.format.identity import PeerId
from shoal.protocol.wire.messages import CatalogEntry


@dataclass(frozen=True, slots=True)
class HistoryApi:
    """The datasets here and on peers, their versions, and what changed between two."""

    peer_id: PeerId
    library: Library
    trust: TrustStore
    peers: PeerManager
    #: Versions of a dataset the pack store keeps in full.
    kept_versions: Callable[[str], tuple[bytes, ...]]
    versions: VersionLookup

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {"ls": self.ls, "log": self.log, "diff": self.diff}

    async def ls(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The local datasets by name, or with `remote` those that connected peers offer."""
        only(params, "remote", "limit")
        if flag(params, "remote"):
            # Bounded: peers may offer 100,000 datasets, more than one control frame holds.
            offers = list(self.peers.remote_datasets())
            shown = offers[: limit(params)]
            return {"datasets": [self._remote_entry(pid, e) for pid, e in shown], "total": len(offers)}
        datasets = sorted(await trio.to_thread.run_sync(self.library.datasets), key=lambda info: info.name)
        return {"datasets": [{**info.to_json(), **audience_fields(self.trust, info.audience)} for info in datasets]}

    def _remote_entry(self, peer_id: str, entry: CatalogEntry) -> dict[str, Any]:
        trusted = self.trust.get(peer_id)
        return {
            "name": entry.name,
            "peer_id": peer_id,
            "peer_name": trusted.name if trusted else None,
            "head": {
                "name": entry.name, "seq": entry.seq, "id": entry.head.hex(), "time": entry.time,
                "size": entry.size, "files": entry.files,
            },
            "versions": len(entry.full),
        }

    async def log(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The versions of one dataset, newest first."""
        only(params, "name")
        name = text(params, "name")
        versions = self.library.log(name)
        kept = set(self.kept_versions(name))
        return {"name": name, "versions": [await trio.to_thread.run_sync(self._log_entry, v, kept) for v in versions]}

    def _log_entry(self, version: VersionInfo, kept: set[bytes]) -> dict[str, Any]:
        author = PeerId.from_public_key(version.author)
        trusted = self.trust.get(str(author))
        stats = parent_stats(self.library.index, version.id)
        return version.to_json() | {
            "author_peer": author.short(),
            "author_name": "this daemon" if author == self.peer_id else (trusted.name if trusted else None),
            "files_changed": stats[0] if stats else None,
            "bytes_new": stats[1] if stats else None,
            "kept": version.id in kept,
        } | version_kind(self.library.index, version)

    async def diff(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The paths that differ between two versions, and the bytes a fetch from one to the other moves."""
        only(params, "name", "from", "to", "limit", "timeout")
        name = text(params, "name")
        most = limit(params)
        wait = timeout(params)
        ends = [
            await self.versions.manifest(VersionQuery(name, text(params, key), timeout=wait)) for key in ("from", "to")
        ]
        (a_id, a), (b_id, b) = ends
        return await trio.to_thread.run_sync(
            diff_report, self.library.index, VersionInfo.from_record(a_id, a), VersionInfo.from_record(b_id, b), most
        )
