"""Watched folders: each is shared again, as `share` would, once its changes have settled.

The list is kept in HOME/watches.toml, rewritten atomically on every change, and
every watch restarts with the daemon:

    [watches."resnet50"]
    path = "/home/me/runs/resnet50"
    added = 1700000000

Policy, per watch: the paths changed under the folder (not under
`.shoal-partial`, not matched by `.shoalignore`) settle one by one (settle.py).
Once every changed path is settled (`watch.quiet` seconds without a change and
not open for writing) or still being written, the folder is shared: one version
per settled burst, none when nothing changed. Files still being written (a log
held open, a checkpoint half saved) do not hold the others back; the version
keeps their previous entry until they settle, or until they have waited
`watch.max_wait` seconds. On start (of the watch or of the daemon) the whole
folder settles and is shared once, catching changes made while nobody watched.
"""

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from shoal.daemon.config import Config
from shoal.daemon.library.datasets import Library, ShareResult
from shoal.daemon.library.ignore import IGNORE_FILE, IgnoreRules, load_ignore
from shoal.daemon.model import PARTIAL_DIR
from shoal.daemon.toml_file import write_toml_atomic
from shoal.daemon.watch.settle import MAX_TRACKED, Changes, Plan, files_message, plan
from shoal.daemon.watch.watcher import watch_tree
from shoal.daemon.watch.writers import open_for_writing
from shoal.errors import ConfigError, ShareError, ShoalError, UnknownDataset, UsageError

log = logging.getLogger(__name__)

WATCHES_FILE = "watches.toml"
#: A folder that cannot be watched or shared (gone, unreadable) is tried again this often.
RETRY_AFTER = 10.0


@dataclass(frozen=True, slots=True)
class Watch:
    """A folder shared again whenever it changes, as dataset `name`."""

    name: str
    path: str
    added: int


@dataclass(slots=True)
class _Live:
    """A running watch: what listings show, and the changes not shared yet."""

    watch: Watch
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    state: str = "starting"
    detail: str | None = None
    #: Set while `changes` holds anything.
    dirty: trio.Event = field(default_factory=trio.Event)
    changes: Changes = field(default_factory=Changes)
    #: When the dataset's head version was made, as of this watch's last share.
    last_shared: int | None = None
    ignore: IgnoreRules | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.watch.name,
            "path": self.watch.path,
            "added": self.watch.added,
            "state": self.state,
            "detail": self.detail,
            "pending": len(self.changes),
            "last_shared": self.last_shared,
        }


