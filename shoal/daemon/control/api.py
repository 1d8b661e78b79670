"""The control methods: what `shoal` commands and the TUI ask the daemon to do.

Every handler takes the request's params and a progress sender and returns the
result map; the normative description of each is in SPEC.md, "Control socket".
`subscribe` is built into the control server, because it belongs to the connection;
the topics it offers are TOPICS below.
"""

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import shoal
from shoal.daemon.config import Config, load_config
from shoal.daemon.control.server import ControlServer, Handler, ProgressFn
from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.library.retention import Keeper
from shoal.daemon.fetch.state import FetchSpec
from shoal.daemon.library.history import diff_report, parent_stats
from shoal.daemon.library.datasets import Library, ShareProgress, ShareResult
from shoal.daemon.model import VersionInfo
from shoal.daemon.fetch.selection import parse_subset, with_subset, without_subset
from shoal.daemon.net.peers import PeerManager
from shoal.daemon.sync.subscriptions import Subscriptions
from shoal.daemon.fetch.manager import Transfers
from shoal.daemon.net.trust import PendingPeer, TrustedPeer, TrustStore, canonical_peer_id
from shoal.daemon.watch.watches import Watches
from shoal.errors import UsageError
from shoal.protocol.format.identity import PeerId
from shoal.protocol.wire.messages import CatalogEntry

#: Event topics: a dataset got a new version; the trust store changed; the
#: configuration was reloaded; the daemon is about to stop; a watch was added,
#: removed or changed state; a subscription changed.
TOPICS = ("datasets", "peers", "transfers", "config", "daemon", "watches", "subscriptions")
#: Keys whose new value takes effect only when the daemon restarts.
RESTART_KEYS = frozenset({"listen", "discovery"})
#: Progress of a long request is sent at most this often, however fast it advances.
PROGRESS_INTERVAL = 0.25
#: How long a fetch waits for a peer that has the dataset, unless the request says otherwise.
DEFAULT_FETCH_TIMEOUT = 30.0
#: Entries `browse` returns unless asked for another number.
DEFAULT_BROWSE_LIMIT = 10_000


