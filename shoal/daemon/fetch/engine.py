"""Fetching a dataset version from peers into a destination folder.

Order of work: resolve the version from the peers' catalogs (resolve.py), fetch
the manifest objects the index lacks (walk.py), then plan (plan.py) every file that
differs from what DEST already holds and assemble it (stages.py): here, or in
worker processes the plan is dealt to (split.py). Files are assembled in
DEST/.shoal-partial/ and renamed into place once complete; a fetch into an
empty folder moves data while the manifest walk is still under way.

Resume needs no journal: a partial file's name is derived from its path and
content id, and chunks already in it are recognised by hashing them again.
Chunks are verified against their id before they are written.
"""

import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from shoal.daemon.fetch.browse import browse
from shoal.daemon.fetch.checked_dirs import CheckedDirs
from shoal.daemon.fetch.dest import include_matcher
from shoal.daemon.fetch.errors import DiskFull, NoPeer, named_failure
from shoal.daemon.fetch.job import FileTask, Job, Matcher, open_partial
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.plan import Planner, dest_holds
from shoal.daemon.fetch.reach import looking, no_peer, waiting
from shoal.daemon.fetch.record import record_version
from shoal.daemon.fetch.resolve import Resolved, Resolver
from shoal.daemon.fetch.selection import selection_of
from shoal.daemon.fetch.serving import Serving
from shoal.daemon.fetch.source import SourceDirectory
from shoal.daemon.fetch.split import Lanes, Split, WorkerConfig, split_count
from shoal.daemon.fetch.stages import assemble_stages
from shoal.daemon.fetch.state import FetchResult, FetchSpec, Transfer
from shoal.daemon.fetch.totals import selected_totals
from shoal.daemon.fetch.walk import WALK_DIRS, Walk
from shoal.daemon.model import PARTIAL_DIR, VersionInfo, VersionQuery
from shoal.daemon.store.fdlimit import FilePool, pool_size
from shoal.daemon.store.index import Index, VersionRow
from shoal.errors import UsageError
from shoal.protocol.format.objects import VersionRecord


