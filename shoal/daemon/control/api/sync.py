"""Keeping folders in step: `watch`, `unwatch`, `watches` and `subscription.add|remove|list`."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.daemon.control.api.params import absolute, only, optional_text, text
from shoal.daemon.control.server import Handler, ProgressFn
from shoal.daemon.sync.subscriptions import Subscriptions
from shoal.daemon.watch.watches import Watches
from shoal.errors import UsageError


@dataclass(frozen=True, slots=True)
class SyncApi:
    """Watched folders (shared again as they change) and subscriptions (fetched again as peers change)."""

    watches: Watches
    subscriptions: Subscriptions

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {
            "watch": self.watch,
            "unwatch": self.unwatch,
            "watches": self.list_watches,
            "subscription.add": self.add_subscription,
            "subscription.remove": self.remove_subscription,
            "subscription.list": self.list_subscriptions,
        }

    async def watch(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Share a folder now and again each time its changes settle, across restarts."""
        only(params, "path", "name")
        path = Path(text(params, "path"))
        if not path.is_absolute():
            raise UsageError(f"watch needs an absolute path, not {str(path)!r}")
        watch, added, result = await self.watches.add(path, optional_text(params, "name"))
        return {"watch": watch, "added": added, "share": result.to_json()}

    async def unwatch(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop watching a folder, named by its dataset name or absolute path."""
        only(params, "name")
        return {"watch": await self.watches.remove(text(params, "name"))}

    async def list_watches(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The watched folders and what each is doing."""
        only(params)
        return {"watches": self.watches.listing()}

    async def add_subscription(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Keep a folder at the newest version of a dataset from now on."""
        only(params, "name", "dest")
        dest = absolute(params, "dest")
        entry, created = await self.subscriptions.add(text(params, "name"), dest)
        return {"subscription": entry, "created": created}

    async def remove_subscription(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop following a dataset; the folder keeps its files."""
        only(params, "name", "dest")
        dest = absolute(params, "dest") if "dest" in params else None
        return {"subscription": await self.subscriptions.remove(text(params, "name"), dest)}

    async def list_subscriptions(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The followed datasets and the state of each."""
        only(params)
        return {"subscriptions": self.subscriptions.listing()}
