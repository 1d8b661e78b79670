"""The local datasets: sharing folders as signed versions, listing, verifying.

Sharing never copies the user's bytes: the index records which chunk lives
where in their files, and every read for serving re-checks the hash.
"""

import os
import shlex
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal.daemon.library import history, scanner
from shoal.daemon.library.audience import Audiences
from shoal.daemon.library.ignore import IgnoreRules, load_ignore
from shoal.daemon.model import FULL, VersionInfo
from shoal.daemon.store.index import FileRecord, Index, RetainedChunks, VersionRow
from shoal.daemon.store.loader import index_loader
from shoal.errors import HomeFolder, ShareError, UnknownDataset
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.chunking import DEFAULT_PARAMS, ChunkingParams
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import sign_version, walk_tree
from shoal.protocol.format.objects import EntryType, Subset, VersionRecord, decode_version, encode_with_id, stored_file
from shoal.protocol.format.paths import check_dataset_name

#: Files hashed per worker-thread call, and recorded per index transaction: a
#: commit costs ~2 ms, 8 us per file at 256 files and 3 us at 1024.
_BATCH_FILES = 1024
_BATCH_BYTES = 64 * 1024 * 1024
#: A batch whose files average less than this is hashed by the single small-file worker.
_LARGE_FILE = 1024 * 1024

#: Words a version's message from the paths it changes against the head, in path order
#: (a watch counts them: the folder may have changed after its events were counted).
Describe = Callable[[Iterator[str]], str]


@dataclass(frozen=True, slots=True)
class ShareProgress:
    files_done: int
    bytes_done: int
    files_total: int | None
    bytes_total: int | None
    path: str


@dataclass(frozen=True, slots=True)
class ShareResult:
    version: VersionInfo
    created: bool
    new_bytes: int
    files_scanned: int
    files_rehashed: int
    warnings: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "version": self.version.to_json(),
            "created": self.created,
            "new_bytes": self.new_bytes,
            "files_scanned": self.files_scanned,
            "files_rehashed": self.files_rehashed,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    path: str | None
    head: VersionInfo
    versions: int
    #: The peer ids chosen to see it; None: every trusted peer.
    audience: tuple[str, ...] | None = None
    #: Every folder a fetch left this dataset in, each at its own version.
    checkouts: tuple["Checkout", ...] = ()
    #: Whether its folder is there: one deleted by hand is not offered to peers
    #: (unless the pack store keeps the head) until a fetch or share restores it.
    present: bool = True

    def to_json(self) -> dict:
        return {
            "name": self.name, "path": self.path, "head": self.head.to_json(), "versions": self.versions,
            "audience": list(self.audience) if self.audience is not None else None,
            "checkouts": [c.to_json() for c in self.checkouts], "present": self.present,
        }


@dataclass(frozen=True, slots=True)
class Checkout:
    """A folder holding a fetched version of a dataset (or, when not `whole`, part of it)."""

    path: str
    version: VersionInfo
    whole: bool

    def to_json(self) -> dict:
        return {"path": self.path, "version": self.version.to_json(), "whole": self.whole}


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    path: str
    reason: str


#: Problems one verify report lists; beyond them only their number.
MAX_VERIFY_REPORTED = 1000


@dataclass(frozen=True, slots=True)
class VerifyReport:
    name: str
    version: VersionInfo
    path: str
    files_checked: int
    #: The first MAX_VERIFY_REPORTED problems: a deleted folder of a million files
    #: must not make a million-line report.
    problems: tuple[VerifyProblem, ...]
    problems_total: int
    #: What to run to bring the folder back to the version (or, for the publisher's
    #: own folder, to publish what it holds now).
    repair: str

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version.to_json(),
            "path": self.path,
            "files_checked": self.files_checked,
            "ok": not self.problems,
            "problems_total": self.problems_total,
            "repair": self.repair,
            "problems": [{"path": p.path, "reason": p.reason} for p in self.problems],
        }


@dataclass(slots=True)
class _ShareRun:
    """What one share learns while it walks the folder."""

    root: Path
    params: ChunkingParams
    on_progress: Callable[[ShareProgress], None] | None
    ignore: IgnoreRules | None = None
    files_scanned: int = 0
    files_rehashed: int = 0
    bytes_rehashed: int = 0
    warnings: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)
    #: Files kept at their entry in the head version's tree `previous`, by directory.
    hold: dict[str, frozenset[str]] = field(default_factory=dict)
    previous: bytes | None = None