class ControlApi:
    """The daemon state the control methods read and change."""

    def __init__(
        self,
        *,
        home: Path,
        config: Config,
        listen: str,
        discovery: bool,
        peer_id: PeerId,
        library: Library,
        trust: TrustStore,
        publish: Callable[[str, dict[str, Any]], None],
        request_shutdown: Callable[[], None],
        peers: PeerManager,
        transfers: Transfers,
        fetcher: Fetcher,
        keeper: Keeper,
        watches: Watches,
        subscriptions: Subscriptions,
    ) -> None:
        self.home = home
        self.config = config
        self.listen = listen
        self.discovery = discovery
        self.peer_id = peer_id
        self.library = library
        self.trust = trust
        self._publish = publish
        self._request_shutdown = request_shutdown
        self.network = peers
        self.transfers = transfers
        self.fetcher = fetcher
        self.keeper = keeper
        self.watches = watches
        self._announce = share_announcer(publish, peers, keeper)
        self.subscriptions = subscriptions
        self._started = time.time()

    def register(self, server: ControlServer) -> None:
        """Serve every method on `server`."""
        for method, handler in self.handlers().items():
            server.register(method, handler)

    def handlers(self) -> dict[str, Handler]:
        """Method name to handler."""
        return {
            "id": self.id,
            "status": self.status,
            "shutdown": self.shutdown,
            "config.reload": self.reload_config,
            "share": self.share,
            "unshare": self.unshare,
            "audience": self.audience,
            "ls": self.ls,
            "log": self.log,
            "verify": self.verify,
            "fetch": self.fetch,
            "browse": self.browse,
            "diff": self.diff,
            "resolve": self.resolve,
            "subset": self.subset,
            "transfer.cancel": self.cancel_transfer,
            "transfer.pause": self.pause_transfer,
            "transfer.resume": self.resume_transfer,
            "peers": self.peers,
            "trust": self.trust_peer,
            "untrust": self.untrust_peer,
            "gc": self.gc,
            "watch": self.watch,
            "unwatch": self.unwatch,
            "watches": self.list_watches,
            "subscription.add": self.add_subscription,
            "subscription.remove": self.remove_subscription,
            "subscription.list": self.list_subscriptions,
        }

    async def id(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """This daemon's identity and where peers reach it."""
        _only(params)
        return {"peer_id": str(self.peer_id), "short": self.peer_id.short(), "listen": self._listen_address()}

    def _listen_address(self) -> str:
        host = self.listen.rpartition(":")[0]
        return f"{host}:{self.network.port}" if self.network.port is not None else self.listen

    async def status(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """A one-screen summary of the daemon."""
        _only(params)
        listing = self.trust.list()
        # The index's lock may be held by a fetch's worker thread for a while: never wait for it on the event loop.
        datasets = await trio.to_thread.run_sync(self.library.datasets)
        return {
            "version": shoal.__version__,
            "pid": os.getpid(),
            "home": str(self.home),
            "peer_id": str(self.peer_id),
            "started": int(self._started),
            "uptime": round(time.time() - self._started, 3),
            "listen": self._listen_address(),
            "discovery": self.discovery,
            "datasets": len(datasets),
            "watches": len(self.watches),
            "peers": {
                "trusted": len(listing.trusted),
                "pending": len(listing.pending),
                "online": len(self.network.sessions),
            },
            "transfers": self.transfers.snapshot(),
            "retention": await trio.to_thread.run_sync(self.keeper.summary),
        }

    async def shutdown(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop the daemon once this reply is on its way."""
        _only(params)
        self._request_shutdown()
        return {"stopping": True, "pid": os.getpid()}

    async def reload_config(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Re-read config.toml; report keys that changed and which of them need a restart."""
        _only(params)
        new = load_config(self.home)
        old_values, new_values = self.config.to_dict(), new.to_dict()
        changed = [key for key in new_values if new_values[key] != old_values[key]]
        self.config = new
        if changed:
            self._publish("config", {"config": new_values, "changed": changed})
        return {
            "config": new_values,
            "changed": changed,
            "restart_required": [key for key in changed if key in RESTART_KEYS],
        }

    async def share(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Record a folder as a new version of a dataset, reporting progress as it hashes."""
        _only(params, "path", "name", "message", "keep", "to", "to_all")
        path = Path(_text(params, "path"))
        if not path.is_absolute():
            raise UsageError(f"share needs an absolute path, not {str(path)!r}")
        name = _optional_text(params, "name")
        message = _optional_text(params, "message") or ""
        keep = _flag(params, "keep") if "keep" in params else None
        chooses = _chooses_audience(params)
        chosen = self._chosen_peers(params) if chooses else None
        known = set(self.library.index.dataset_names())
        relay = _ProgressRelay(progress)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            result = await self.library.share(path, name=name, message=message, on_progress=relay.update)
            nursery.cancel_scope.cancel()
        shared = result.version.name
        if chooses:
            self.library.audiences.set(shared, chosen)
        elif shared not in known and self.library.audiences.of(shared) is None and self.config.default_audience == "none":
            self.library.audiences.set(shared, ())
        if chooses and not result.created:
            await self.network.publish_catalog()
        await self._announce(result, keep)
        return {**result.to_json(), "audience": self._audience_of(shared)}

    async def audience(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Change which trusted peers see an existing dataset; they learn it at once."""
        _only(params, "name", "to", "to_all")
        name = _text(params, "name")
        self.library.head(name)
        if not _chooses_audience(params):
            raise UsageError("say who sees it: --to PEER (repeatable) or --to-all")
        self.library.audiences.set(name, self._chosen_peers(params))
        await self.network.publish_catalog()
        self._publish("datasets", {"name": name, "change": "audience", "audience": self._audience_of(name)})
        return {"name": name, "audience": self._audience_of(name)}

    def _chosen_peers(self, params: dict[str, Any]) -> tuple[str, ...] | None:
        """The peer ids `to` names; None (every trusted peer) for `to_all`."""
        to = params.get("to")
        if to is None:
            return None
        if _flag(params, "to_all"):
            raise UsageError("give either --to or --to-all, not both")
        if not isinstance(to, list) or not to or not all(isinstance(ref, str) and ref for ref in to):
            raise UsageError("to must be a list of trusted peers (names, ids or id prefixes)")
        return tuple(sorted({self.trust.resolve(ref) for ref in to}))

    def _audience_of(self, name: str) -> list[str] | None:
        chosen = self.library.audiences.of(name)
        return sorted(chosen) if chosen is not None else None

    async def unshare(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop offering a dataset now, its folder untouched; `forget` also drops its versions and kept copies."""
        _only(params, "name", "forget")
        name = _text(params, "name")
        forget = _flag(params, "forget")
        self.library.head(name)  # an unknown name is refused before a watch is touched
        if name in self.watches:
            # Otherwise the watch would share the folder again at its next change.
            await self.watches.remove(name)
        path, dropped = await self.library.unshare(name, forget=forget)
        await self.network.publish_catalog()
        freed = await self.keeper.forget(name) if forget else 0
        self._publish("datasets", {"name": name, "change": "unshared"})
        return {"name": name, "path": path, "forgot": forget, "versions_dropped": dropped, "bytes_freed": freed}

    async def watch(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Share a folder now and again each time its changes settle, across restarts."""
        _only(params, "path", "name")
        path = Path(_text(params, "path"))
        if not path.is_absolute():
            raise UsageError(f"watch needs an absolute path, not {str(path)!r}")
        watch, added, result = await self.watches.add(path, _optional_text(params, "name"))
        return {"watch": watch, "added": added, "share": result.to_json()}

    async def unwatch(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop watching a folder, named by its dataset name or absolute path."""
        _only(params, "name")
        return {"watch": await self.watches.remove(_text(params, "name"))}

    async def list_watches(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The watched folders and what each is doing."""
        _only(params)
        return {"watches": self.watches.listing()}

    async def ls(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The local datasets by name, or with `remote` those that connected peers offer."""
        _only(params, "remote", "limit")
        if _flag(params, "remote"):
            # Bounded: peers may offer 100,000 datasets, more than one control frame holds.
            offers = list(self.network.remote_datasets())
            shown = offers[: _limit(params)]
            return {"datasets": [self._remote_entry(pid, e) for pid, e in shown], "total": len(offers)}
        datasets = sorted(await trio.to_thread.run_sync(self.library.datasets), key=lambda info: info.name)
        return {"datasets": [info.to_json() for info in datasets]}

    async def log(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The versions of one dataset, newest first."""
        _only(params, "name")
        name = _text(params, "name")
        versions = self.library.log(name)
        kept = set(self.keeper.kept_versions(name))
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
        }

    async def diff(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The paths that differ between two versions, and the bytes a fetch from one to the other moves."""
        _only(params, "name", "from", "to", "limit", "timeout")
        name = _text(params, "name")
        limit = _limit(params)
        timeout = _timeout(params)
        ends = [
            await self.fetcher.manifest(FetchSpec(name=name, version=_text(params, key), dest=self.home, timeout=timeout))
            for key in ("from", "to")
        ]
        (a_id, a), (b_id, b) = ends
        return await trio.to_thread.run_sync(
            diff_report, self.library.index, VersionInfo.from_record(a_id, a), VersionInfo.from_record(b_id, b), limit
        )

    async def resolve(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """The version a name and version text stand for, here or on peers."""
        _only(params, "name", "version", "timeout")
        spec = FetchSpec(
            name=_text(params, "name"), version=_optional_text(params, "version"), dest=self.home,
            timeout=_timeout(params),
        )
        version_id, record = await self.fetcher.resolve(spec)
        return {"version": VersionInfo.from_record(version_id, record).to_json()}

    async def subset(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """List a dataset's named subsets, or publish a version that adds, replaces or deletes one."""
        _only(params, "name", "subset", "include", "sample", "seed", "delete")
        name = _text(params, "name")
        subset = _optional_text(params, "subset")
        if subset is None:
            if len(params) > 1:
                raise UsageError("give the subset's name to define or delete it")
            head = self.library.head(name)
            return {"name": name, "version": head.to_json(), "subsets": head.to_json()["subsets"]}
        if _flag(params, "delete"):
            if set(params) - {"name", "subset", "delete"}:
                raise UsageError("--delete takes no --include, --sample or --seed")
            version = await self.library.set_subsets(
                name, lambda head: without_subset(head, subset), f"subset {subset} deleted"
            )
        else:
            wanted = parse_subset(subset, params.get("include"), params.get("sample"), params.get("seed"))
            version = await self.library.set_subsets(name, lambda head: with_subset(head, wanted), f"subset {subset} set")
        self._publish("datasets", {"name": name, "version": version.to_json()})
        await self.network.publish_catalog()
        await self.keeper.after_share(name, version.id, None)
        return {"name": name, "version": version.to_json(), "subsets": version.to_json()["subsets"]}

    async def verify(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Re-hash a dataset's folder against its latest version."""
        _only(params, "name", "path")
        report = await self.library.verify(_text(params, "name"), _optional_text(params, "path"))
        return report.to_json()

    async def gc(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Evict kept versions beyond the retention budget and compact the pack store."""
        _only(params, "name")
        name = _optional_text(params, "name")
        report = await self.keeper.gc(name)
        if report.evicted:
            await self.network.publish_catalog()
        return report.to_json()

    async def peers(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Trusted peers, then peers seen but not trusted."""
        _only(params)
        listing = self.trust.list()
        entries = [self._live(_trusted_entry(peer)) for peer in listing.trusted]
        entries += [_pending_entry(peer) for peer in listing.pending]
        return {"peers": entries}

    def _live(self, entry: dict[str, Any]) -> dict[str, Any]:
        live = self.network.peer_state(entry["peer_id"])
        entry["state"] = "online" if live["online"] else "offline"
        for key in ("online", "address", "discovered", "last_seen", "last_error", "bytes_in", "bytes_out"):
            entry[key] = live[key]
        entry["rates"] = {"up": live["rate_out"], "down": live["rate_in"]}
        return entry

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

    async def fetch(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Fetch a dataset version from trusted peers into a folder, reporting progress."""
        _only(params, "name", "dest", "version", "include", "from", "timeout", "subset", "verify")
        dest = Path(_text(params, "dest"))
        if not dest.is_absolute():
            raise UsageError(f"fetch needs an absolute destination, not {str(dest)!r}")
        include = params.get("include") or []
        if not isinstance(include, list) or not all(isinstance(item, str) and item for item in include):
            raise UsageError("include must be a list of non-empty glob patterns")
        timeout = _timeout(params)
        source = _optional_text(params, "from")
        spec = FetchSpec(
            name=_text(params, "name"),
            version=_optional_text(params, "version"),
            dest=dest,
            include=tuple(include),
            from_peer=self.trust.resolve(source) if source else None,
            timeout=float(timeout),
            subset=_optional_text(params, "subset"),
            verify=_flag(params, "verify"),
        )
        return await self.transfers.fetch(spec, progress)

    async def browse(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """One directory of a dataset version, local or on peers, without fetching its files."""
        _only(params, "name", "version", "path", "limit", "timeout")
        path = params.get("path", "")
        if not isinstance(path, str):
            raise UsageError("path must be text")
        parts = tuple(part for part in path.split("/") if part)
        limit = _limit(params)
        spec = FetchSpec(
            name=_text(params, "name"),
            version=_optional_text(params, "version"),
            dest=self.home,
            timeout=float(params.get("timeout", DEFAULT_FETCH_TIMEOUT)),
        )
        return await self.fetcher.browse(spec, parts, limit)

    async def cancel_transfer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop a running fetch; the next fetch of the same version resumes it."""
        _only(params, "id")
        return {"transfer": self.transfers.cancel(_transfer_id(params))}

    async def pause_transfer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop asking peers for more of a fetch until it is resumed."""
        _only(params, "id")
        return {"transfer": self.transfers.pause(_transfer_id(params))}

    async def resume_transfer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        _only(params, "id")
        return {"transfer": self.transfers.resume(_transfer_id(params))}

    async def trust_peer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Trust a peer by id, optionally naming it and telling where to reach it."""
        _only(params, "peer_id", "name", "addresses")
        peer_id = _text(params, "peer_id")
        addresses = params.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(item, str) for item in addresses):
            raise UsageError("addresses must be a list of HOST:PORT texts")
        if canonical_peer_id(peer_id) == str(self.peer_id):
            raise UsageError("that is this daemon's own id; trust the id `shoal id` prints on the other machine")
        entry = _trusted_entry(self.trust.trust(peer_id, _optional_text(params, "name"), addresses))
        self.network.wake_dialer(entry["peer_id"])
        self._publish("peers", {"change": "trusted", "peer": entry})
        return {"peer": entry}

    async def untrust_peer(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop trusting a peer named by full id, name, or unique id prefix."""
        _only(params, "peer_id")
        entry = _trusted_entry(self.trust.untrust(_text(params, "peer_id")))
        await self.network.disconnect(entry["peer_id"], "no longer trusted")
        self._publish("peers", {"change": "untrusted", "peer": entry})
        return {"peer": entry}

    async def add_subscription(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Keep a folder at the newest version of a dataset from now on."""
        _only(params, "name", "dest")
        dest = _absolute(params, "dest")
        entry, created = await self.subscriptions.add(_text(params, "name"), dest)
        return {"subscription": entry, "created": created}

    async def remove_subscription(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        """Stop following a dataset; the folder keeps its files."""
        _only(params, "name", "dest")
        dest = _absolute(params, "dest") if "dest" in params else None
        return {"subscription": await self.subscriptions.remove(_text(params, "name"), dest)}

    async def list_subscriptions(self, params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        _only(params)
        return {"subscriptions": self.subscriptions.listing()}


def share_announcer(
    publish: Callable[[str, dict[str, Any]], None], network: PeerManager, keeper: Keeper
) -> Callable[[ShareResult, bool | None], Awaitable[None]]:
    """What every share does once it finished: tell subscribers and the peers of a new
    version, and queue the head for retention (`keep` None: the dataset's own choice)."""

    async def announce(result: ShareResult, keep: bool | None) -> None:
        if result.created:
            publish("datasets", {"name": result.version.name, "version": result.version.to_json()})
            await network.publish_catalog()
        await keeper.after_share(result.version.name, result.version.id, keep)

    return announce


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


#: The live fields of a peer entry while no session with it is open.
_OFFLINE: dict[str, Any] = {"online": False, "discovered": [], "last_error": None, "bytes_in": 0, "bytes_out": 0}


def _trusted_entry(peer: TrustedPeer) -> dict[str, Any]:
    return {
        "peer_id": peer.peer_id,
        "short": PeerId.parse(peer.peer_id).short(),
        "name": peer.name,
        "trusted": True,
        "state": "offline",
        "address": None,
        "addresses": list(peer.addresses),
        "announced": list(peer.announced),
        "rates": None,
        "added": peer.added,
        "first_seen": None,
        "last_seen": None,
        **_OFFLINE,
    }


def _pending_entry(peer: PendingPeer) -> dict[str, Any]:
    return {
        "peer_id": peer.peer_id,
        "short": PeerId.parse(peer.peer_id).short(),
        "name": None,
        "trusted": False,
        "state": "pending",
        "address": None,
        "addresses": [],
        "announced": list(peer.addresses),
        "rates": None,
        "added": None,
        "first_seen": peer.first_seen,
        "last_seen": peer.last_seen,
        **_OFFLINE,
    }


def _chooses_audience(params: dict[str, Any]) -> bool:
    return "to" in params or _flag(params, "to_all")


def _limit(params: dict[str, Any]) -> int:
    limit = params.get("limit", DEFAULT_BROWSE_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError("limit must be a positive integer")
    return limit


def _timeout(params: dict[str, Any]) -> float:
    timeout = params.get("timeout", DEFAULT_FETCH_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise UsageError("timeout must be a positive number of seconds")
    return float(timeout)


def _transfer_id(params: dict[str, Any]) -> int:
    value = params.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError("parameter 'id' must be a transfer id (an integer)")
    return value


def _only(params: dict[str, Any], *allowed: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UsageError(f"unknown parameters {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")


def _text(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"parameter {key!r} must be non-empty text")
    return value


def _absolute(params: dict[str, Any], key: str) -> Path:
    path = Path(_text(params, key))
    if not path.is_absolute():
        raise UsageError(f"parameter {key!r} must be an absolute path, not {str(path)!r}")
    return Path(os.path.normpath(path))


def _flag(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"parameter {key!r} must be true or false")
    return value


def _optional_text(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"parameter {key!r} must be text")
    return value
