"""Fetching a dataset version from peers into a destination folder.

Order of work: resolve the version from the peers' catalogs, fetch the manifest
objects the index lacks (depth first, a directory page at a time, so memory
follows the tree's depth rather than its size), then assemble every file that
differs from what DEST already holds. Each file is assembled in
DEST/.shoal-partial/ from chunks found locally (any dataset, any version) or
requested from peers, and renamed into place once complete.

Resume needs no journal: a partial file's name is derived from its path and
content id, and chunks already in it are recognised by hashing them again.
Chunks are verified against their id before they are written.
"""

import errno
import logging
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from shoal.daemon.store import chunks as chunkio
from shoal.daemon.fetch.checked_dirs import CheckedDirs
from shoal.daemon.fetch.dest import UMASK, ensure_dir, include_matcher, partial_name, place_symlink, prune
from shoal.daemon.store.fdlimit import FilePool, pool_size
from shoal.daemon.store.flush import start_writeback, sync_filesystem
from shoal.daemon.library.history import has_manifest
from shoal.daemon.fetch.local_changes import KeepLocal, Overwrite
from shoal.daemon.fetch.selection import selection_of
from shoal.daemon.store.index import CachedFile, FileRecord, FileStat, Index, VersionRow
from shoal.daemon.model import FULL, PARTIAL_DIR, VersionInfo
from shoal.daemon.fetch.state import Busy, FetchResult, FetchSpec, PeerStats, Transfer
from shoal.daemon.library.scanner import file_id_of
from shoal.daemon.store.loader import index_loader
from shoal.errors import ShoalError, UnknownDataset, UsageError
from shoal.protocol.errors import IntegrityError, ProtocolError
from shoal.protocol.format.hashing import Kind, chunk_id
from shoal.protocol.format.manifest import check_dir_size, check_version_signature, file_chunks, tree_entries
from shoal.protocol.wire.messages import CatalogEntry
from shoal.protocol.format.objects import (
    DEFAULT_FILE_MODE, EntryType, FileEntry, FileObject, Ref, TreeEntry, TreeNode, VersionRecord, decode,
    decode_file, decode_version,
)
from shoal.protocol.format.paths import check_symlink_target

#: Chunk ids per GET_CHUNKS: about 5 MB, small enough that the endgame's
#: duplicate requests waste little, large enough to amortise a request.
BATCH_CHUNKS = 64
#: Requests a single peer may have open for one transfer: about 40 MB in flight.
WINDOW_PER_PEER = 8
OBJECT_BATCH = 1024
#: Files up to this size are planned many to a worker-thread call.
SMALL_FILE = 4 * 1024 * 1024
#: Files planned per worker-thread call: a call costs milliseconds of waiting for
#: the event loop, which is busy receiving, so many small files share one.
PLAN_STEP = 256
#: Complete files that may wait for the manifest walk to end before planning pauses:
#: none is renamed into place until the whole version has passed its checks.
MAX_UNINSTALLED = 4096
#: Arrived chunks the writer waits for (at most WRITE_GATHER seconds) before a worker-thread call.
WRITE_BATCH = 16
WRITE_GATHER = 0.004

_log = logging.getLogger("shoal.fetch")


class FetchError(ShoalError):
    """A fetch could not complete."""

    code = "fetch-failed"


class NoPeer(FetchError):
    """No connected peer has the requested dataset or version."""

    code = "no-peer"
    exit_code = 6


class DiskFull(FetchError):
    """The destination's disk filled up; what was written stays for the next attempt."""

    code = "disk-full"


class PeerMisbehaved(ShoalError):
    """A peer sent bytes that do not match what was asked for."""