class Fetcher:
    """Runs fetches against the connected peers."""

    def __init__(self, index: Index, peers: SourceDirectory, workers: WorkerConfig | None = None) -> None:
        self.index = index
        self.peers = peers
        self.workers = workers
        self._lanes = Lanes()
        self.objects = Objects(index, peers.name_of)
        self.resolver = Resolver(index, peers, self.objects)

    async def fetch(self, spec: FetchSpec, transfer: Transfer) -> FetchResult:
        """Bring spec.dest to the requested version; see SPEC.md, "Fetching".

        Every failure comes out as one named error (errors.named_failure).
        """
        try:
            return await self._fetch(spec, transfer)
        except BaseException as exc:
            named = named_failure(exc, spec.dest)
            if named is None or named is exc:
                raise
            raise named from exc

    def caps(self, transfer: Transfer) -> tuple[int, int]:
        """The most bytes/s `transfer` may receive from the peers serving it, as this daemon's caps
        allow and as theirs do (0: no cap)."""
        serving = [p for p, stats in transfer.peers.items() if not stats.dropped]
        ours = self.peers.receive_cap(len(serving))
        if transfer.version is None:
            return ours, 0
        theirs = {s.peer_id: s.peer_cap for s in self.resolver.sources(transfer.spec.query, transfer.version.id)}
        # One serving peer without a cap lets the transfer go as fast as the network does.
        sent = [theirs.get(p, 0) for p in serving]
        return ours, sum(sent) if sent and all(sent) else 0

    def note_waiting(self, transfer: Transfer) -> None:
        """Say what `transfer` waits for, by peer name, while nothing moves for want of a peer."""
        query = transfer.spec.query
        stalled = transfer.stalled()
        if transfer.phase == "resolving":
            transfer.starve(looking(query.name, self.resolver.asked(query)))
        elif stalled and transfer.version is not None and not self.resolver.sources(query, transfer.version.id):
            what = f"{query.name}@{transfer.version.seq}"
            transfer.starve(waiting(what, self.resolver.asked(query)))
        else:
            transfer.waiting = None

    async def browse(self, query: VersionQuery, path: tuple[str, ...], limit: int) -> dict[str, Any]:
        """List one directory of a version (browse.browse)."""
        return await browse(self.resolver, query, path, limit)

    async def resolve(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        """The version `query` names, as a fetch would pick it; "latest" is the newest of this
        daemon's head and the peers' heads."""
        return await self.resolver.latest_or_named(query)

    async def manifest(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        """Resolve a version, here or on peers, and make sure its whole manifest is stored here."""
        local = await trio.to_thread.run_sync(self.resolver.stored_version, query)
        if local is not None:
            return local
        # Manifest objects outlive the data: any peer offering the dataset may still hold them.
        found = await self.resolver.find(query, need_full=False)
        # The walk bounds and counts what it checks in a Transfer; a manifest alone fills no folder.
        spec = FetchSpec(query.name, query.version, Path(os.devnull), from_peer=query.from_peer, timeout=query.timeout)
        transfer = Transfer(spec, version=VersionInfo.from_record(found.id, found.record))
        sources = [s for s, _ in self.resolver.offers(query)]
        walk = Walk(self.objects, transfer, sources, include_matcher(()), remember=True)
        await walk.tree(found.record.root)
        return found.id, found.record

    def check_dest(self, spec: FetchSpec) -> Path:
        """The absolute DEST, if a fetch of spec.name may write there; else UsageError."""
        dest = Path(os.path.abspath(spec.dest))
        if dest.exists():
            self._check_existing(spec, dest)
        else:
            parent = dest.parent
            while not parent.exists():
                parent = parent.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"cannot create {dest}: {parent} is not writable")
        return dest

    def _check_existing(self, spec: FetchSpec, dest: Path) -> None:
        if not dest.is_dir():
            raise UsageError(f"{dest} exists and is not a folder")
        if not os.access(dest, os.W_OK | os.X_OK):
            raise UsageError(f"{dest} is not writable")
        known = self.index.dataset(spec.name)
        state = self.index.dest_state(str(dest))
        ours = (known is not None and known[0] == str(dest)) or (state is not None and state[0] == spec.name)
        marker = dest / PARTIAL_DIR / "dataset"
        resuming = marker.exists() and marker.read_text(encoding="utf-8") == spec.name
        others = [p for p in os.listdir(dest) if p != PARTIAL_DIR]
        if others and not ours and not resuming:
            raise UsageError(f"{dest} holds files that are not a fetch of {spec.name}; choose an empty or new folder")

    async def _fetch(self, spec: FetchSpec, transfer: Transfer) -> FetchResult:
        include_matcher(spec.include)  # refuses a malformed pattern before anything else
        dest = await trio.to_thread.run_sync(self.check_dest, spec)
        version = await self.resolver.find(spec.query)
        record = version.record
        transfer.version = VersionInfo.from_record(version.id, record)
        if not spec.partial:
            transfer.bytes_total, transfer.files_total = record.size, record.files
        transfer.phase = "manifest"
        sources = self._serving(spec, version)
        matcher, selection = await selection_of(spec.include, spec.subset, record, self.objects, transfer, sources)
        old_root, reuse_unchanged = await trio.to_thread.run_sync(dest_holds, self.index, spec, dest, selection)
        # An update or a resumed fetch needs room for what is still missing only,
        # unknown until planned; a disk that fills up then fails it as DiskFull, resumable.
        fresh = old_root is None and await trio.to_thread.run_sync(_is_empty, dest)
        if fresh and not spec.partial:
            await trio.to_thread.run_sync(check_room, dest, record.size, record.files, spec.name)
        # A whole version into an empty folder streams: data moves while the manifest
        # arrives (an update's walk is short, and one that fails must not have touched DEST).
        streaming = fresh and not spec.partial
        checked = CheckedDirs()
        # A streaming walk checks one directory at a time until the planner has files to hand
        # over: four at once, their FILE objects' checks held the GIL from the one the first
        # data waited for (bench/JOURNAL.md, "The pass of 2026-12-07 from 10:02").
        walk = Walk(
            self.objects, transfer, sources, matcher, not spec.partial, checked if streaming else None,
            trio.CapacityLimiter(1 if streaming else WALK_DIRS),
        )
        if not streaming:
            await walk.version(record, old_root if reuse_unchanged else None)
            if spec.partial:
                # The walk's totals are of every folder it entered; the summary, and the room a
                # fresh DEST needs (only a partial fetch is fresh and not streaming), are the selection's.
                selected = await trio.to_thread.run_sync(selected_totals, self.index, record.root, matcher)
                transfer.bytes_total, transfer.files_total = selected
            if fresh:
                await trio.to_thread.run_sync(check_room, dest, transfer.bytes_total, transfer.files_total, spec.name)
            checked.finish()
        transfer.phase = "data"
        resuming = await trio.to_thread.run_sync(_open_partial_dir, dest, spec.name)
        job = Job(
            self.index, spec, transfer, dest, version.id, FilePool(pool_size(), open_partial), checked,
            selection, old_root, reuse_unchanged, resuming, self.peers.name_of,
        )
        serving = self.resolver.sources(spec.query, version.id)
        count = split_count(self.workers, transfer.files_total, serving, self.peers.receive_cap(1) > 0)
        with self._lanes.lease(count) as lanes:
            split = Split(job, self.workers, serving, lanes) if lanes and self.workers is not None else None
            try:
                warnings = await self._assemble(job, record, matcher, walk if streaming else None, split)
            finally:
                job.files.close_all()
        transfer.phase = "finishing"
        await trio.to_thread.run_sync(record_version, self.index, dest, _row(version), version.data, spec, selection)
        transfer.phase = "done"
        return FetchResult(
            transfer.version, str(dest), transfer.files_total, transfer.bytes_total, transfer.files_written,
            transfer.files_done - transfer.files_written, transfer.bytes_received, transfer.bytes_reused,
            time.monotonic() - transfer.started, transfer.first_byte,
            {p: s.received for p, s in transfer.peers.items()}, tuple(warnings), transfer.workers,
        )

    def _serving(self, spec: FetchSpec, version: Resolved) -> Serving:
        """The peers serving `version`, for the walk to wait for as the data phase does."""
        query = spec.query
        what = f"{query.name}@{version.record.seq}"
        return Serving(
            lambda: self.resolver.sources(query, version.id), self.peers.wait_for_change, spec.timeout,
            lambda: NoPeer(no_peer(what, query.name, self.resolver.asked(query), spec.timeout)),
        )

    async def _assemble(
        self, job: Job, record: VersionRecord, matcher: Matcher, walk: Walk | None, split: Split | None
    ) -> list[str]:
        """Run the stages until every file is in place and recorded; the warnings about peers."""
        tasks_out, tasks_in = trio.open_memory_channel[list[FileTask]](1)
        warnings: list[str] = []

        sources = partial(self.resolver.sources, job.spec.query, job.version_id)
        alone = partial(assemble_stages, job, self.objects, sources, self.peers.wait_for_change)

        async def assemble() -> None:
            warnings.extend(await (split.run(tasks_in, alone) if split is not None else alone(tasks_in)))

        walk_failed = False

        async def walk_streaming(walk: Walk) -> None:
            """Fetch and check the manifest ahead of the planner, then the version as a whole."""
            nonlocal walk_failed
            try:
                await walk.version(record)
            except Exception:
                walk_failed = True
                raise
            job.checked.finish()

        try:
            async with trio.open_nursery() as nursery:
                if walk is not None:
                    nursery.start_soon(walk_streaming, walk)
                planner = Planner(job, matcher, walk.widen if walk is not None else None)
                nursery.start_soon(planner.run, record.root, tasks_out)
                nursery.start_soon(assemble)
        except BaseException:
            if walk_failed:
                # DEST was empty and nothing was renamed into it: take away the folders and links
                # made so far, once every stage has stopped (the planner makes them as it goes).
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_clear_except_partial, job.dest)
            raise
        return warnings


