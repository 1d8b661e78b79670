"""Sharing: `share`, `unshare`, `audience`, `subset` and `verify`."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from shoal.daemon.config import Settings
from shoal.daemon.control.api.params import audience_fields, flag, only, optional_text, text
from shoal.daemon.control.events import Publish
from shoal.daemon.control.server import Handler, ProgressFn
from shoal.daemon.fetch.selection import defined, parse_subset, without_subset
from shoal.daemon.library.datasets import Library, ShareProgress, ShareResult
from shoal.daemon.library.retention import Keeper
from shoal.daemon.net.trust import TrustStore
from shoal.daemon.watch.watches import Watches
from shoal.errors import UsageError

#: Progress of a long request is sent at most this often, however fast it advances.
PROGRESS_INTERVAL = 0.25

#: What every share does once it finished; `keep` None: the dataset's own choice.
Announce = Callable[[ShareResult, bool | None], Awaitable[None]]


def share_announcer(publish: Publish, publish_catalog: Callable[[], Awaitable[None]], keeper: Keeper) -> Announce:
    """What every share does once it finished: tell subscribers and the peers of a new
    version, and queue the head for retention (`keep` None: the dataset's own choice)."""

    async def announce(result: ShareResult, keep: bool | None) -> None:
        if result.created:
            publish("datasets", {"name": result.version.name, "version": result.version.to_json()})
            await publish_catalog()
        await keeper.after_share(result.version.name, result.version.id, keep)

    return announce


@dataclass(frozen=True, slots=True)
class DatasetsApi:
    """Sharing folders as dataset versions, and who sees them."""

    library: Library
    trust: TrustStore
    watches: Watches
    keeper: Keeper
    settings: Settings
    publish: Publish
    publish_catalog: Callable[[], Awaitable[None]]
    announce: Announce

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {
            "share": self.share,
            "unshare": self.unshare,
            "audience": self.audience,
            "subset": self.subset,
            "verify": self.verify,
        }

    async def share(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Record a folder as a new version of a dataset, reporting progress as it hashes."""
        only(params, "path", "name", "message", "keep", "to", "to_all")
        path = Path(text(params, "path"))
        if not path.is_absolute():
            raise UsageError(f"share needs an absolute path, not {str(path)!r}")
        name = optional_text(params, "name")
        message = optional_text(params, "message") or ""
        keep = flag(params, "keep") if "keep" in params else None
        chooses = _chooses_audience(params)
        chosen = self._chosen_peers(params) if chooses else None
        known = set(self.library.index.dataset_names())
        relay = _ProgressRelay(progress)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            result = await self.library.share(path, name=name, message=message, on_progress=relay.update)
            nursery.cancel_scope.cancel()
        shared = result.version.name
        audiences = self.library.audiences
        if chooses:
            audiences.set(shared, chosen)
        elif shared not in known and audiences.of(shared) is None and self._default_audience() == "none":
            audiences.set(shared, ())
        if chooses and not result.created:
            await self.publish_catalog()
        await self.announce(result, keep)
        return {**result.to_json(), **self._audience_of(shared)}

    async def audience(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Change which trusted peers see an existing dataset; they learn it at once."""
        only(params, "name", "to", "to_all")
        name = text(params, "name")
        self.library.head(name)
        if not _chooses_audience(params):
            raise UsageError("say who sees it: --to PEER (repeatable) or --to-all")
        self.library.audiences.set(name, self._chosen_peers(params))
        await self.publish_catalog()
        self.publish("datasets", {"name": name, "change": "audience", **self._audience_of(name)})
        return {"name": name, **self._audience_of(name)}

    def _default_audience(self) -> str:
        return self.settings.current().default_audience

    def _chosen_peers(self, params: dict[str, Any]) -> tuple[str, ...] | None:
        """The peer ids `to` names; None (every trusted peer) for `to_all`."""
        to = params.get("to")
        if to is None:
            return None
        if flag(params, "to_all"):
            raise UsageError("give either --to or --to-all, not both")
        if not isinstance(to, list) or not to or not all(isinstance(ref, str) and ref for ref in to):
            raise UsageError("to must be a list of trusted peers (names, ids or id prefixes)")
        return tuple(sorted({self.trust.resolve(ref) for ref in to}))

    def _audience_of(self, name: str) -> dict[str, list[str] | None]:
        """`audience` (peer ids, None: every trusted peer) and `seen_by`, their trust names."""
        chosen = self.library.audiences.of(name)
        return audience_fields(self.trust, sorted(chosen) if chosen is not None else None)

    async def unshare(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop offering a dataset now, its folder untouched; `forget` also drops its versions and kept copies."""
        only(params, "name", "forget")
        name = text(params, "name")
        forget = flag(params, "forget")
        self.library.head(name)  # an unknown name is refused before a watch is touched
        if name in self.watches:
            # Otherwise the watch would share the folder again at its next change.
            await self.watches.remove(name)
        path, dropped = await self.library.unshare(name, forget=forget)
        await self.publish_catalog()
        freed = await self.keeper.forget(name) if forget else 0
        self.publish("datasets", {"name": name, "change": "unshared"})
        return {"name": name, "path": path, "forgot": forget, "versions_dropped": dropped, "bytes_freed": freed}

    async def subset(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """List a dataset's named subsets, or publish a version that adds, replaces or deletes one."""
        only(params, "name", "subset", "include", "sample", "seed", "delete")
        name = text(params, "name")
        subset = optional_text(params, "subset")
        if subset is None:
            if len(params) > 1:
                raise UsageError("give the subset's name to define or delete it")
            head = self.library.head(name)
            return {"name": name, "version": head.to_json(), "subsets": head.to_json()["subsets"]}
        if flag(params, "delete"):
            if set(params) - {"name", "subset", "delete"}:
                raise UsageError("--delete takes no --include, --sample or --seed")
            version = await self.library.set_subsets(
                name, lambda head: (without_subset(head, subset), f"subset {subset} deleted")
            )
        else:
            wanted = parse_subset(subset, params.get("include"), params.get("sample"), params.get("seed"))
            version = await self.library.set_subsets(name, lambda head: defined(self.library.index, head, wanted))
        self.publish("datasets", {"name": name, "version": version.to_json()})
        await self.publish_catalog()
        await self.keeper.after_share(name, version.id, None)
        return {"name": name, "version": version.to_json(), "subsets": version.to_json()["subsets"], "changed": True}

    async def verify(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Re-hash a dataset's folder against its latest version."""
        only(params, "name", "path")
        report = await self.library.verify(text(params, "name"), optional_text(params, "path"))
        return report.to_json()


def _chooses_audience(params: dict[str, Any]) -> bool:
    return "to" in params or flag(params, "to_all")


class _ProgressRelay:
    """Turns the library's synchronous progress callbacks into paced progress messages."""

    def __init__(self, send: ProgressFn) -> None:
        self._send = send
        self._latest: ShareProgress | None = None
        self._sent: ShareProgress | None = None

    def update(self, progress: ShareProgress) -> None:
        self._latest = progress

    async def run(self) -> None:
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            latest = self._latest
            if latest is not None and latest is not self._sent:
                self._sent = latest
                await self._send(
                    {
                        "files_done": latest.files_done,
                        "bytes_done": latest.bytes_done,
                        "files_total": latest.files_total,
                        "bytes_total": latest.bytes_total,
                        "path": latest.path,
                    }
                )
