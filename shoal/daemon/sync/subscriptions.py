"""Subscriptions: folders that follow the newest version of a dataset by themselves.

`shoal subscribe NAME DEST` records the pair in HOME/subscriptions.toml. The
manager wakes whenever a peer connects, leaves or changes its catalog; when a
peer offers a version of NAME with a higher seq than the one DEST holds, by the
author the subscription follows, it fetches that version into DEST through the
same transfer registry as `shoal fetch` (so `status` and the TUI show it, and
only the delta moves), keeping the user's changes in DEST (see local_changes).
A failed update is retried with backoff; a subscription never runs two updates
at once.
"""

import logging
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.fetch.manager import Transfers
from shoal.daemon.fetch.state import FetchSpec, Transfer
from shoal.daemon.library.datasets import Library
from shoal.daemon.net.peers import PeerManager
from shoal.daemon.toml_file import write_toml_atomic
from shoal.errors import ConfigError, ShoalError, UnknownSubscription, UsageError, single_exception
from shoal.protocol.errors import PathError
from shoal.protocol.format.paths import check_dataset_name
from shoal.protocol.wire.messages import CatalogEntry

SUBSCRIPTIONS_FILE = "subscriptions.toml"
#: First retry delay after a failed update; it doubles per failure up to RETRY_MAX.
RETRY_START = 2.0
RETRY_MAX = 300.0
#: How long an update waits for a peer that serves the version.
UPDATE_TIMEOUT = 30.0
#: Conflicts a subscription remembers for its listing, the newest last.
MAX_CONFLICTS = 100
#: Look again this often even when no peer event arrives.
RECHECK = 30.0
#: Look again this often while another fetch (a user's `shoal fetch`) writes into a subscription's folder.
BUSY_RECHECK = 1.0

_log = logging.getLogger("shoal.subscriptions")


@dataclass(frozen=True, slots=True)
class Subscription:
    """A folder kept at the newest version of a dataset: what survives a restart."""

    name: str
    dest: str
    added: int
    #: The author (hex public key) of the first version this subscription fetched, whose versions it follows.
    author: str | None = None
    updated: int | None = None
    conflicts: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True)
class _Live:
    """What a subscription is doing now; not persisted."""

    failures: int = 0
    next_try: float = 0.0
    last_error: str | None = None
    running: trio.CancelScope | None = None
    transfer: Transfer | None = None
    #: Heads by other authors, which this subscription does not follow.
    foreign: set[bytes] = field(default_factory=set)
    last_fetch: dict[str, Any] | None = None