class Library:
    """Datasets shared from this machine."""

    def __init__(self, index: Index, signer: Ed25519PrivateKey, home: Path) -> None:
        self.index = index
        self.audiences = Audiences(index)
        self._home = home.resolve()
        self._signer = signer
        self._author = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        # Large files are hashed in C with the GIL released, so two threads use
        # both cores; small files are mostly Python, where a second thread only
        # fights the first for the GIL (measured: 105 vs 68 us per 16 KiB file).
        self._workers = trio.CapacityLimiter(max(2, min(4, os.cpu_count() or 2)))
        self._small_files_worker = trio.CapacityLimiter(1)
        self._share_locks: dict[str, trio.Lock] = {}

    @classmethod
    def open(cls, home: Path, signer: Ed25519PrivateKey, retained: RetainedChunks | None = None) -> "Library":
        """The library of `home`, its index falling back on `retained` for chunks no file holds."""
        return cls(Index(home / "index.sqlite", retained), signer, home)

    def close(self) -> None:
        self.index.close()

    # --- share -----------------------------------------------------------------

    async def share(
        self,
        path: Path,
        *,
        name: str | None = None,
        message: str = "",
        describe: Describe | None = None,
        on_progress: Callable[[ShareProgress], None] | None = None,
        hold: Collection[str] = (),
    ) -> ShareResult:
        """Record the folder at `path` as a new version of dataset `name`, if it changed.

        With `describe`, the message is worded from the paths the version changes, or is
        `message` where the head's manifest is not all stored here to compare with.

        Each file in `hold` (a path relative to the folder) keeps the entry the head version has
        for it, or stays out if the head has none: a watch publishes a file still being written
        in its last settled state.
        """
        root = self._check_root(path)
        self.check_outside_home(root)
        name = self._check_name(name or root.name, root)
        lock = self._share_locks.setdefault(name, trio.Lock())
        async with lock:
            run = _ShareRun(root, DEFAULT_PARAMS, on_progress, load_ignore(root))
            if hold:
                run.hold = scanner.held_by_dir(hold)
                head = self._head_record(name)
                run.previous = head[1].root if head else None
            try:
                tree_id, size, files, _ = await self._scan_dir(run, "", 0)
            except PermissionError as e:
                raise ShareError(f"cannot read {e.filename}: permission denied") from None
            await trio.to_thread.run_sync(self.index.drop_dirs_except, str(root), run.visited)
            version, created = await trio.to_thread.run_sync(
                self._commit, name, root, tree_id, size, files, message, describe
            )
        return ShareResult(
            version, created, run.bytes_rehashed if created else 0, run.files_scanned, run.files_rehashed,
            tuple(run.warnings),
        )

    @staticmethod
    def _check_root(path: Path) -> Path:
        try:
            root = path.resolve(strict=True)
        except FileNotFoundError:
            raise ShareError(
                f"{path} does not exist; check the path (a folder is shared with `shoal share PATH --name NAME`),"
                " or see what is shared here already with `shoal ls`"
            ) from None
        except OSError as e:
            raise ShareError(f"cannot open {path}: {e.strerror}") from None
        if not root.is_dir():
            raise ShareError(f"{path} is not a directory; share the folder that holds it")
        if not os.access(root, os.R_OK | os.X_OK):
            raise ShareError(f"cannot read {path}: permission denied")
        return root

    def check_outside_home(self, root: Path) -> None:
        """Refuse a folder that is, holds or lies inside the home: it holds the daemon's private key."""
        home = self._home
        if root == home:
            where = "is"
        elif root in home.parents:
            where = "holds"
        elif home in root.parents:
            where = "lies inside"
        else:
            return
        raise HomeFolder(
            f"{root} {where} shoal's home {home}, which holds this daemon's private key; "
            "share a folder outside it"
        )

    def _check_name(self, name: str, root: Path) -> str:
        try:
            check_dataset_name(name)
        except ProtocolError as e:
            raise ShareError(f"{e}; pass --name") from None
        known = self.index.dataset(name)
        if known is not None and known[0] is not None and known[0] != str(root):
            raise ShareError(f"dataset {name!r} is already shared from {known[0]}; pick another --name")
        return name

    async def _scan_dir(self, run: _ShareRun, rel: str, depth: int) -> tuple[bytes, int, int, bool]:
        """Scan one directory and below; return (tree id, size, files, whether its tree changed)."""
        try:
            scan = await trio.to_thread.run_sync(scanner.list_dir, self.index, run.root, rel, depth, run.ignore)
        except PermissionError:
            if depth == 0:
                raise
            run.warnings.append(f"skipped unreadable directory {rel}")
            raise _Skip from None
        run.visited.append(rel)
        run.warnings.extend(scan.warnings)
        if rel in run.hold:
            await trio.to_thread.run_sync(scanner.hold, self.index, scan, run.previous, run.hold[rel])
        for entry in list(scan.entries):
            if entry.type == EntryType.DIR:
                try:
                    sub = scanner.join(rel, entry.name)
                    entry.ref, entry.size, entry.files, entry.changed = await self._scan_dir(run, sub, depth + 1)
                except _Skip:
                    scan.entries.remove(entry)
                    scan.complete = False
        if not scan.unchanged:
            await self._hash_changed(run, scan)
        run.files_scanned += scanner.file_count(scan)
        reused = scanner.reused_tree(scan)
        if reused is not None:
            # An unchanged re-share is mostly such directories: no thread hop for them.
            return *reused, False
        tree_id, size, files = await trio.to_thread.run_sync(scanner.build_tree, self.index, run.root, scan)
        return tree_id, size, files, tree_id != scan.previous_tree

    async def _hash_changed(self, run: _ShareRun, scan: scanner.DirScan) -> None:
        todo = [e for e in scan.entries if e.type == EntryType.FILE and e.ref is None]
        failed: list[scanner.ScanEntry] = []
        async with trio.open_nursery() as nursery:
            for batch in _batches(todo):
                nursery.start_soon(self._hash_batch, run, scan.rel, batch, failed)
        for entry in failed:
            scan.entries.remove(entry)
            scan.complete = False

    async def _hash_batch(
        self, run: _ShareRun, rel: str, batch: list[scanner.ScanEntry], failed: list[scanner.ScanEntry]
    ) -> None:
        mostly_small = sum(e.size for e in batch) < len(batch) * _LARGE_FILE
        limiter = self._small_files_worker if mostly_small else self._workers
        errors = await trio.to_thread.run_sync(self._hash_files, run, rel, batch, limiter=limiter)
        for entry, error in errors:
            run.warnings.append(error)
            failed.append(entry)
        done = [e for e in batch if e.ref is not None]
        run.files_rehashed += len(done)
        run.bytes_rehashed += sum(e.size for e in done)
        if run.on_progress is not None and done:
            run.on_progress(ShareProgress(run.files_rehashed, run.bytes_rehashed, None, None, scanner.join(rel, done[-1].name)))

    def _hash_files(self, run: _ShareRun, rel: str, batch: list[scanner.ScanEntry]) -> list[tuple[scanner.ScanEntry, str]]:
        """Hash a batch of one directory's files and record the small ones in one transaction."""
        try:
            dir_fd = scanner.open_dir(run.root, rel)
        except OSError as e:
            why = "it disappeared during the scan" if isinstance(e, FileNotFoundError) else e.strerror
            return [(entry, f"skipped {scanner.join(rel, entry.name)}: {why}") for entry in batch]
        try:
            records, errors = self._hash_each(run, rel, batch, dir_fd)
        finally:
            os.close(dir_fd)
        self.index.record_files(str(run.root), records)
        return errors

    def _hash_each(
        self, run: _ShareRun, rel: str, batch: list[scanner.ScanEntry], dir_fd: int
    ) -> tuple[list[FileRecord], list[tuple[scanner.ScanEntry, str]]]:
        records: list[FileRecord] = []
        errors: list[tuple[scanner.ScanEntry, str]] = []
        ahead = scanner.ReadAhead(dir_fd, [(e.name, e.size) for e in batch])
        for entry in batch:
            ahead.advance()
            shown = scanner.join(rel, entry.name)
            try:
                hashed = scanner.hash_file(self.index, run.root, rel, entry.name, run.params, dir_fd)
            except scanner.FileChanged as e:
                errors.append((entry, f"skipped {e}; share again once it is complete"))
                continue
            except scanner.IdentityKeyFile as e:
                errors.append((entry, str(e)))
                continue
            except FileNotFoundError:
                errors.append((entry, f"skipped {shown}: it disappeared during the scan"))
                continue
            except OSError as e:
                errors.append((entry, f"skipped {shown}: {e.strerror}"))
                continue
            if hashed.record is not None:
                records.append(hashed.record)
            entry.ref, entry.size = hashed.file_id, hashed.size
            entry.stat = None
        return records, errors

    def _head_record(self, name: str) -> tuple[bytes, VersionRecord] | None:
        known = self.index.dataset(name)
        # A dataset unshared without --forget keeps its history: sharing it again continues it.
        head_id = known[1] if known else next((row.id for row in self.index.versions(name)), None)
        return self._record(head_id) if head_id else None

    def _commit(
        self, name: str, root: Path, tree_id: bytes, size: int, files: int, message: str, describe: Describe | None
    ) -> tuple[VersionInfo, bool]:
        head = self._head_record(name)
        if head is not None and head[1].root == tree_id:
            return VersionInfo.from_record(*head), False
        if describe is not None:
            changed = history.changes(index_loader(self.index), head[1].root if head else None, tree_id)
            try:
                message = describe(change.path for change in changed)
            except ProtocolError:
                pass  # a head fetched in part (or pruned): the caller's own wording stands
        # A named subset is part of the dataset: it carries forward to every later version.
        subsets = head[1].subsets if head else ()
        return self._publish(name, str(root), head, tree_id, size, files, message, subsets), True

    def _publish(
        self, name: str, path: str | None, head: tuple[bytes, VersionRecord] | None, tree_id: bytes, size: int,
        files: int, message: str, subsets: tuple[Subset, ...],
    ) -> VersionInfo:
        record = sign_version(
            VersionRecord(
                name=name,
                seq=head[1].seq + 1 if head else 1,
                root=tree_id,
                parents=(head[0],) if head else (),
                size=size,
                files=files,
                author=self._author,
                time=int(time.time()),
                message=message,
                subsets=subsets,
            ),
            self._signer,
        )
        version_id, data = encode_with_id(record)
        row = VersionRow(version_id, name, record.seq, record.time, size, files, tree_id)
        self.index.add_version(row, data, path=path)
        return VersionInfo.from_record(version_id, record)

    async def set_subsets(
        self, name: str, change: Callable[[VersionRecord], tuple[tuple[Subset, ...], str]]
    ) -> VersionInfo:
        """Publish a version of `name` with its head's tree and the subsets and message `change`
        makes of the head (in a worker thread: describing a subset may read the whole tree)."""
        lock = self._share_locks.setdefault(name, trio.Lock())
        async with lock:
            known = self.index.dataset(name)
            if known is None or known[1] is None:
                raise UnknownDataset(f"no dataset named {name!r} here; `shoal ls` lists them")
            return await trio.to_thread.run_sync(self._publish_subsets, name, known[0], self._record(known[1]), change)

    def _publish_subsets(
        self, name: str, path: str | None, head: tuple[bytes, VersionRecord],
        change: Callable[[VersionRecord], tuple[tuple[Subset, ...], str]],
    ) -> VersionInfo:
        subsets, message = change(head[1])
        return self._publish(name, path, head, head[1].root, head[1].size, head[1].files, message, subsets)

    async def unshare(self, name: str, *, forget: bool) -> tuple[str | None, int]:
        """Stop offering `name`, leaving its folder as it is; with `forget`, drop its versions
        from the index. Return (its folder, versions dropped)."""
        if self.index.dataset(name) is None:
            raise UnknownDataset(f"no dataset named {name!r} is shared here; `shoal ls` lists them")
        async with self._share_locks.setdefault(name, trio.Lock()):
            withdrawn = await trio.to_thread.run_sync(partial(self.index.withdraw_dataset, name, forget=forget))
            if forget:
                self.audiences.forget(name)
            return withdrawn

    def _record(self, version_id: bytes) -> tuple[bytes, VersionRecord]:
        found = self.index.get_object(version_id)
        assert found is not None and found[0] == Kind.VERSION, "head version missing from the index"
        return version_id, decode_version(found[1], version_id)

    # --- listing ---------------------------------------------------------------

    def datasets(self) -> list[DatasetInfo]:
        out = []
        for name in self.index.dataset_names():
            path, head = self.index.dataset(name)  # type: ignore[misc]
            if head is None:
                continue
            checkouts = tuple(
                Checkout(folder, VersionInfo.from_record(*self._record(version)), selection == FULL)
                for folder, version, selection in self.index.checkouts(name)
            )
            audience = self.audiences.of(name)
            out.append(
                DatasetInfo(
                    name, path, VersionInfo.from_record(*self._record(head)), self.index.version_count(name),
                    tuple(sorted(audience)) if audience is not None else None, checkouts,
                    path is None or os.path.isdir(path),
                )
            )
        return out

    def log(self, name: str) -> list[VersionInfo]:
        """The versions of `name`, newest first."""
        rows = list(self.index.versions(name))
        if not rows:
            raise UnknownDataset(f"no dataset named {name!r} here; `shoal ls` lists them")
        return [VersionInfo.from_record(*self._record(r.id)) for r in rows]

    def head(self, name: str) -> VersionInfo:
        known = self.index.dataset(name)
        if known is None or known[1] is None:
            raise UnknownDataset(f"no dataset named {name!r} here; `shoal ls` lists them")
        return VersionInfo.from_record(*self._record(known[1]))

    # --- verify ----------------------------------------------------------------

    async def verify(self, name: str, path: str | None = None) -> VerifyReport:
        """Re-hash a folder of the dataset (by default its own) against the version it holds."""
        if path is None:
            version = self.head(name)
            path = self.index.dataset(name)[0]  # type: ignore[index]
            if path is None:
                raise UnknownDataset(f"dataset {name!r} has no local folder to verify; give a folder it was fetched to")
        else:
            state = self.index.dest_state(path)
            if state is None or state[0] != name:
                raise UnknownDataset(f"{path} is not a folder {name!r} was fetched to; `shoal ls` lists its folders")
            version = VersionInfo.from_record(*self._record(state[1]))
        problems, total, checked = await trio.to_thread.run_sync(self._verify_tree, Path(path), version.root)
        return VerifyReport(name, version, path, checked, tuple(problems), total, self._repair(version, path))

    def _repair(self, version: "VersionInfo", path: str) -> str:
        if version.author == self._author and self.index.dest_state(path) is None:
            return f"to publish the folder as it is now, run: shoal share {shlex.quote(path)}"
        return f"to restore it, run: shoal fetch {version.name}@{version.seq} {shlex.quote(path)}"

    def _verify_tree(self, root: Path, tree_id: bytes) -> tuple[list[VerifyProblem], int, int]:
        """(the first MAX_VERIFY_REPORTED problems, how many there are, files checked)."""
        load = scanner.index_loader(self.index)
        problems: list[VerifyProblem] = []
        total = checked = 0
        for parts, entry in walk_tree(load, tree_id):
            reason = _check_entry(load, root.joinpath(*parts), entry)
            checked += entry.type == EntryType.FILE
            if reason:
                total += 1
                if len(problems) < MAX_VERIFY_REPORTED:
                    problems.append(VerifyProblem("/".join(parts), reason))
        return problems, total, checked


class _Skip(Exception):
    """A subdirectory that could not be read and is left out of the version."""


def _batches(entries: list[scanner.ScanEntry]):
    batch: list[scanner.ScanEntry] = []
    size = 0
    for e in entries:
        batch.append(e)
        size += e.size
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _check_entry(load, path: Path, entry) -> str | None:
    """Return why `path` does not match the version's entry, or None."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if entry.type == EntryType.SYMLINK:
        if not path.is_symlink():
            return "expected a symlink"
        target = os.readlink(path)
        return None if target == entry.target else f"symlink points to {target!r}, expected {entry.target!r}"
    if entry.type == EntryType.DIR:
        return None if path.is_dir() and not path.is_symlink() else "expected a directory"
    if not path.is_file() or path.is_symlink():
        return "expected a regular file"
    if st.st_size != entry.size:
        return f"size is {st.st_size}, expected {entry.size}"
    file = stored_file(load(Kind.FILE, entry.id), entry.id)
    try:
        actual = scanner.file_id_of(path, file.params)
    except OSError as e:
        return f"unreadable: {e.strerror}"
    return None if actual == entry.id else "content differs"

