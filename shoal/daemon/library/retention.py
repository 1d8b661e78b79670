"""Retention: keeping shared versions servable after the folder moves on.

After a share records a version, the keeper (a task in the daemon's nursery)
copies the version's chunks that the pack store lacks out of the user's files,
re-hashing every read, so the version survives in-place rewrites. It runs in
worker threads one batch at a time, never inside `Library.share`.

The budget, per dataset: at most `retention.max_versions` versions (the newest
included), taking at most max(`retention.max_fraction` × the dataset's size,
`retention.min_bytes`) in the store (a chunk shared by several versions counts
once). The oldest kept versions are evicted first. A version that does not fit
whole keeps its changes against its parent ("kept changes"): it is served in
full while the folder still holds the rest, which is checked after every share.
A capture that would leave less than FREE_MARGIN of the disk free is skipped.
`share --no-keep` turns keeping off for the dataset until `share --keep`.
"""

import logging
import math
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import trio

from shoal.daemon.config import Config
from shoal.daemon.library.history import changed_chunks, changes
from shoal.daemon.store import chunks as chunkio
from shoal.daemon.store.index import Index, VersionRow
from shoal.daemon.store.loader import index_loader
from shoal.daemon.store.packs import CHANGES, KEEPING, KEPT, NOT_KEPT, SERVED, KeptVersion, PackStore
from shoal.errors import UnknownDataset
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import file_chunks, walk_tree
from shoal.protocol.format.objects import EntryType, decode_version, stored_file

log = logging.getLogger(__name__)

#: Chunk references recorded per worker-thread call while walking a version's manifest.
REF_BATCH = 4096
#: Chunks copied per worker-thread call: at most 64 × 256 KiB = 16 MiB in memory.
COPY_BATCH = 64
#: While peers are being served, the keeper rests this many times as long as each
#: batch took: serving keeps its CPU and disk (2 cores are shared by everything),
#: and keeping still progresses at about a twentieth of its speed.
REST_WHILE_SERVING = 19
#: A capture must leave this share of the disk free, and at least FREE_FLOOR bytes.
FREE_MARGIN = 0.05
FREE_FLOOR = 1024**3
#: After a capture evicted something, packs at least this dead are rewritten.
AUTO_COMPACT = 0.5
#: How many versions that were not kept `status` lists, newest first.
SHOWN_NOT_KEPT = 10
#: Queued instead of a version id when a corrupt chunk was dropped: re-announce what is served.
_DAMAGED = b""


@dataclass(frozen=True, slots=True)
class GcReport:
    """What `gc` did."""

    freed: int
    evicted: tuple[str, ...]
    packs_removed: int
    store_bytes: int
    kept: int

    def to_json(self) -> dict:
        return {
            "freed": self.freed,
            "evicted": list(self.evicted),
            "packs_removed": self.packs_removed,
            "store_bytes": self.store_bytes,
            "kept": self.kept,
        }


def budget_bytes(config: Config, size: int) -> int:
    """The store bytes one dataset of `size` bytes may use."""
    return max(int(config.max_fraction * size), config.min_bytes)