class SubscriptionStore:
    """Subscriptions persisted in HOME/subscriptions.toml."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Subscription]:
        try:
            with self.path.open("rb") as file:
                table = tomllib.load(file)
        except FileNotFoundError:
            return []
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read {self.path} ({exc}); fix or remove it") from None
        try:
            return [_from_table(name, entry) for name, entry in table.get("subscriptions", {}).items()]
        except (KeyError, TypeError, ValueError, AttributeError, PathError) as exc:
            raise ConfigError(f"{self.path} is damaged ({exc!r}); fix or remove it") from None

    def save(self, subscriptions: list[Subscription]) -> None:
        write_toml_atomic(self.path, {"subscriptions": {s.name: _to_table(s) for s in subscriptions}})


def _to_table(sub: Subscription) -> dict[str, Any]:
    table: dict[str, Any] = {"dest": sub.dest, "added": sub.added}
    if sub.author is not None:
        table["author"] = sub.author
    if sub.updated is not None:
        table["updated"] = sub.updated
    table["conflicts"] = [{k: v for k, v in c.items() if v is not None} for c in sub.conflicts]
    return table


def _from_table(name: str, table: dict[str, Any]) -> Subscription:
    conflicts = tuple(
        {"path": str(c["path"]), "change": str(c["change"]), "kept_as": c.get("kept_as")}
        for c in table.get("conflicts", [])
    )
    return Subscription(
        check_dataset_name(name), str(table["dest"]), int(table["added"]), table.get("author"),
        table.get("updated"), conflicts,
    )


class Subscriptions:
    """Runs every subscription's updates; started in the daemon's nursery."""

    def __init__(
        self,
        home: Path,
        library: Library,
        peers: PeerManager,
        fetcher: Fetcher,
        transfers: Transfers,
        publish: Callable[[str, dict[str, Any]], None],
        author: bytes,
    ) -> None:
        self._store = SubscriptionStore(home / SUBSCRIPTIONS_FILE)
        self._library = library
        self._peers = peers
        self._fetcher = fetcher
        self._transfers = transfers
        self._publish = publish
        self._own_author = author.hex()
        self._subs = {s.name: s for s in self._store.load()}
        self._live = {name: _Live() for name in self._subs}
        self._kick = trio.Event()
        self._save_lock = trio.Lock()
        self._dest_busy = False

    # --- running --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Update subscriptions as peers offer new versions, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_peers)
            task_status.started()
            while True:
                self._start_due(nursery)
                with trio.move_on_after(self._until_next_retry()):
                    await self._kick.wait()

    def _wake(self) -> None:
        self._kick.set()
        self._kick = trio.Event()

    async def _follow_peers(self) -> None:
        while True:
            await self._peers.wait_for_change()
            self._wake()

    def _until_next_retry(self) -> float:
        # Only retries still ahead: one that is due but has no peer to fetch from waits for a peer event.
        now = time.monotonic()
        waits = [live.next_try - now for live in self._live.values() if live.running is None and live.next_try > now]
        return min([*waits, BUSY_RECHECK if self._dest_busy else RECHECK])

    def _start_due(self, nursery: trio.Nursery) -> None:
        now = time.monotonic()
        busy = {str(t.spec.dest) for t in self._transfers.active.values()}
        self._dest_busy = False
        for name, sub in self._subs.items():
            live = self._live[name]
            if live.running is not None or live.next_try > now:
                continue
            entry = self._candidate(sub, live)
            if entry is not None and sub.dest in busy:
                self._dest_busy = True  # two fetches must not write one folder; wait for the other
            elif entry is not None:
                live.running = trio.CancelScope()
                nursery.start_soon(self._run_update, sub, entry, live)

    def _held(self, sub: Subscription) -> tuple[int, bytes | None]:
        """(seq, id) of the version DEST holds, (0, None) when none."""
        index = self._library.index
        state = index.dest_state(sub.dest)
        if state is not None and state[0] == sub.name:
            held = state[1]
        else:
            known = index.dataset(sub.name)
            if known is None or known[0] != sub.dest or known[1] is None:
                return 0, None
            held = known[1]
        row = index.version(held)
        return (row.seq, row.id) if row else (0, None)

    def _candidate(self, sub: Subscription, live: _Live) -> CatalogEntry | None:
        """The newest head peers offer that is newer than DEST's and not by another author."""
        held_seq, _ = self._held(sub)
        offers = [e for _, e in self._peers.offers(sub.name) if e.seq > held_seq and e.head not in live.foreign]
        return max(offers, key=lambda e: e.seq, default=None)

    async def _run_update(self, sub: Subscription, entry: CatalogEntry, live: _Live) -> None:
        assert live.running is not None
        event = None
        try:
            with live.running:
                event = await self._update(sub, entry, live)
        finally:
            live.running = None
            live.transfer = None
            self._wake()
        # Published once the update no longer runs, so the event shows its outcome, not "updating".
        if event is not None and sub.name in self._subs:
            self._publish("subscriptions", {**event, "subscription": self.entry(sub.name)})

    async def _update(self, sub: Subscription, entry: CatalogEntry, live: _Live) -> dict[str, Any] | None:
        """Fetch `entry` into DEST; the event to publish about it, if any."""
        spec = FetchSpec(sub.name, entry.head.hex(), Path(sub.dest), timeout=UPDATE_TIMEOUT, keep_local=True)
        transfer = Transfer(spec)
        try:
            if sub.author is not None and await self._author_of(spec) != sub.author:
                live.foreign.add(entry.head)
                _log.info("subscription %s: ignoring %s@%d by another author", sub.name, sub.name, entry.seq)
                return None
            live.transfer = transfer
            result = await self._transfers.fetch(spec, _no_progress, transfer=transfer)
        except Exception as group:  # noqa: BLE001 - a failed update is retried, whatever failed
            exc = single_exception(group)
            if not isinstance(exc, (ShoalError, OSError)):
                _log.error("subscription %s: update failed", sub.name, exc_info=group)
            return await self._failed(sub.name, live, exc, transfer)
        live.failures, live.next_try, live.last_error = 0, 0.0, None
        live.last_fetch = {k: result[k] for k in ("bytes_received", "bytes_reused", "files_written", "seconds")}
        live.last_fetch["seq"] = result["version"]["seq"]
        if not await self._record(sub.name, transfer, author=result["version"]["author"], updated=int(time.time())):
            return None
        log = transfer.conflicts
        return {"change": "updated", "conflicts": [c.to_json() for c in log.reported], "conflicts_total": log.total}

    async def _author_of(self, spec: FetchSpec) -> str:
        """The author of the version spec names, downloading only its VERSION and root TREE."""
        found = await self._fetcher.browse(spec.query, (), 1)
        return found["version"]["author"]

    async def _failed(self, name: str, live: _Live, exc: BaseException, transfer: Transfer) -> dict[str, Any] | None:
        live.failures += 1
        live.last_error = str(exc) or type(exc).__name__
        live.next_try = time.monotonic() + min(RETRY_MAX, RETRY_START * 2 ** (live.failures - 1))
        _log.warning("subscription %s: update failed (%s); retrying later", name, live.last_error)
        return {"change": "failed"} if await self._record(name, transfer) else None

    async def _record(self, name: str, transfer: Transfer, **changes: Any) -> bool:
        """Remember what an update changed, including the conflicts it kept (even if it then
        failed); False when the subscription was removed meanwhile."""
        sub = self._subs.get(name)
        if sub is None:
            return False
        if sub.author is not None:
            changes.pop("author", None)
        conflicts = sub.conflicts + tuple(c.to_json() for c in transfer.conflicts.reported)
        self._subs[name] = replace(sub, conflicts=conflicts[-MAX_CONFLICTS:], **changes)
        try:
            await self._save()
        except OSError as exc:
            # The update itself succeeded; the file catches up at the next save.
            _log.warning("cannot save %s: %s", self._store.path, exc)
        return name in self._subs

    async def _save(self) -> None:
        async with self._save_lock:
            await trio.to_thread.run_sync(self._store.save, list(self._subs.values()))

    # --- control methods ------------------------------------------------------

    async def add(self, name: str, dest: Path) -> tuple[dict[str, Any], bool]:
        """Subscribe DEST to NAME; return (the subscription, whether it is new)."""
        try:
            check_dataset_name(name)
        except PathError as exc:
            raise UsageError(str(exc)) from None
        known = self._library.index.dataset(name)
        author = self._library.head(name).author.hex() if known is not None and known[1] is not None else None
        if author == self._own_author:
            raise UsageError(f"{name} is shared from this machine; subscribe to it on another machine")
        await trio.to_thread.run_sync(self._fetcher.check_dest, FetchSpec(name, None, dest))
        # No await from here until the subscription is in place: concurrent requests see each other.
        existing = self._subs.get(name)
        if existing is not None:
            if existing.dest != str(dest):
                raise UsageError(
                    f"{name} already follows into {existing.dest}; `shoal unsubscribe {name}` first to move it"
                )
            return self.entry(name), False
        self._check_dest_free(dest)
        self._subs[name] = Subscription(name, str(dest), int(time.time()))
        self._live[name] = _Live()
        await self._save()
        self._wake()
        entry = self.entry(name)
        self._publish("subscriptions", {"change": "added", "subscription": entry})
        return entry, True

    def _check_dest_free(self, dest: Path) -> None:
        for other in self._subs.values():
            theirs = Path(other.dest)
            if dest == theirs or dest.is_relative_to(theirs) or theirs.is_relative_to(dest):
                raise UsageError(
                    f"{dest} overlaps {other.dest}, which follows {other.name}; choose a folder of its own"
                )

    async def remove(self, name: str, dest: Path | None) -> dict[str, Any]:
        """Stop following; DEST keeps its files. Return the subscription as it was."""
        sub = self._subs.get(name)
        if sub is None:
            raise UnknownSubscription(f"nothing follows {name!r}; `shoal subscriptions` lists what does")
        if dest is not None and str(dest) != sub.dest:
            raise UsageError(f"{name} follows into {sub.dest}, not {dest}")
        entry = self.entry(name)
        live = self._live.pop(name)
        if live.running is not None:
            live.running.cancel()
        del self._subs[name]
        await self._save()
        self._publish("subscriptions", {"change": "removed", "subscription": entry})
        return entry

    def listing(self) -> list[dict[str, Any]]:
        return [self.entry(name) for name in sorted(self._subs)]

    def entry(self, name: str) -> dict[str, Any]:
        """A subscription as `subscription.list` shows it."""
        sub, live = self._subs[name], self._live[name]
        _, held_id = self._held(sub)
        pending = self._candidate(sub, live)
        if live.running is not None:
            state = "updating"
        elif live.failures:
            state = "failed"
        elif pending is None and self._peers.withdrawn(sub.name):
            state = "withdrawn"
        elif held_id is None and pending is None:
            state = "waiting"
        else:
            state = "current" if pending is None else "pending"
        return {
            "name": sub.name,
            "dest": sub.dest,
            "added": sub.added,
            "author": sub.author,
            "state": state,
            "version": self._library.head(sub.name).to_json() if held_id is not None else None,
            "updated": sub.updated,
            "transfer": self._transfer_id(live),
            "last_fetch": live.last_fetch,
            "last_error": live.last_error,
            "retry_in": round(max(0.0, live.next_try - time.monotonic()), 1) if live.failures else None,
            "conflicts": list(sub.conflicts),
        }

    def _transfer_id(self, live: _Live) -> int | None:
        return next((tid for tid, t in self._transfers.active.items() if t is live.transfer), None)


async def _no_progress(data: dict[str, Any]) -> None:
    """Updates report through the transfers topic and `status`, not to a client."""