class Watches:
    """The watched folders and one task per watch, living in the nursery `run` opens."""

    def __init__(
        self,
        home: Path,
        library: Library,
        *,
        announce: Callable[[ShareResult, bool | None], Awaitable[None]],
        publish: Callable[[str, dict[str, Any]], None],
        settings: Callable[[], Config],
    ) -> None:
        self._path = home / WATCHES_FILE
        self._library = library
        self._announce = announce
        self._publish = publish
        self._settings = settings
        self._live: dict[str, _Live] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every stored watch, then own their tasks until cancelled."""
        stored = _load(self._path)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for watch in stored:
                self._start(watch)
            task_status.started()
            await trio.sleep_forever()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, name: str) -> bool:
        return name in self._live

    def listing(self) -> list[dict[str, Any]]:
        """Every watch with its live state, by name."""
        return [self._live[name].to_json() for name in sorted(self._live)]

    async def add(self, path: Path, name: str | None) -> tuple[dict[str, Any], bool, ShareResult]:
        """Share the folder now and watch it from then on; return (watch, whether it is new, the share)."""
        root = str(path.resolve())
        self._check_new(root, name)
        # A file being written as the watch starts is left at its last version (out of a first one) until it settles.
        hold = await _writers(root, None) if os.path.isdir(root) else set()
        result = await self._library.share(path, name=name, message="watch: first share", hold=hold)
        await self._announce(result, None)
        name = result.version.name
        # Checked again: another request may have added a watch while this one shared.
        self._check_new(root, name)
        if name in self._live:
            return self._live[name].to_json(), False, result
        watch = Watch(name, root, int(time.time()))
        self._save([*(live.watch for live in self._live.values()), watch])
        live = self._start(watch)
        live.last_shared = result.version.time
        self._publish("watches", {"change": "added", "watch": live.to_json()})
        return live.to_json(), True, result

    def _check_new(self, root: str, name: str | None) -> None:
        """Refuse a watch that would clash with one already there, or that would watch itself write."""
        self._library.check_outside_home(Path(root))
        for live in self._live.values():
            if live.watch.path == root and name not in (None, live.watch.name):
                raise UsageError(
                    f"{root} is already watched as {live.watch.name!r}; `shoal unwatch {live.watch.name}` first"
                )
            if live.watch.name == name and live.watch.path != root:
                raise UsageError(f"{name!r} already watches {live.watch.path}; pick another --name")

    async def remove(self, ref: str) -> dict[str, Any]:
        """Stop watching the folder named by its dataset name or its path; its versions stay."""
        live = self._find(ref)
        self._save([other.watch for other in self._live.values() if other is not live])
        del self._live[live.watch.name]
        live.scope.cancel()
        live.state, live.detail = "removed", None
        entry = live.to_json()
        self._publish("watches", {"change": "removed", "watch": entry})
        return entry

    def _find(self, ref: str) -> _Live:
        if ref in self._live:
            return self._live[ref]
        if os.path.isabs(ref):
            root = str(Path(ref).resolve())
            for live in self._live.values():
                if live.watch.path == root:
                    return live
        raise UnknownDataset(f"nothing is watched as {ref!r}; `shoal watches` lists the watched folders")

    def _start(self, watch: Watch) -> _Live:
        assert self._nursery is not None, "Watches.run has not started"
        live = _Live(watch)
        self._live[watch.name] = live
        self._nursery.start_soon(self._follow, live, name=f"watch {watch.name}")
        return live

    def _save(self, watches: list[Watch]) -> None:
        table = {"watches": {w.name: {"path": w.path, "added": w.added} for w in watches}}
        try:
            write_toml_atomic(self._path, table)
        except OSError as e:
            raise ShoalError(
                f"cannot write {self._path}: {e.strerror}; check the home's permissions and free space"
            ) from None

    # --- one watch ---------------------------------------------------------------------

    async def _follow(self, live: _Live) -> None:
        """Watch, settle and share until removed; start over after a failure."""
        with live.scope:
            while True:
                try:
                    await self._watch_once(live)
                except Exception as e:
                    message = _failure(e)
                    if message is None:
                        # A bug here must not stop the daemon, which serves every other dataset too.
                        log.exception("watch %s failed; trying again in %.0f s", live.watch.name, RETRY_AFTER)
                        message = "internal error, see the daemon log"
                    else:
                        log.warning("watch %s: %s; trying again in %.0f s", live.watch.name, message, RETRY_AFTER)
                    self._set_state(live, "error", f"{message}; trying again every {RETRY_AFTER:.0f} s")
                await trio.sleep(RETRY_AFTER)

    async def _watch_once(self, live: _Live) -> None:
        root = Path(live.watch.path)
        live.ignore = await trio.to_thread.run_sync(load_ignore, root)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(watch_tree, listed=MAX_TRACKED), root, lambda paths: self._on_changes(live, paths))
            live.changes.start_catch_up(trio.current_time())
            live.dirty.set()
            while True:
                await live.dirty.wait()
                await self._share(live, await self._settle(live))
                if not live.changes:
                    live.dirty = trio.Event()
                    self._set_state(live, "idle", None)

    def _on_changes(self, live: _Live, paths: set[str]) -> None:
        if os.path.join(live.watch.path, IGNORE_FILE) in paths:
            try:
                live.ignore = load_ignore(live.watch.path)
            except ShareError:
                live.ignore = None  # the share reports the unreadable file
        now = trio.current_time()
        for path in paths:
            found = _relevant(live.watch.path, live.ignore, path)
            if found is not None:
                live.changes.add(found[0], now, found[1])
                live.dirty.set()

    async def _settle(self, live: _Live) -> Plan:
        """Return the plan of the next version once one can be made, showing what it waits for until then."""
        writers: set[str] = set()
        writers_at = -math.inf
        fresh = lingered = False
        while True:
            config = self._settings()
            now = trio.current_time()
            if not fresh and now >= writers_at + config.quiet:
                writers, writers_at, fresh = await _writers(live.watch.path, live.ignore), now, True
                continue
            ready = plan(live.changes, writers, now, config.quiet, config.max_wait)
            if ready.ready:
                if ready.linger is not None and not lingered:
                    lingered, fresh = True, False
                    await trio.sleep_until(ready.linger)
                    continue
                if fresh:
                    return ready
                # Whether a file is open for writing is asked again right before it is published.
                writers, writers_at, fresh = await _writers(live.watch.path, live.ignore), now, True
                continue
            fresh = False
            self._set_state(live, ready.state, ready.detail)
            await trio.sleep_until(ready.wake)

    async def _share(self, live: _Live, ready: Plan) -> None:
        self._set_state(live, "sharing", None)
        result = await self._library.share(
            Path(live.watch.path), name=live.watch.name, hold=ready.hold, message=ready.message,
            describe=files_message if ready.counts_files else None,
        )
        live.changes.published(ready, trio.current_time())
        await self._announce(result, None)
        live.last_shared = result.version.time
        for warning in result.warnings:
            log.warning("watch %s: %s", live.watch.name, warning)

    def _set_state(self, live: _Live, state: str, detail: str | None) -> None:
        if (live.state, live.detail) != (state, detail):
            live.state, live.detail = state, detail
            self._publish("watches", {"change": "state", "watch": live.to_json()})


def _relevant(root: str, ignore: IgnoreRules | None, path: str) -> tuple[str, bool] | None:
    """(path relative to `root`, whether it is a folder) if a change to `path` can change the next version."""
    if path == root:
        return "", True
    rel = path[len(root) + 1 :]
    if rel.split("/", 1)[0] == PARTIAL_DIR:
        return None
    is_dir = os.path.isdir(path)
    if ignore is not None and ignore.excludes(rel, is_dir):
        return None
    return rel, is_dir


async def _writers(root: str, ignore: IgnoreRules | None) -> set[str]:
    """The files under `root` open for writing that count for its versions, relative to it."""
    open_paths = await trio.to_thread.run_sync(open_for_writing, root)
    found = (_relevant(root, ignore, path) for path in open_paths if os.path.lexists(path))
    return {rel for rel, is_dir in filter(None, found) if rel and not is_dir}


def _failure(exc: BaseException) -> str | None:
    """What went wrong, for a folder that is gone or unreadable (as a nursery wraps it), or None for a bug."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError):
        return f"{exc.filename or 'the folder'}: {exc.strerror or exc}"
    return str(exc) if isinstance(exc, ShoalError) else None


def _load(path: Path) -> list[Watch]:
    import tomllib

    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path} ({e}); fix it or delete it to forget every watch") from None
    watches = []
    for name, entry in table.get("watches", {}).items():
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("added"), int)):
            raise ConfigError(f"{path}: watch {name!r} needs a path and an added time; fix it or delete the entry")
        watches.append(Watch(name, entry["path"], entry["added"]))
    return watches