class Keeper:
    """Copies new versions into the pack store and applies the retention budget."""

    def __init__(
        self,
        index: Index,
        store: PackStore,
        config: Callable[[], Config],
        on_change: Callable[[], Awaitable[None]],
        serving: Callable[[], bool] = lambda: False,
    ) -> None:
        self.index = index
        self.store = store
        self._config = config
        self._on_change = on_change
        self._serving = serving
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self._busy = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Capture queued versions one at a time, resuming those a restart interrupted."""
        pending = await trio.to_thread.run_sync(self.store.versions)
        for row in sorted(pending, key=lambda r: r.seq):
            if row.state == KEEPING:
                self._send.send_nowait(row.version)
        token = trio.lowlevel.current_trio_token()

        def damaged() -> None:
            try:
                token.run_sync_soon(self._send.send_nowait, _DAMAGED)
            except trio.RunFinishedError:
                pass  # the daemon is stopping; the next start announces what is served

        self.store.on_damage = damaged
        task_status.started()
        async for version in self._receive:
            if version == _DAMAGED:
                await self._on_change()
                continue
            async with self._busy:
                changed = await self._capture(version)
            if changed:
                await self._on_change()

    # --- asking -------------------------------------------------------------------

    async def after_share(self, name: str, version: bytes, keep: bool | None) -> None:
        """Queue the dataset's head for keeping unless keeping is off; `keep` changes that choice."""
        queued = await trio.to_thread.run_sync(self._note_share, name, version, keep)
        if queued:
            self._send.send_nowait(version)

    def _note_share(self, name: str, version: bytes, keep: bool | None) -> bool:
        if keep is not None:
            self.store.set_policy(name, keep)
        known = {row.version: row for row in self.store.versions(name)}
        if version in known and known[version].state in (KEEPING, *SERVED):
            return False
        row = self.index.version(version)
        assert row is not None, "a shared head is always in the index"
        self.store.begin_version(version, name, row.seq)
        if not self.store.policy(name):
            self.store.set_state(version, NOT_KEPT, "shared with --no-keep")
            return False
        return True

    # --- reading ------------------------------------------------------------------

    def summary(self) -> dict:
        """The store at a glance, for `status`."""
        rows = self.store.versions()
        not_kept = sorted((r for r in rows if r.state == NOT_KEPT), key=lambda r: r.seq, reverse=True)
        return {
            "bytes": self.store.disk_bytes(),
            "kept": sum(r.state in SERVED for r in rows),
            "keeping": [_label(r) for r in rows if r.state == KEEPING],
            "not_kept": [{"version": _label(r), "reason": r.note} for r in not_kept[:SHOWN_NOT_KEPT]],
        }

    # --- capture ------------------------------------------------------------------

    async def _capture(self, version: bytes) -> bool:
        """Keep one queued version if it still is; return whether the served set changed."""
        rows = {r.version: r for r in await trio.to_thread.run_sync(self.store.versions)}
        row = self.index.version(version)
        if version not in rows or rows[version].state != KEEPING or row is None:
            return False
        await self._record_refs(row, _version_chunks(self.index, row.root))
        state = KEPT
        refusal, evict = await trio.to_thread.run_sync(self._admit, row)
        parent = await trio.to_thread.run_sync(self._parent_root, row)
        if refusal is not None and parent is not None:
            # Too big to copy whole: copy what changed since the parent; the rest stays
            # servable from the folder for as long as the folder still holds it.
            load = index_loader(self.index)
            await trio.to_thread.run_sync(self.store.clear_refs, version)
            await self._record_refs(row, changed_chunks(load, changes(load, parent, row.root)))
            state = CHANGES
            refusal, evict = await trio.to_thread.run_sync(self._admit, row)
        if refusal is not None:
            log.warning("not keeping %s@%d: %s", row.name, row.seq, refusal)
            await trio.to_thread.run_sync(self.store.set_state, version, NOT_KEPT, refusal)
        elif (lost := await self._copy(version)) is not None:
            log.warning("not keeping %s@%d: %s", row.name, row.seq, lost)
            await trio.to_thread.run_sync(self.store.set_state, version, NOT_KEPT, lost)
        else:
            await trio.to_thread.run_sync(self.store.set_state, version, state)
            await trio.to_thread.run_sync(self._evict, evict)
            log.info("kept %s of %s@%d in the pack store", "all" if state == KEPT else "the changes", row.name, row.seq)
        await trio.to_thread.run_sync(self._recheck_changes, row)
        return True

    def _parent_root(self, row: VersionRow) -> bytes | None:
        """The root tree of the version's first parent, when that version is known here."""
        found = self.index.get_object(row.id)
        assert found is not None
        record = decode_version(found[1], row.id)
        parent = self.index.version(record.parents[0]) if record.parents else None
        return parent.root if parent else None

    def _recheck_changes(self, head: VersionRow) -> None:
        """Stop serving versions kept by their changes whose other files the folder no longer holds."""
        load = index_loader(self.index)
        for kept in self.store.versions(head.name):
            row = self.index.version(kept.version)
            if kept.state != CHANGES or row is None or kept.version == head.id:
                continue
            # What differs from the head must come from the store, or from another file still here.
            needed = changed_chunks(load, changes(load, head.root, row.root))
            while batch := [cid for cid, _ in islice(needed, REF_BATCH)]:
                if len(self.index.chunks_present(batch)) < len(set(batch)):
                    log.info("no longer serving %s@%d: files it shares with the folder changed", kept.name, kept.seq)
                    self.store.set_state(kept.version, NOT_KEPT, "files it shared with the folder have changed")
                    break

    async def _record_refs(self, row: VersionRow, refs: Iterator[tuple[bytes, int]]) -> None:
        while True:
            started = trio.current_time()
            batch = await trio.to_thread.run_sync(lambda: list(islice(refs, REF_BATCH)))
            if not batch:
                return
            await trio.to_thread.run_sync(self.store.add_refs, row.id, batch)
            await self._rest(started)

    def _admit(self, row: VersionRow) -> tuple[str | None, list[bytes]]:
        """Why a version cannot be kept (or None), and the older versions to evict once it is.

        Evicting only after the copy succeeded means a failed capture costs no kept version.
        """
        config = self._config()
        budget = budget_bytes(config, row.size)
        older = [r.version for r in self.store.versions(row.name) if r.state in SERVED and r.version != row.id]
        chosen = self._choose([row.id, *older], config.max_versions, budget)
        if not chosen:
            return (
                f"it takes {self.store.usage([row.id]):,} bytes, over the dataset's budget of {budget:,};"
                " raise retention.min_bytes or retention.max_fraction"
            ), []
        needed = self.store.missing_bytes(row.id)
        disk = shutil.disk_usage(self.store.root)
        margin = max(int(disk.total * FREE_MARGIN), FREE_FLOOR)
        if disk.free - needed < margin:
            return f"only {disk.free:,} bytes free; keeping it needs {needed:,} and leaves at least {margin:,} free", []
        return None, [v for v in older if v not in chosen]

    def _evict(self, versions: list[bytes]) -> None:
        if versions:
            self.store.forget(versions)
            self.store.compact(min_dead=AUTO_COMPACT)

    def _choose(self, newest_first: list[bytes], max_versions: int, budget: int) -> list[bytes]:
        """The newest versions that fit both limits together; older ones are evicted first."""
        chosen: list[bytes] = []
        for version in newest_first[:max_versions]:
            if self.store.usage([*chosen, version]) > budget:
                break
            chosen.append(version)
        return chosen

    async def _copy(self, version: bytes) -> str | None:
        """Copy the chunks the store lacks; return why that failed, or None."""
        after = b""
        while batch := await trio.to_thread.run_sync(self.store.missing, version, after, COPY_BATCH):
            started = trio.current_time()
            after = batch[-1][0]
            found = await trio.to_thread.run_sync(chunkio.read_chunks, self.index, [cid for cid, _ in batch])
            read = [(cid, data) for cid, data in found if data is not None]
            if len(read) < len(found):
                return "its files changed before it could be copied; share again to keep the new state"
            await trio.to_thread.run_sync(self.store.append, read)
            await self._rest(started)
        return None

    async def _rest(self, started: float) -> None:
        """After a batch begun at `started`: give way to serving, if a peer is being served."""
        if self._serving():
            await trio.sleep((trio.current_time() - started) * REST_WHILE_SERVING)

    # --- gc -----------------------------------------------------------------------

    async def forget(self, name: str) -> int:
        """Drop every kept version of `name` from the store; return the bytes freed."""
        async with self._busy:
            return await trio.to_thread.run_sync(self._forget, name)

    def _forget(self, name: str) -> int:
        self.store.forget(row.version for row in self.store.versions(name))
        return self.store.compact(min_dead=0.0).freed

    async def gc(self, name: str | None) -> GcReport:
        """Evict what is beyond the budget (of `name`, or every dataset), then compact the packs."""
        async with self._busy:
            return await trio.to_thread.run_sync(self._gc, name)

    def _gc(self, name: str | None) -> GcReport:
        if name is not None and self.index.dataset(name) is None:
            raise UnknownDataset(f"no dataset named {name!r} here; `shoal ls` lists them")
        config = self._config()
        evicted: list[KeptVersion] = []
        for dataset in [name] if name is not None else self.store.names():
            rows = [r for r in self.store.versions(dataset) if r.state in SERVED]
            chosen = self._choose([r.version for r in rows], config.max_versions, self._budget_of(dataset, config))
            gone = [r for r in rows if r.version not in chosen]
            self.store.forget(r.version for r in gone)
            evicted.extend(gone)
        done = self.store.compact(min_dead=0.0)
        kept = sum(r.state in SERVED for r in self.store.versions())
        return GcReport(done.freed, tuple(_label(r) for r in evicted), done.packs_removed, self.store.disk_bytes(), kept)

    def _budget_of(self, name: str, config: Config) -> int:
        if not self.store.policy(name):
            return 0
        known = self.index.dataset(name)
        head = self.index.version(known[1]) if known and known[1] else None
        return budget_bytes(config, head.size if head else 0)


def _label(row: KeptVersion) -> str:
    return f"{row.name}@{row.seq}"


def _version_chunks(index: Index, root: bytes) -> Iterator[tuple[bytes, int]]:
    """Every chunk (id, length) of a version's files, in tree order, repeats included."""
    load = index_loader(index)
    for _, entry in walk_tree(load, root):
        if entry.type != EntryType.FILE:
            continue
        file = stored_file(load(Kind.FILE, entry.id), entry.id)
        for ref in file_chunks(load, file):
            yield ref.id, ref.size