class Source(Protocol):
    """A connected, trusted peer that can be asked for objects and chunks."""

    peer_id: str

    async def get_objects(self, ids: Sequence[bytes]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """Return ([(id, bytes)], missing ids); bytes are unverified."""

    async def get_chunks(self, ids: Sequence[bytes], deliver: Callable[[bytes, bytes], None]) -> list[bytes]:
        """Stream chunks into `deliver(id, bytes)` as they arrive; return the ids the peer lacks."""


class SourceDirectory(Protocol):
    """The peers currently connected, with what each offers."""

    def offers(self, name: str) -> list[tuple[Source, CatalogEntry]]:
        """Peers whose catalog lists dataset `name`, with their entry."""

    async def wait_for_change(self) -> None:
        """Return when a peer connects, leaves, or changes its catalog."""

    def connected(self) -> list[str]:
        """The ids of the peers connected now."""


@dataclass(slots=True, eq=False)
class _FileTask:
    """One file being assembled in the partial folder."""

    parts: tuple[str, ...]
    entry: FileEntry
    partial: Path
    remaining: int
    #: No partial file was left for it by an interrupted fetch: there is nothing to
    #: re-check, and its file is created by the first write (run.files).
    fresh: bool
    listed: bool = False
    finishing: bool = False
    #: A small file's chunk locations (id, offset, size), kept from planning for
    #: its index record, so that installing it does not decode its FILE object again.
    locations: list[tuple[bytes, int, int]] | None = None


@dataclass(frozen=True, slots=True)
class _Wait:
    """The plan cannot go on until the manifest walk has checked this directory."""

    tree_id: bytes
    depth: int


@dataclass(slots=True)
class _NetBatch:
    """Chunks to request from a peer, and where each one goes."""

    targets: dict[bytes, list[tuple[_FileTask, int]]] = field(default_factory=dict)
    pending: set[bytes] = field(default_factory=set)
    lengths: dict[bytes, int] = field(default_factory=dict)
    refused_by: set[str] = field(default_factory=set)
    serving: set[str] = field(default_factory=set)
    writing: int = 0
    liars: set[str] = field(default_factory=set)
    requests: dict[str, trio.CancelScope] = field(default_factory=dict)

    def add(self, task: _FileTask, offset: int, ref: Ref) -> None:
        self.targets.setdefault(ref.id, []).append((task, offset))
        self.pending.add(ref.id)
        self.lengths[ref.id] = ref.size

    def __len__(self) -> int:
        return len(self.pending)


@dataclass(slots=True)
class _Arrival:
    """A chunk received for a batch, not yet verified."""

    batch: _NetBatch
    peer: str
    cid: bytes
    data: bytes
    targets: list[tuple[_FileTask, int]]


def _open_partial(task: _FileTask) -> int:
    return os.open(task.partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _verify_and_write(arrivals: list[_Arrival], busy: "Busy", files: FilePool) -> list[bool]:
    """Hash each chunk; write the good ones to every place they belong. Runs in a thread."""
    verdicts = []
    for arrival in arrivals:
        started = time.perf_counter()
        good = chunk_id(arrival.data) == arrival.cid
        hashed = time.perf_counter()
        if good:
            for task, offset in arrival.targets:
                with files.use(task) as fd:
                    os.pwrite(fd, arrival.data, offset)
        busy.hashing += hashed - started
        busy.disk_write += time.perf_counter() - hashed
        verdicts.append(good)
    return verdicts


class _Run:
    """One fetch in progress: the work queue shared by the producer and the peer workers."""

    def __init__(self, fetcher: "Fetcher", spec: FetchSpec, transfer: Transfer, dest: Path, version_id: bytes) -> None:
        self.fetcher = fetcher
        self.index = fetcher.index
        self.spec = spec
        self.transfer = transfer
        self.dest = dest
        self.version_id = version_id
        self.partial_dir = dest / PARTIAL_DIR
        #: The partial files open now: a bounded pool, so that a fetch of a million
        #: files works under a soft limit of 256 descriptors.
        self.files = FilePool(pool_size(), _open_partial)
        #: Whether an interrupted fetch left partial files to resume from.
        self.resuming = False
        #: How far the manifest walk has got; finished at once when it ran before the data.
        self.checked = CheckedDirs()
        self.queue: list[_NetBatch] = []
        self.outstanding: list[_NetBatch] = []
        self.producing = True
        self.changed = trio.Event()
        self.workers: dict[str, int] = {}
        self.dropped: set[str] = set()
        self.lost: dict[str, Source] = {}
        self.warnings: list[str] = []
        self.open_tasks: set[_FileTask] = set()
        self.last_source_seen = time.monotonic()
        self.inbox: list[_Arrival] = []
        self.complete: list[_FileTask] = []
        #: What this fetch selects (subsets.selection_key), and whether subtrees DEST
        #: already holds unchanged under that selection may be skipped unvisited.
        self.selection: bytes = FULL
        self.old_root: bytes | None = None
        self.reuse_unchanged = True
        # The writer and the installer have events of their own: a chunk arriving or
        # a file completing would otherwise wake every waiter of `changed`, several
        # task switches per chunk on the receiver's busy event loop.
        self.inbox_ready = trio.Event()
        self.complete_ready = trio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # --- the queue -------------------------------------------------------------

    async def put(self, batch: _NetBatch) -> None:
        # Bounded look-ahead keeps memory flat however large the version is.
        while len(self.queue) >= 2 * WINDOW_PER_PEER * max(1, len(self.workers)):
            await self.changed.wait()
        self.queue.append(batch)
        self.notify()

    async def take(self, peer: str) -> _NetBatch | None:
        """The next batch for `peer`; a duplicate of a slow one in the endgame; None when done."""
        while True:
            if peer in self.dropped:
                return None
            if self.transfer.paused:
                await self.transfer.wait_resumed()
                continue
            for i, batch in enumerate(self.queue):
                if peer not in batch.refused_by:
                    del self.queue[i]
                    self.outstanding.append(batch)
                    batch.serving.add(peer)
                    self.notify()
                    return batch
            if not self.producing and not self.queue:
                if not self.outstanding:
                    return None
                for batch in self.outstanding:
                    # Endgame: a batch is asked of at most two peers at once.
                    if len(batch.serving) == 1 and peer not in batch.serving and peer not in batch.refused_by and batch.pending:
                        batch.serving.add(peer)
                        return batch
            await self.changed.wait()

    def release(self, batch: _NetBatch, peer: str) -> None:
        batch.serving.discard(peer)
        if not batch.pending:
            if batch in self.outstanding:
                self.outstanding.remove(batch)
        elif not batch.serving:
            if batch in self.outstanding:
                self.outstanding.remove(batch)
            self.queue.insert(0, batch)
        self.notify()

    # --- receiving ------------------------------------------------------------

    def deliver(self, batch: _NetBatch, peer: str, cid: bytes, data: bytes) -> None:
        """Take a chunk off the wire; it is verified and written by the writer task."""
        if cid not in batch.lengths:
            raise PeerMisbehaved(f"peer {peer} sent chunk {cid.hex()[:16]}, which was not asked for")
        if len(data) != batch.lengths[cid]:
            raise PeerMisbehaved(
                f"peer {peer} sent chunk {cid.hex()[:16]} of {len(data)} bytes; the manifest says {batch.lengths[cid]}"
            )
        stats = self.transfer.peers[peer]
        stats.received += len(data)
        stats.chunks += 1
        if self.transfer.first_byte is None:
            self.transfer.first_byte = time.monotonic() - self.transfer.started
        self.transfer.bytes_received += len(data)
        if cid not in batch.pending:
            return  # the endgame asked two peers; the first copy won
        batch.pending.discard(cid)
        if not batch.pending:
            # An endgame duplicate is no longer needed: stop the other peers' copies.
            for other, scope in batch.requests.items():
                if other != peer:
                    scope.cancel()
        batch.writing += 1
        self.inbox.append(_Arrival(batch, peer, cid, data, batch.targets.pop(cid)))
        if len(self.inbox) in (1, WRITE_BATCH):
            self.inbox_ready.set()

    async def write_loop(self) -> None:
        """Verify and write arrived chunks off the event loop, so that the other
        core hashes and writes while this one receives and decrypts."""
        while True:
            if not self.inbox:
                await self.inbox_ready.wait()
                self.inbox_ready = trio.Event()
                continue
            if len(self.inbox) < WRITE_BATCH:
                # A worker-thread call per chunk or two costs two thread switches each;
                # a few milliseconds' wait gathers a batch worth one.
                with trio.move_on_after(WRITE_GATHER):
                    while len(self.inbox) < WRITE_BATCH:
                        await self.inbox_ready.wait()
                        self.inbox_ready = trio.Event()
            arrivals, self.inbox = self.inbox, []
            verdicts = await trio.to_thread.run_sync(_verify_and_write, arrivals, self.transfer.busy, self.files)
            for arrival, good in zip(arrivals, verdicts):
                batch = arrival.batch
                batch.writing -= 1
                if good:
                    for task, _ in arrival.targets:
                        self.account(task, len(arrival.data))
                else:
                    batch.pending.add(arrival.cid)
                    batch.targets[arrival.cid] = arrival.targets
                    batch.liars.add(arrival.peer)
            self.notify()

    async def drained(self, batch: _NetBatch) -> None:
        """Wait until every chunk received for `batch` has been verified and written."""
        while batch.writing:
            await self.changed.wait()

    def account(self, task: _FileTask, n: int) -> None:
        task.remaining -= n
        self.transfer.bytes_done += n
        if task.remaining == 0 and task.listed and not task.finishing:
            task.finishing = True
            self.complete.append(task)
            if len(self.complete) == 1:
                self.complete_ready.set()

    async def install_loop(self) -> None:
        """Move complete files into place, many per worker-thread call, once the whole manifest is checked."""
        await self.checked.complete.wait()
        while True:
            if not self.complete:
                await self.complete_ready.wait()
                self.complete_ready = trio.Event()
                continue
            tasks, self.complete = self.complete, []
            await trio.to_thread.run_sync(self.fetcher._install_files, self.dest, tasks, self.files)
            for task in tasks:
                self.open_tasks.discard(task)
            self.transfer.files_done += len(tasks)
            self.transfer.files_written += len(tasks)
            self.notify()

    async def until_installed(self) -> None:
        """Wait until every file this fetch assembles is in place."""
        while self.open_tasks:
            await self.changed.wait()


class Fetcher:
    """Runs fetches against the connected peers."""

    def __init__(self, index: Index, peers: SourceDirectory) -> None:
        self.index = index
        self.peers = peers

    async def fetch(self, spec: FetchSpec, transfer: Transfer) -> FetchResult:
        """Bring spec.dest to the requested version; see SPEC.md, "Fetching".

        Every failure comes out as one named error: several tasks failing at once
        (a peer's eight requests, say) give the first, and the system's errors say
        what the user can do about them.
        """
        try:
            return await self._fetch(spec, transfer)
        except BaseException as exc:
            named = _named_failure(exc, spec.dest)
            if named is None or named is exc:
                raise
            raise named from exc

    async def _fetch(self, spec: FetchSpec, transfer: Transfer) -> FetchResult:
        matcher = include_matcher(spec.include)
        dest = await trio.to_thread.run_sync(self.check_dest, spec)
        version_id, record, data = await self._resolve(spec, transfer)
        matcher, selection = selection_of(spec.include, spec.subset, record)
        transfer.version = VersionInfo.from_record(version_id, record)
        transfer.bytes_total = record.size
        transfer.files_total = record.files
        transfer.phase = "manifest"
        old_root, reuse_unchanged = await trio.to_thread.run_sync(self._old_root, spec, dest, selection)
        # An update or a resumed fetch needs room for what is still missing only,
        # unknown until planned; a disk that fills up then fails it as DiskFull, resumable.
        fresh = old_root is None and await trio.to_thread.run_sync(_is_empty, dest)
        if fresh and not spec.partial:
            await trio.to_thread.run_sync(check_room, dest, record.size, record.files, spec.name)
        trusted_old = old_root if reuse_unchanged else None
        run = _Run(self, spec, transfer, dest, version_id)
        # A whole version into an empty folder streams: data moves while the manifest
        # arrives (an update's walk is short, and one that fails must not have touched DEST).
        streaming = fresh and not spec.partial
        if not streaming:
            size, files, _ = await self._fetch_tree(record.root, (), matcher, spec, transfer, old_id=trusted_old)
            if not spec.partial:
                _check_totals(transfer, record, size, files)
            if fresh:
                await trio.to_thread.run_sync(check_room, dest, size, files, spec.name)
            run.checked.finish()
        transfer.phase = "data"
        run.selection = selection
        run.old_root, run.reuse_unchanged = old_root, reuse_unchanged
        run.resuming = await trio.to_thread.run_sync(self._open_partial_dir, dest, spec.name)
        try:
            async with trio.open_nursery() as nursery:
                if streaming:
                    nursery.start_soon(self._walk_manifest, run, record, matcher)
                nursery.start_soon(self._supervise, run, nursery)
                nursery.start_soon(run.write_loop)
                nursery.start_soon(run.install_loop)
                await self._produce(run, record, matcher)
                run.producing = False
                run.notify()
                await run.until_installed()
                nursery.cancel_scope.cancel()
        finally:
            run.files.close_all()
        transfer.phase = "finishing"
        await trio.to_thread.run_sync(self._complete, dest, version_id, record, data, spec, selection)
        transfer.phase = "done"
        return FetchResult(
            transfer.version, str(dest), transfer.files_written, transfer.files_total,
            transfer.bytes_received, transfer.bytes_reused, time.monotonic() - transfer.started, transfer.first_byte,
            {p: s.received for p, s in transfer.peers.items()}, tuple(run.warnings),
        )

    # --- browsing -----------------------------------------------------------------

    async def browse(self, spec: FetchSpec, path: tuple[str, ...], limit: int) -> dict:
        """List one directory of a version, fetching only the manifest objects on the way to it.

        A version held here is read from the index; another is resolved from the
        peers' catalogs as `fetch` would, and only its VERSION and the TREE objects
        along `path` are downloaded (and checked), so a user can look before fetching.
        """
        local = await trio.to_thread.run_sync(self._local_version, spec)
        if local is not None:
            version_id, record = local
            sources: list[Source] = []
        else:
            version_id, record, _ = await self._resolve(spec, Transfer(spec))
            sources = self._sources(spec, version_id)
        tree_id = record.root
        for depth, name in enumerate(path):
            entries = await self._browse_dir(tree_id, path[:depth], sources)
            found = next((e for e in entries if e.name == name), None)
            if found is None or found.type != EntryType.DIR:
                raise UsageError(f"{'/'.join(path[: depth + 1])} is not a directory of {spec.name}@{record.seq}")
            tree_id = found.id
        entries = await self._browse_dir(tree_id, path, sources)
        return {
            "version": VersionInfo.from_record(version_id, record).to_json(),
            "path": "/".join(path),
            "total": len(entries),
            "entries": [
                {
                    "name": e.name,
                    "type": e.type.name.lower(),
                    "size": e.size,
                    "executable": e.type == EntryType.FILE and e.executable,
                    "target": e.target if e.type == EntryType.SYMLINK else None,
                }
                for e in entries[:limit]
            ],
        }

    async def resolve(self, spec: FetchSpec) -> tuple[bytes, VersionRecord]:
        """The version `spec` names, as a fetch would pick it; "latest" is the newest of this
        daemon's head and the peers' heads."""
        if (spec.version or "latest").lower() == "latest":
            local = await trio.to_thread.run_sync(self._local_version, spec)
            offers = self._offers(spec)
            if local is not None and all(entry.seq <= local[1].seq for _, entry in offers):
                return local
        version_id, record, _ = await self._resolve(spec, Transfer(spec), need_full=False)
        return version_id, record

    async def manifest(self, spec: FetchSpec) -> tuple[bytes, VersionRecord]:
        """Resolve a version, here or on peers, and make sure its whole manifest is stored here."""
        local = await trio.to_thread.run_sync(self._stored_version, spec)
        if local is not None:
            return local
        # Manifest objects outlive the data: any peer offering the dataset may still hold them.
        version_id, record, _ = await self._resolve(spec, Transfer(spec), need_full=False)
        transfer = Transfer(spec, version=VersionInfo.from_record(version_id, record))
        sources = [s for s, _ in self._offers(spec)]
        await self._fetch_tree(record.root, (), include_matcher(()), spec, transfer, sources)
        return version_id, record

    def _stored_version(self, spec: FetchSpec) -> tuple[bytes, VersionRecord] | None:
        """The asked-for version among those recorded here, if its whole manifest is stored."""
        wanted = (spec.version or "latest").lower()
        known = self.index.dataset(spec.name)
        rows = list(self.index.versions(spec.name))
        if wanted == "latest":
            chosen = [r for r in rows if known is not None and r.id == known[1]]
        elif wanted.isdigit():
            chosen = [r for r in rows if r.seq == int(wanted)]
        else:
            _check_prefix(wanted)
            chosen = [r for r in rows if r.id.hex().startswith(wanted)]
            if len(chosen) > 1:
                raise UsageError(f"version prefix {wanted!r} is ambiguous; give more digits")
        if len(chosen) != 1 or not has_manifest(self.index, chosen[0].root):
            return None
        record = decode_version(self.index.get_object(chosen[0].id)[1], chosen[0].id)  # type: ignore[index]
        return chosen[0].id, record

    def _local_version(self, spec: FetchSpec) -> tuple[bytes, VersionRecord] | None:
        """The asked-for version, if this daemon holds it (shared or fetched here)."""
        known = self.index.dataset(spec.name)
        if known is None or known[1] is None:
            return None
        wanted = (spec.version or "latest").lower()
        rows = list(self.index.versions(spec.name))
        if wanted == "latest":
            chosen = [r for r in rows if r.id == known[1]]
        elif wanted.isdigit():
            chosen = [r for r in rows if r.seq == int(wanted)]
        else:
            chosen = [r for r in rows if r.id.hex().startswith(wanted)]
        # Only the head's files are certain to be here; older versions are browsed like remote ones.
        if len(chosen) != 1 or chosen[0].id != known[1]:
            return None
        record = decode_version(self.index.get_object(chosen[0].id)[1], chosen[0].id)  # type: ignore[index]
        return chosen[0].id, record

    async def _browse_dir(self, tree_id: bytes, prefix: tuple[str, ...], sources: Sequence[Source]) -> list[TreeEntry]:
        await self._ensure(Kind.TREE, [tree_id], sources)
        await self._ensure_pages(Kind.TREE, tree_id, sources)
        entries = await trio.to_thread.run_sync(lambda: list(tree_entries(index_loader(self.index), tree_id)))
        _check_entries(prefix, entries)
        return entries

    # --- destination -----------------------------------------------------------

    def check_dest(self, spec: FetchSpec) -> Path:
        """The absolute DEST, if a fetch of spec.name may write there; else UsageError."""
        dest = Path(os.path.abspath(spec.dest))
        known = self.index.dataset(spec.name)
        if dest.exists():
            if not dest.is_dir():
                raise UsageError(f"{dest} exists and is not a folder")
            if not os.access(dest, os.W_OK | os.X_OK):
                raise UsageError(f"{dest} is not writable")
            state = self.index.dest_state(str(dest))
            ours = (known is not None and known[0] == str(dest)) or (state is not None and state[0] == spec.name)
            marker = dest / PARTIAL_DIR / "dataset"
            resuming = marker.exists() and marker.read_text(encoding="utf-8") == spec.name
            others = [p for p in os.listdir(dest) if p != PARTIAL_DIR]
            if others and not ours and not resuming:
                raise UsageError(
                    f"{dest} holds files that are not a fetch of {spec.name}; choose an empty or new folder"
                )
        else:
            parent = dest.parent
            while not parent.exists():
                parent = parent.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"cannot create {dest}: {parent} is not writable")
        return dest

    @staticmethod
    def _open_partial_dir(dest: Path, name: str) -> bool:
        """Make DEST's partial folder; return whether it holds partial files to resume from."""
        partial_dir = dest / PARTIAL_DIR
        partial_dir.mkdir(parents=True, exist_ok=True)
        (partial_dir / "dataset").write_text(name, encoding="utf-8")
        with os.scandir(partial_dir) as entries:
            return any(e.name != "dataset" for e in entries)

    # --- resolving ------------------------------------------------------------

    async def _resolve(
        self, spec: FetchSpec, transfer: Transfer, *, need_full: bool = True
    ) -> tuple[bytes, VersionRecord, bytes]:
        with trio.move_on_after(spec.timeout):
            while True:
                offers = self._offers(spec)
                if offers:
                    found = await self._pick_version(spec, offers, need_full)
                    if found is not None:
                        return found
                else:
                    stored = await self._stored(spec)
                    if stored is not None:
                        return stored
                await self.peers.wait_for_change()
        seen = ", ".join(self.peers.connected()) or "none"
        what = f"{spec.name}@{spec.version}" if spec.version else spec.name
        raise NoPeer(f"no connected peer has {what} (waited {spec.timeout:g}s; peers connected: {seen})")

    async def _stored(self, spec: FetchSpec) -> tuple[bytes, VersionRecord, bytes] | None:
        """An explicitly named version stored here, which no peer serves in full: the fetch
        then assembles it from local chunks, and waits for peers only for what is missing."""
        if spec.version is None or spec.version.lower() == "latest":
            return None
        stored = await trio.to_thread.run_sync(self._stored_version, spec)
        if stored is None:
            return None
        return stored[0], stored[1], self.index.get_object(stored[0])[1]  # type: ignore[index]

    def _offers(self, spec: FetchSpec) -> list[tuple[Source, CatalogEntry]]:
        offers = self.peers.offers(spec.name)
        if spec.from_peer:
            offers = [(s, e) for s, e in offers if s.peer_id == spec.from_peer or s.peer_id.startswith(spec.from_peer)]
        return offers

    async def _pick_version(
        self, spec: FetchSpec, offers: list[tuple[Source, CatalogEntry]], need_full: bool = True
    ) -> tuple[bytes, VersionRecord, bytes] | None:
        wanted = (spec.version or "latest").lower()
        newest = max(offers, key=lambda o: o[1].seq)
        if wanted == "latest":
            version_id = newest[1].head
        elif wanted.isdigit():
            version_id = await self._find_seq(spec.name, int(wanted), offers, newest)
        else:
            version_id = self._find_prefix(spec.name, wanted, offers)
        if version_id is None:
            return None
        sources = [s for s, e in offers if e.head == version_id or version_id in e.full]
        if not sources and need_full:
            stored = await self._stored(spec)
            if stored is None:
                raise NoPeer(f"no connected peer can serve {spec.name}@{spec.version} in full")
            return stored
        sources = sources or [s for s, _ in offers]
        await self._ensure(Kind.VERSION, [version_id], sources)
        data = self.index.get_object(version_id)[1]  # type: ignore[index]
        record = decode_version(data, version_id)
        check_version_signature(record)
        if record.name != spec.name:
            raise FetchError(f"version {version_id.hex()[:12]} belongs to {record.name!r}, not {spec.name!r}")
        return version_id, record, data

    async def _find_seq(
        self, name: str, seq: int, offers: list[tuple[Source, CatalogEntry]], newest: tuple[Source, CatalogEntry]
    ) -> bytes | None:
        for _, entry in offers:
            if entry.seq == seq:
                return entry.head
        for row in self.index.versions(name):
            if row.seq == seq:
                return row.id
        if seq > newest[1].seq:
            raise UnknownDataset(f"{name}@{seq} does not exist; the newest is {name}@{newest[1].seq}")
        # Walk back the first-parent chain from the newest head.
        current = newest[1].head
        while True:
            await self._ensure(Kind.VERSION, [current], [newest[0]])
            record = decode_version(self.index.get_object(current)[1], current)  # type: ignore[index]
            if record.seq == seq:
                return current
            if record.seq < seq or not record.parents:
                raise UnknownDataset(f"{name}@{seq} is not in the history peers offer")
            current = record.parents[0]

    def _find_prefix(self, name: str, prefix: str, offers: list[tuple[Source, CatalogEntry]]) -> bytes | None:
        _check_prefix(prefix)
        ids = {e.head for _, e in offers} | {v for _, e in offers for v in e.full}
        ids |= {row.id for row in self.index.versions(name)}
        matches = [i for i in ids if i.hex().startswith(prefix)]
        if len(matches) > 1:
            raise UsageError(f"version prefix {prefix!r} is ambiguous; give more digits")
        return matches[0] if matches else None

    # --- manifest ---------------------------------------------------------------

    async def _ensure(self, kind: Kind, ids: Sequence[bytes], sources: Sequence[Source]) -> dict[bytes, object]:
        """Make sure the index holds these objects, downloading and checking what it lacks;
        return those downloaded, decoded, so that the caller need not decode them again."""
        missing = await trio.to_thread.run_sync(self.index.missing_objects, list(ids))
        downloaded: dict[bytes, object] = {}
        for start in range(0, len(missing), OBJECT_BATCH):
            downloaded |= await self._download(kind, missing[start : start + OBJECT_BATCH], sources)
        return downloaded

    async def _download(self, kind: Kind, ids: list[bytes], sources: Sequence[Source]) -> dict[bytes, object]:
        wanted = set(ids)
        downloaded: dict[bytes, object] = {}
        refused: list[str] = []
        for source in sources:
            if not wanted:
                break
            try:
                got, _ = await source.get_objects(sorted(wanted))
                stored = await trio.to_thread.run_sync(self._check_objects, kind, got, wanted)
            except (PeerMisbehaved, ProtocolError) as e:
                self._warn_peer(source, e)
                refused.append(f"peer {source.peer_id[:7]} sent a {kind.name.lower()} object that breaks the rules ({e})")
                continue
            except trio.BrokenResourceError:
                continue
            wanted -= stored.keys()
            downloaded |= stored
        if wanted and refused:
            # The peer's fault, and why: not a mere "missing", which would send the user looking elsewhere.
            raise FetchError("; ".join(refused) + "; refused, and no other connected peer has it")
        if wanted:
            raise FetchError(f"no connected peer has {len(wanted)} of the {kind.name.lower()} objects needed")
        return downloaded

    def _check_objects(self, kind: Kind, got: list[tuple[bytes, bytes]], wanted: set[bytes]) -> dict[bytes, object]:
        rows = []
        decoded = {}
        for oid, data in got:
            if oid not in wanted:
                raise PeerMisbehaved(f"sent object {oid.hex()[:16]}, which was not asked for")
            decoded[oid] = decode(kind, data, oid)
            rows.append((oid, kind, data))
        self.index.put_objects(rows)
        return decoded

    def _warn_peer(self, source: Source, error: Exception) -> None:
        _log.warning("peer %s: %s", source.peer_id, error)

    def _sources(self, spec: FetchSpec, version_id: bytes) -> list[Source]:
        return [s for s, e in self._offers(spec) if e.head == version_id or version_id in e.full]

    async def _fetch_tree(
        self, tree_id: bytes, prefix: tuple[str, ...], matcher, spec: FetchSpec, transfer: Transfer,
        sources: Sequence[Source] | None = None, old_id: bytes | None = None, checked: CheckedDirs | None = None,
    ) -> tuple[int, int, int]:
        """Fetch a directory's manifest objects; return the (bytes, files, entries) it declares below it.

        A subtree met again (the same tree id elsewhere) is not walked again, but
        its entries count again towards the version's bound on entries. `old_id` is
        this directory in a version DEST holds in full: its file entries that are
        unchanged were fetched and checked with it.
        """
        depth = len(prefix)
        seen = transfer.subtrees.get(tree_id)
        if seen is not None and seen[3] > depth:
            seen = None  # checked deeper down: its links may climb too far up here
        found = seen[:3] if seen is not None else await trio.to_thread.run_sync(self.index.checked_tree, tree_id, depth)
        if found is not None:
            _count_entries(transfer, found[2])
            if checked is not None:
                checked.add(tree_id, depth, whole=True)
            return found
        assert transfer.version is not None
        if sources is None:
            sources = self._sources(spec, transfer.version.id)
        await self._ensure(Kind.TREE, [tree_id], sources)
        await self._ensure_pages(Kind.TREE, tree_id, sources)
        entries = await trio.to_thread.run_sync(lambda: list(tree_entries(index_loader(self.index), tree_id)))
        _check_entries(prefix, entries)
        _count_entries(transfer, len(entries))
        below_entries = len(entries)
        old = await trio.to_thread.run_sync(self._tree_by_name, old_id) if old_id is not None else {}
        files = [
            e for e in entries
            if e.type == EntryType.FILE and old.get(e.name) != e and matcher(prefix + (e.name,), False)
        ]
        downloaded = await self._ensure(Kind.FILE, [e.id for e in files], sources)
        decoded = await trio.to_thread.run_sync(self._decode_files, files, downloaded)
        for entry, file in zip(files, decoded):
            if file.level > 0:
                await self._ensure_pages(Kind.FILE, entry.id, sources)
        await trio.to_thread.run_sync(self._check_file_sizes, prefix, files, decoded)
        if checked is not None:
            checked.add(tree_id, depth, whole=False)
        size = sum(e.size for e in entries)
        count = sum(1 for e in entries if e.type == EntryType.FILE)
        for e in entries:
            if e.type == EntryType.DIR and matcher(prefix + (e.name,), True):
                was = old.get(e.name)
                old_dir = was.id if was is not None and was.type == EntryType.DIR else None
                below = await self._fetch_tree(
                    e.id, prefix + (e.name,), matcher, spec, transfer, sources, old_dir, checked
                )
                check_dir_size(prefix + (e.name,), e, below[0])
                count += below[1]
                below_entries += below[2]
        if not spec.partial:
            # With --include the walk depends on the path, so a subtree's result is not reusable.
            # Without it the whole subtree is now stored and checked: later fetches need not walk it.
            transfer.subtrees[tree_id] = (size, count, below_entries, depth)
            await trio.to_thread.run_sync(self.index.add_checked_tree, tree_id, size, count, below_entries, depth)
            if checked is not None:
                checked.add(tree_id, depth, whole=True)
        return size, count, below_entries

    def _tree_by_name(self, tree_id: bytes) -> dict[str, TreeEntry]:
        return {e.name: e for e in tree_entries(index_loader(self.index), tree_id)}

    def _decode_files(self, files: list[FileEntry], decoded: dict[bytes, object] | None = None) -> list[FileObject]:
        """The FILE objects of `files`, taken from `decoded` (those just downloaded) or else
        read, a query per OBJECT_BATCH files rather than one per file, and decoded."""
        decoded = decoded or {}
        out = []
        for start in range(0, len(files), OBJECT_BATCH):
            batch = [e for e in files[start : start + OBJECT_BATCH] if e.id not in decoded]
            found = self.index.get_objects([e.id for e in batch])
            for e in files[start : start + OBJECT_BATCH]:
                if e.id in decoded:
                    out.append(decoded[e.id])
                    continue
                kind, data = found.get(e.id, (None, b""))
                if kind != Kind.FILE:
                    raise ProtocolError(f"file object {e.id.hex()[:16]} is not in the index")
                out.append(decode_file(data, e.id))
        return out  # type: ignore[return-value]

    def _check_file_sizes(self, prefix: tuple[str, ...], files: list[FileEntry], decoded: list[FileObject]) -> None:
        """Every size a file declares must be what its chunk list holds, before any space is allocated for it."""
        load = index_loader(self.index)
        for entry, file in zip(files, decoded):
            path = "/".join(prefix + (entry.name,))
            if file.size != entry.size:
                raise IntegrityError(f"{path}: the tree says {entry.size} bytes, its content object {file.size}")
            if file.level > 0 and sum(ref.size for ref in file_chunks(load, file)) != file.size:
                raise IntegrityError(f"{path}: its chunk list does not add up to its {file.size} bytes")

    async def _ensure_pages(self, kind: Kind, object_id: bytes, sources: Sequence[Source]) -> None:
        """Fetch the pages below a FILE or TREE object, level by level.

        Objects are read in worker threads: a fetch's writer may hold the index for
        a while, and the event loop must not wait for it."""
        obj = await trio.to_thread.run_sync(self._decoded, kind, object_id)
        assert isinstance(obj, (FileObject, TreeNode))
        page_kind = Kind.CHUNKS if kind == Kind.FILE else Kind.TREE
        level, refs = obj.level, list(obj.entries)
        while level > 0:
            ids = [r.id for r in refs]  # type: ignore[union-attr]
            await self._ensure(page_kind, ids, sources)
            level -= 1
            if level == 0:
                break
            refs = await trio.to_thread.run_sync(self._page_entries, page_kind, ids, level)

    def _decoded(self, kind: Kind, object_id: bytes) -> object:
        return decode(kind, self.index.get_object(object_id)[1], object_id)  # type: ignore[index]

    def _page_entries(self, kind: Kind, ids: list[bytes], level: int) -> list:
        """The entries of the stored pages `ids`, each of which must be at `level`."""
        entries: list = []
        for page_id in ids:
            page = self._decoded(kind, page_id)
            if page.level != level:  # type: ignore[attr-defined]
                raise IntegrityError(f"page {page_id.hex()[:16]} is at the wrong level")
            entries.extend(page.entries)  # type: ignore[attr-defined]
        return entries

    # --- planning and assembly -------------------------------------------------

    async def _walk_manifest(self, run: _Run, record: VersionRecord, matcher) -> None:
        """Fetch and check the manifest ahead of the planner, then the version as a whole."""
        try:
            size, files, _ = await self._fetch_tree(record.root, (), matcher, run.spec, run.transfer, checked=run.checked)
            _check_totals(run.transfer, record, size, files)
        except Exception:
            # DEST was empty and nothing was renamed into it: take the folders and links made so far away again.
            await trio.to_thread.run_sync(_clear_except_partial, run.dest)
            raise
        run.checked.finish()
        run.notify()

    async def _produce(self, run: _Run, record: VersionRecord, matcher) -> None:
        plan = self._plan(run, record.root, run.old_root, matcher)
        batch = _NetBatch()
        while True:
            actions, prepared, waiting = await trio.to_thread.run_sync(self._plan_some, run, plan)
            for task, needed, done in prepared:
                batch = await self._queue_needed(run, task, needed, done, batch)
                task.listed = True
                run.account(task, 0)
            for action in actions:
                if isinstance(action, _FileTask) and action.entry.size > SMALL_FILE:
                    batch = await self._feed_file(run, action, batch)
            if waiting is not None:
                await run.checked.wait(waiting.tree_id, waiting.depth)
            elif not actions:
                break
            # Files complete before the manifest is checked wait to be installed; so many, no more.
            while len(run.complete) >= MAX_UNINSTALLED and not run.checked.complete.is_set():
                await run.changed.wait()
        if batch:
            await run.put(batch)

    def _plan_some(
        self, run: _Run, plan: Iterator["_FileTask | _Wait | None"]
    ) -> tuple[list["_FileTask | None"], list[tuple[_FileTask, list[tuple[int, Ref]], int]], "_Wait | None"]:
        """The next PLAN_STEP actions of `plan`, with the small files among them prepared,
        in one worker-thread call: each call waits for the busy event loop to take its result.
        Stops early where the plan waits for the manifest walk."""
        actions: list[_FileTask | None] = []
        waiting = None
        for action in plan:
            if isinstance(action, _Wait):
                waiting = action
                break
            actions.append(action)
            if len(actions) >= PLAN_STEP:
                break
        small = [a for a in actions if isinstance(a, _FileTask) and a.entry.size <= SMALL_FILE]
        return actions, self._prepare_small(run, small) if small else [], waiting

    def _prepare_small(self, run: _Run, tasks: list[_FileTask]) -> list[tuple[_FileTask, list[tuple[int, Ref]], int]]:
        """Plan many small files in one worker-thread call, with one index query for all their
        FILE objects and one for which of their chunks are here: per file, the thread hops
        and queries would dominate."""
        load = index_loader(self.index)
        plans = []
        for task, file in zip(tasks, self._decode_files([task.entry for task in tasks])):
            chunks = list(_offsets(file_chunks(load, file)))
            task.locations = [(ref.id, offset, ref.size) for offset, ref in chunks]
            plans.append(chunks)
        local = self.index.chunks_present([ref.id for chunks in plans for _, ref in chunks])
        return [(task, *self._satisfy_locally(run, task, chunks, local)) for task, chunks in zip(tasks, plans)]

    def _chunks_of(self, task: _FileTask) -> Iterator[Ref]:
        file = decode_file(self.index.get_object(task.entry.id)[1], task.entry.id)  # type: ignore[index]
        return file_chunks(index_loader(self.index), file)

    async def _queue_needed(
        self, run: _Run, task: _FileTask, needed: list[tuple[int, Ref]], done: int, batch: _NetBatch
    ) -> _NetBatch:
        run.transfer.bytes_reused += done
        run.account(task, done)
        for offset, ref in needed:
            batch.add(task, offset, ref)
            if len(batch) >= BATCH_CHUNKS:
                await run.put(batch)
                batch = _NetBatch()
        return batch

    async def _feed_file(self, run: _Run, task: _FileTask, batch: _NetBatch) -> _NetBatch:
        chunks = _offsets(await trio.to_thread.run_sync(self._chunks_of, task))
        while True:
            needed, done = await trio.to_thread.run_sync(self._next_segment, run, task, chunks)
            if not needed and not done:
                break
            batch = await self._queue_needed(run, task, needed, done, batch)
        task.listed = True
        run.account(task, 0)
        return batch

    def _next_segment(
        self, run: _Run, task: _FileTask, chunks: Iterator[tuple[int, Ref]]
    ) -> tuple[list[tuple[int, Ref]], int]:
        segment = _take(chunks, BATCH_CHUNKS)
        return self._satisfy_locally(run, task, segment) if segment else ([], 0)

    def _satisfy_locally(
        self, run: _Run, task: _FileTask, segment: list[tuple[int, Ref]], local: set[bytes] | None = None
    ) -> tuple[list[tuple[int, Ref]], int]:
        """Write what the partial file or the local index already has; return (still needed, bytes done).

        `local`, when given, holds at least those of the segment's chunks that the index holds.
        """
        started = time.perf_counter()
        try:
            return self._take_local(run.files, task, segment, local)
        finally:
            run.transfer.busy.disk_read += time.perf_counter() - started

    def _take_local(
        self, files: FilePool, task: _FileTask, segment: list[tuple[int, Ref]], local: set[bytes] | None
    ) -> tuple[list[tuple[int, Ref]], int]:
        needed = []
        done = 0
        if not task.fresh:
            # A partial file left by an interrupted fetch: keep every chunk that verifies.
            with files.use(task) as fd:
                for offset, ref in segment:
                    present = chunkio.read_fd_at(fd, offset, ref.size)
                    if present is not None and chunk_id(present) == ref.id:
                        done += ref.size
                    else:
                        needed.append((offset, ref))
            segment = needed
            needed = []
        if local is None:
            local = self.index.chunks_present([ref.id for _, ref in segment])
        for offset, ref in segment:
            data = chunkio.read_chunk(self.index, ref.id) if ref.id in local else None
            if data is None:
                needed.append((offset, ref))
            else:
                with files.use(task) as fd:
                    os.pwrite(fd, data, offset)
                done += ref.size
        return needed, done

    def _old_root(self, spec: FetchSpec, dest: Path, selection: bytes) -> tuple[bytes | None, bool]:
        """The root DEST holds from an earlier fetch or share, and whether its unchanged
        entries hold exactly what this fetch selects (and so need no second look)."""
        state = self.index.dest_state(str(dest))
        if state is not None and state[0] == spec.name:
            old_root, old_selection = state[2], state[3]
        else:
            known = self.index.dataset(spec.name)
            row = self.index.version(known[1]) if known and known[0] == str(dest) and known[1] else None
            if row is None:
                return None, True
            old_root, old_selection = row.root, FULL
        # An --include fetch only adds paths, so anything complete before serves it.
        reuse = old_selection is not None and (
            old_selection == selection or (old_selection == FULL and bool(spec.include))
        )
        return old_root, reuse

    def _plan(self, run: _Run, root: bytes, old_root: bytes | None, matcher) -> Iterator["_FileTask | None"]:
        """Bring DEST's tree in line with `root`, yielding a task for every file to assemble.

        Runs in a worker thread, a few steps at a time.
        """
        load = index_loader(self.index)
        guard = Overwrite(run.dest)
        if run.spec.keep_local:
            assert run.transfer.version is not None
            guard = KeepLocal(self.index, run.dest, run.transfer.version.seq, run.transfer.conflicts.add)
        yield from self._plan_dir(run, load, (), root, old_root, matcher, guard, False)

    def _plan_dir(
        self, run: _Run, load, prefix: tuple[str, ...], tree_id: bytes, old_id: bytes | None, matcher, guard: Overwrite,
        checked: bool,
    ):
        """`checked`: the walk has already checked this directory's whole subtree."""
        while not checked:
            state = run.checked.state(tree_id, len(prefix))
            if state is None:
                yield _Wait(tree_id, len(prefix))
            else:
                checked = state
                break
        dest = run.dest
        if tree_id == old_id and run.reuse_unchanged and not guard.repairs:
            # Unchanged subtree of an update that keeps local changes: nothing to look at.
            for parts, entry in _walk_files(load, tree_id, prefix):
                if matcher(parts, False):
                    _count_kept(run.transfer, entry)
                    yield None
            return
        new = {e.name: e for e in tree_entries(load, tree_id)}
        if old_id == tree_id:
            old = new
        else:
            old = {e.name: e for e in tree_entries(load, old_id)} if old_id is not None else {}
        # Without --include DEST ends up holding exactly the selection; with it only matching paths change.
        exact = not run.spec.include
        for name, gone in old.items():
            parts = prefix + (name,)
            replaced = name in new and new[name].type == gone.type
            selected = matcher(parts, gone.type == EntryType.DIR)
            if not replaced and (selected or exact):
                guard.remove(load, parts, gone)
            elif exact and not selected:
                prune(dest, load, parts, gone)
        ensure_dir(dest, prefix)
        # A step of its own: a plan of many folders and few files must still
        # return to the event loop, where the fetch can be cancelled, often.
        yield None
        # The stat records of this directory, read once rather than once per file;
        # and its names, listed once: a file that is not there needs no lstat.
        recorded: dict[str, CachedFile] | None = None
        present: set[str] | None = None
        folder = ""
        for name, entry in new.items():
            parts = prefix + (name,)
            if not matcher(parts, entry.type == EntryType.DIR):
                continue
            previous = old.get(name)
            if guard.left_deleted(parts, previous, entry):
                _count_kept(run.transfer, entry)
                yield None
            elif entry.type == EntryType.DIR:
                prev_id = previous.id if previous is not None and previous.type == EntryType.DIR else None
                guard.make_way(parts, previous, entry)
                yield from self._plan_dir(run, load, parts, entry.id, prev_id, matcher, guard, checked)
            elif entry.type == EntryType.SYMLINK:
                guard.make_way(parts, previous, entry)
                place_symlink(dest, parts, entry.target)
            elif run.reuse_unchanged and previous == entry and not guard.repairs:
                # Unchanged since the version DEST holds, and local changes are kept.
                _count_kept(run.transfer, entry)
                yield None
            else:
                if present is None:
                    recorded = self.index.cached_files(str(dest), "/".join(prefix))
                    folder = os.path.join(dest, *prefix)
                    present = set(os.listdir(folder))
                if name in present and self._already_there(
                    dest, parts, entry, recorded, rehash=run.spec.verify, path=os.path.join(folder, name)
                ):
                    _count_kept(run.transfer, entry)
                    yield None
                else:
                    guard.make_way(parts, previous, entry)
                    yield self._start_file(run, parts, entry)

    def _already_there(
        self, dest: Path, parts: tuple[str, ...], entry: FileEntry, recorded: dict[str, CachedFile] | None = None,
        *, rehash: bool = False, path: str | None = None,
    ) -> bool:
        """Whether DEST holds `entry` at `parts` (`path`, when the caller has it): its stat matches
        what the index recorded for that content (the cheap check), or else, or with `rehash`,
        its bytes hash to it. An update checks every file this way, so it spares pathlib."""
        path = path or os.path.join(dest, *parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return False
        if recorded is None:
            recorded = self.index.cached_files(str(dest), "/".join(parts[:-1]))
        row = recorded.get(parts[-1])
        current = FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if row is not None and row.stat == current and row.file_id is not None and not rehash:
            if row.file_id != entry.id:
                return False
            moded = _set_mode(path, st, entry)
            if moded is not None:
                self.index.finish_file(row.row, moded, entry.id)
            return True
        # Unknown to the index, or its record unfinished (a crash between the rename and
        # the end of the record): check the bytes.
        file = decode_file(self.index.get_object(entry.id)[1], entry.id)  # type: ignore[index]
        if file_id_of(Path(path), file.params) != entry.id:
            return False
        self._record_file(dest, parts, entry, _set_mode(path, st, entry) or current)
        return True

    def _start_file(self, run: _Run, parts: tuple[str, ...], entry: FileEntry) -> _FileTask:
        partial = run.partial_dir / partial_name(parts, entry.id)
        fresh = not (run.resuming and os.path.lexists(partial))
        task = _FileTask(parts, entry, partial, entry.size, fresh)
        if not fresh:
            # A new file needs no ftruncate (which costs a journal update on ext4):
            # its chunks' writes give it its size.
            with run.files.use(task) as fd:
                os.ftruncate(fd, entry.size)
        run.open_tasks.add(task)
        return task

    def _install_files(self, dest: Path, tasks: list[_FileTask], files: FilePool) -> None:
        """Move complete, verified files into place and let the index serve them."""
        records = []
        for task in tasks:
            with files.use(task) as fd:
                stat = self._install(dest, task, fd)
            files.close(task)
            if task.entry.size > SMALL_FILE:
                self._record_file(dest, task.parts, task.entry, stat)
                continue
            assert task.locations is not None, "small files are planned by _prepare_small"
            records.append(FileRecord("/".join(task.parts[:-1]), task.parts[-1], stat, task.entry.id, task.locations, []))
        self.index.record_files(str(dest), records)

    @staticmethod
    def _install(dest: Path, task: _FileTask, fd: int) -> FileStat:
        mode = task.entry.permissions()
        if mode != DEFAULT_FILE_MODE:
            # Otherwise the mode is already right: partial files are created 0o644 less the umask.
            os.fchmod(fd, mode & ~UMASK)
        target = dest.joinpath(*task.parts)
        try:
            os.replace(task.partial, target)
        except IsADirectoryError:
            # A real directory where the file goes (a rename replaces a symlink itself).
            shutil.rmtree(target)
            os.replace(task.partial, target)
        # Written back while the fetch goes on, so the flush at its end has little left.
        start_writeback(fd)
        # After the rename, which changes the inode's ctime: the stat a later fetch will see.
        st = os.fstat(fd)
        return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def _record_file(self, dest: Path, parts: tuple[str, ...], entry: FileEntry, stat: FileStat) -> None:
        rel = "/".join(parts[:-1])
        row = self.index.begin_file(str(dest), rel, parts[-1], stat)
        file = decode_file(self.index.get_object(entry.id)[1], entry.id)  # type: ignore[index]
        batch: list[tuple[bytes, int, int]] = []
        for offset, ref in _offsets(file_chunks(index_loader(self.index), file)):
            batch.append((ref.id, offset, ref.size))
            if len(batch) >= 4096:
                self.index.add_locations(row, batch)
                batch = []
        self.index.add_locations(row, batch)
        self.index.finish_file(row, stat, entry.id)

    def _complete(
        self, dest: Path, version_id: bytes, record: VersionRecord, data: bytes, spec: FetchSpec, selection: bytes
    ) -> None:
        # One syncfs for the whole fetch instead of an fsync per file: the data is
        # on disk before the version is recorded as present here.
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            sync_filesystem(fd)
        finally:
            os.close(fd)
        if not spec.partial:
            row = VersionRow(version_id, record.name, record.seq, record.time, record.size, record.files, record.root)
            known = self.index.dataset(spec.name)
            if known is None or known[0] is None or known[0] == str(dest):
                self.index.add_version(row, data, path=str(dest))
            else:
                # Another checkout: the dataset's own folder, and the head it offers, stay.
                self.index.store_version(row, data)
        else:
            self.index.unlist_dataset(spec.name, str(dest))
        self.index.set_dest_state(str(dest), spec.name, version_id, record.root, None if spec.include else selection)
        shutil.rmtree(dest / PARTIAL_DIR, ignore_errors=True)

    # --- peers ------------------------------------------------------------------

    async def _supervise(self, run: _Run, nursery: trio.Nursery) -> None:
        """Start workers for every peer that serves the version, as peers come and go."""
        while True:
            for source in self._sources(run.spec, run.version_id):
                peer = source.peer_id
                # A peer whose connection broke is welcome back on a new session.
                if peer not in run.workers and peer not in run.dropped and run.lost.get(peer) is not source:
                    run.workers[peer] = WINDOW_PER_PEER
                    run.transfer.peers.setdefault(peer, PeerStats()).dropped = None
                    for _ in range(WINDOW_PER_PEER):
                        nursery.start_soon(self._worker, run, source)
                    run.notify()
            if not run.producing and not run.queue and not run.outstanding:
                return
            if run.workers:
                run.last_source_seen = time.monotonic()
            with trio.move_on_after(1.0):
                await _first_of(run.changed.wait, self.peers.wait_for_change)
            if not run.workers and time.monotonic() - run.last_source_seen > run.spec.timeout:
                if not run.transfer.peers:
                    what = f"{run.spec.name}@{run.spec.version}" if run.spec.version else run.spec.name
                    raise NoPeer(
                        f"no connected peer serves {what} in full and this machine holds only part of it;"
                        f" waited {run.spec.timeout:g}s"
                    )
                why = "; ".join(
                    f"{peer[:7]}: {stats.dropped}" for peer, stats in run.transfer.peers.items() if stats.dropped
                )
                raise NoPeer(
                    f"every peer serving {run.spec.name} left or failed ({why}); waited {run.spec.timeout:g}s for another"
                )

    async def _worker(self, run: _Run, source: Source) -> None:
        peer = source.peer_id
        try:
            while True:
                batch = await run.take(peer)
                if batch is None:
                    return
                try:
                    with trio.CancelScope() as scope:
                        # A peer that goes silent on a request is given up after the fetch's timeout.
                        scope.deadline = trio.current_time() + run.spec.timeout
                        batch.requests[peer] = scope

                        def arrived(cid: bytes, data: bytes) -> None:
                            # Moved only once a second has passed: every move of a
                            # deadline re-files it in trio's deadline heap.
                            deadline = trio.current_time() + run.spec.timeout
                            if deadline - scope.deadline > 1.0:
                                scope.deadline = deadline
                            run.deliver(batch, peer, cid, data)

                        missing = await source.get_chunks(sorted(batch.pending), arrived)
                    if scope.cancelled_caught:
                        if batch.pending:
                            await run.drained(batch)
                            self._drop(run, peer, f"sent nothing for {run.spec.timeout:g}s")
                            run.release(batch, peer)
                            return
                        missing = []  # another peer delivered the rest of this batch first
                except (PeerMisbehaved, ProtocolError) as e:
                    await run.drained(batch)
                    self._drop(run, peer, str(e))
                    run.release(batch, peer)
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as e:
                    await run.drained(batch)
                    self._lose(run, source, f"connection lost: {e}")
                    run.release(batch, peer)
                    return
                await run.drained(batch)
                if peer in batch.liars:
                    self._drop(run, peer, "sent chunks whose bytes do not match their ids")
                    run.release(batch, peer)
                    return
                if missing and batch.pending:
                    batch.refused_by.add(peer)
                    live = set(run.workers) - run.dropped
                    if live <= batch.refused_by:
                        raise FetchError(
                            f"no connected peer has {len(batch.pending)} chunks of {run.spec.name}; "
                            "the version may be incomplete on every peer"
                        )
                run.release(batch, peer)
        finally:
            remaining = run.workers.get(peer, 0) - 1
            if remaining <= 0:
                run.workers.pop(peer, None)
            else:
                run.workers[peer] = remaining
            run.notify()

    def _lose(self, run: _Run, source: Source, reason: str) -> None:
        """The session broke: stop using it, but take the peer back if it reconnects."""
        if run.lost.get(source.peer_id) is not source:
            run.lost[source.peer_id] = source
            run.transfer.peers[source.peer_id].dropped = reason
            _log.info("fetch %s: lost peer %s: %s", run.spec.name, source.peer_id, reason)

    def _drop(self, run: _Run, peer: str, reason: str) -> None:
        """The peer misbehaved: never ask it again during this fetch."""
        if peer not in run.dropped:
            run.dropped.add(peer)
            run.transfer.peers[peer].dropped = reason
            run.warnings.append(f"dropped peer {peer}: {reason}")
            _log.warning("fetch %s: dropped peer %s: %s", run.spec.name, peer, reason)


async def _first_of(*waits: Callable[[], Awaitable[None]]) -> None:
    """Return as soon as any of `waits` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(_then_cancel, wait, nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


def _is_empty(dest: Path) -> bool:
    try:
        with os.scandir(dest) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True


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


def _set_mode(path: str, st: os.stat_result, entry: FileEntry) -> FileStat | None:
    """Give a file DEST already holds the version's permission bits; its new stat if they changed."""
    wanted = entry.permissions() & ~UMASK
    if stat.S_IMODE(st.st_mode) == wanted:
        return None
    os.chmod(path, wanted, follow_symlinks=False)
    st = os.lstat(path)
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _check_totals(transfer: Transfer, record: VersionRecord, size: int, files: int) -> None:
    if (size, files) != (record.size, record.files):
        assert transfer.version is not None
        raise IntegrityError(
            f"version {transfer.version.id.hex()[:12]} declares {record.size} bytes in {record.files} files,"
            f" its tree holds {size} in {files}"
        )


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


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _named_failure(exc: BaseException, dest: Path) -> ShoalError | None:
    """The one error to report for `exc`, a failure of the fetch into `dest`; None to let it through."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)]
    for leaf in leaves:
        if isinstance(leaf, OSError) and leaf.errno is not None:
            return _system_failure(leaf, dest)
    if leaves and all(isinstance(e, ShoalError) for e in leaves):
        return leaves[0]  # type: ignore[return-value]
    return None


def _system_failure(error: OSError, dest: Path) -> FetchError:
    where = error.filename or dest
    resume = "; then run the same fetch again: it resumes from what was already verified"
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"no space left on the disk of {dest}; free some space{resume}")
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return FetchError(
            f"the daemon ran out of open files ({error.strerror}); raise the limit (`ulimit -n 4096` before"
            f" `shoal daemon start`){resume}"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return FetchError(f"permission denied writing {where}; make {dest} writable for the daemon's user{resume}")
    if error.errno == errno.EROFS:
        return FetchError(f"{dest} is on a read-only filesystem; fetch into a writable folder")
    return FetchError(f"the fetch into {dest} failed: {error.strerror} ({where}){resume}")


#: Entries a version may hold besides one per file: directories and links are
#: cheap to declare, so without a bound a few shared tree objects could name
#: billions of directories (SPEC.md, "Fetching").
EXTRA_ENTRIES = 65536


def _check_prefix(prefix: str) -> None:
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"version {prefix!r} is neither a number, 'latest', nor a hex id prefix of 4+ digits")


def _count_entries(transfer: Transfer, n: int) -> None:
    assert transfer.version is not None
    transfer.entries_seen += n
    if transfer.entries_seen > 2 * transfer.version.files + EXTRA_ENTRIES:
        raise IntegrityError(
            f"version {transfer.version.id.hex()[:12]} names more entries than its {transfer.version.files} files allow"
        )


def _check_entries(prefix: tuple[str, ...], entries: list[TreeEntry]) -> None:
    """Refuse what a directory of a received version may not hold."""
    for entry in entries:
        if not prefix and entry.name == PARTIAL_DIR:
            raise IntegrityError(f"the version has an entry named {PARTIAL_DIR}, a name shoal reserves")
        if entry.type == EntryType.SYMLINK:
            try:
                check_symlink_target(entry.target, len(prefix))
            except ProtocolError as e:
                raise IntegrityError(f"{'/'.join(prefix + (entry.name,))}: {e}") from None


def _count_kept(transfer: Transfer, entry: TreeEntry) -> None:
    transfer.bytes_done += entry.size
    transfer.files_done += 1


def _take(iterator: Iterator, n: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _offsets(refs: Iterator[Ref]) -> Iterator[tuple[int, Ref]]:
    offset = 0
    for ref in refs:
        yield offset, ref
        offset += ref.size


def _walk_files(load, tree_id: bytes, prefix: tuple[str, ...]):
    for entry in tree_entries(load, tree_id):
        parts = prefix + (entry.name,)
        if entry.type == EntryType.DIR:
            yield from _walk_files(load, entry.id, parts)
        elif entry.type == EntryType.FILE:
            yield parts, entry


