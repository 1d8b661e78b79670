"""What an update does with the entries it replaces or removes in DEST.

A plain fetch makes DEST match the version: whatever is in the way goes. A
subscription's update keeps what the user changed since the last fetch wrote
DEST (SPEC.md, "Subscriptions"):

- a file or folder of the user's (edited, or added here) at a path the new
  version writes is renamed beside it, to `ENTRY.shoal-conflict-SEQ` (SEQ: the
  incoming version's number), and the new version's entry takes the path;
- a path the new version removes keeps the user's part: an edited file stays,
  and a removed folder keeps the files added in it;
- a file deleted here stays deleted while the publisher leaves it unchanged.

A file is still the fetch's when the index's stat record of what a fetch wrote
there matches it, or else when its bytes hash to the content id of the entry in
the version DEST holds.
"""

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.daemon.fetch.dest import remove_entry
from shoal.daemon.library.scanner import file_id_of
from shoal.daemon.store.index import FileStat, Index
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import EntryType, TreeEntry, stored_file

CONFLICT_MARK = ".shoal-conflict-"
#: Conflicts one update reports in full; beyond them only a count, so a folder
#: of a million edited files cannot grow the daemon's memory or one event without bound.
MAX_REPORTED = 100


@dataclass(frozen=True, slots=True)
class Conflict:
    """A change made in DEST that an update kept rather than overwrote."""

    path: str
    #: "edited", "added" (not in the version DEST held) or "deleted".
    change: str
    #: Where the user's copy is now (its own path when left in place); None when deleted.
    kept_as: str | None

    def to_json(self) -> dict:
        return {"path": self.path, "change": self.change, "kept_as": self.kept_as}


@dataclass(slots=True)
class ConflictLog:
    """The conflicts of one update: the first MAX_REPORTED, and how many there were."""

    reported: list[Conflict] = field(default_factory=list)
    total: int = 0

    def add(self, conflict: Conflict) -> None:
        self.total += 1
        if len(self.reported) < MAX_REPORTED:
            self.reported.append(conflict)


class Overwrite:
    """A plain fetch: DEST is made to match the version, whatever was there."""

    #: Whether files both versions share are checked (and fetched again if changed here).
    repairs = True

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def left_deleted(self, parts: tuple[str, ...], old: TreeEntry | None, new: TreeEntry) -> bool:
        return False

    def make_way(self, parts: tuple[str, ...], old: TreeEntry | None, new: TreeEntry) -> None:
        """Nothing to keep: the fetch replaces what is in the way."""

    def remove(self, load, parts: tuple[str, ...], gone: TreeEntry) -> None:
        remove_entry(self.dest.joinpath(*parts))


class KeepLocal(Overwrite):
    """An update that keeps the user's changes in DEST, reporting each one."""

    repairs = False

    def __init__(self, index: Index, dest: Path, seq: int, report: Callable[[Conflict], None]) -> None:
        super().__init__(dest)
        self._index = index
        self._seq = seq
        self._report = report

    def left_deleted(self, parts: tuple[str, ...], old: TreeEntry | None, new: TreeEntry) -> bool:
        """Whether this entry, unchanged by the publisher, was deleted here and so stays deleted."""
        if old is None or new.type == EntryType.DIR or (old.type, _content(old)) != (new.type, _content(new)):
            return False
        if os.path.lexists(self.dest.joinpath(*parts)):
            return False
        self._report(Conflict("/".join(parts), "deleted", None))
        return True

    def make_way(self, parts: tuple[str, ...], old: TreeEntry | None, new: TreeEntry) -> None:
        """Before `new` is put at `parts`: move the user's entry there, if any, aside."""
        path = self.dest.joinpath(*parts)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if new.type == EntryType.DIR and stat.S_ISDIR(st.st_mode):
            return  # folders merge; their entries are looked at one by one
        if new.type == EntryType.SYMLINK and stat.S_ISLNK(st.st_mode) and os.readlink(path) == new.target:
            return
        if self._still_fetched(path, parts, st, old):
            return
        kept = _move_aside(path, self._seq)
        rel = "/".join(parts)
        self._report(Conflict(rel, "added" if old is None else "edited", "/".join(parts[:-1] + (kept,))))

    def remove(self, load, parts: tuple[str, ...], gone: TreeEntry) -> None:
        """Remove an entry the new version lacks, but leave what of it is the user's."""
        path = self.dest.joinpath(*parts)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        rel = "/".join(parts)
        if gone.type == EntryType.DIR and stat.S_ISDIR(st.st_mode):
            known = set()
            for entry in tree_entries(load, gone.id):
                known.add(entry.name)
                self.remove(load, parts + (entry.name,), entry)
            added = sorted(set(os.listdir(path)) - known)
            for name in added:
                self._report(Conflict(f"{rel}/{name}", "added", f"{rel}/{name}"))
            if not os.listdir(path):
                path.rmdir()
        elif self._still_fetched(path, parts, st, gone):
            remove_entry(path)
        else:
            self._report(Conflict(rel, "edited", rel))

    def _still_fetched(self, path: Path, parts: tuple[str, ...], st: os.stat_result, entry: TreeEntry | None) -> bool:
        """Whether `path` still holds what a fetch put there: `entry`'s content, or a file
        the index recorded writing (an interrupted update may have written a newer one)."""
        if entry is not None and entry.type == EntryType.SYMLINK:
            return stat.S_ISLNK(st.st_mode) and os.readlink(path) == entry.target
        if not stat.S_ISREG(st.st_mode):
            return False
        row = self._index.cached_files(str(self.dest), "/".join(parts[:-1])).get(parts[-1])
        current = FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if row is not None and row.file_id is not None and row.stat == current:
            return True
        # Not recorded, or its record unfinished (a crash mid-record): the bytes decide.
        if entry is None or entry.type != EntryType.FILE or st.st_size != entry.size:
            return False
        file = stored_file(self._index.get_object(entry.id)[1], entry.id)  # type: ignore[index]
        return file_id_of(path, file.params) == entry.id


def _content(entry: TreeEntry) -> bytes | str:
    """What an entry points to: its object id, or a symlink's target."""
    return entry.target if entry.type == EntryType.SYMLINK else entry.id


def _move_aside(path: Path, seq: int) -> str:
    """Rename `path` to a free `ENTRY.shoal-conflict-SEQ[-N]` beside it; return the new name."""
    base = f"{path.name}{CONFLICT_MARK}{seq}"
    name, n = base, 1
    while os.path.lexists(path.with_name(name)):
        n += 1
        name = f"{base}-{n}"
    os.rename(path, path.with_name(name))
    return name