def check_room(dest: Path, size: int, files: int, name: str) -> None:
    """Refuse, before anything is written, a fetch that DEST's filesystem cannot hold:
    `size` bytes, and an inode for each of `files` files (a version may honestly
    declare a billion empty files; SPEC.md, "Fetching")."""
    probe = dest
    while not probe.exists():
        probe = probe.parent
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    # Filesystems without a fixed inode table (btrfs, for one) report f_files == 0.
    inodes_short = st.f_files > 0 and files > st.f_favail
    if size > free or inodes_short:
        raise DiskFull(
            f"{name} needs {size:,} bytes in {files:,} files; the disk of {dest} has {free:,} bytes and"
            f" room for {st.f_favail:,} files; free some space or fetch into a folder on another disk"
        )


def _row(version: Resolved) -> VersionRow:
    r = version.record
    return VersionRow(version.id, r.name, r.seq, r.time, r.size, r.files, r.root)


def _open_partial_dir(dest: Path, name: str) -> bool:
    """Make DEST's partial folder; return whether it holds partial files to resume from."""
    partial_dir = dest / PARTIAL_DIR
    partial_dir.mkdir(parents=True, exist_ok=True)
    (partial_dir / "dataset").write_text(name, encoding="utf-8")
    with os.scandir(partial_dir) as entries:
        return any(e.name != "dataset" for e in entries)


def _is_empty(dest: Path) -> bool:
    try:
        with os.scandir(dest) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True


def _clear_except_partial(dest: Path) -> None:
    """Empty DEST of all but its partial folder."""
    try:
        entries = list(os.scandir(dest))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name != PARTIAL_DIR:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
