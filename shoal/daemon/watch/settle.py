"""Per-file settling: which changed paths of a watched folder are ready to publish, which are held back, and why.

No I/O: the watch records changes here as they are reported, takes a snapshot of
the files open for writing, and asks `plan` whether a version can be made now.

A changed path is *settled* once it has gone `quiet` seconds without a change and
no process holds it open for writing. A path open for writing, or one that keeps
changing (its changes span `quiet` seconds or more, as a log's do), is *still being
written*: it does not hold the others back, the version keeps its previous entry
(see `Library.share`'s `hold`), and after `max_wait` seconds of that it is
published as it is. A path that changed for the first time less than `quiet`
seconds ago is *arriving*, and holds the whole burst back: a copy of many files
becomes one version, not one per file. A version is made once nothing is
arriving and at least one path is settled (or has waited `max_wait`); new files
that never stop arriving (a sample image per training step) hold the burst back
for `max_wait` at most, and are then held like files still being written.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

#: Changed paths tracked one by one per watch. A copy of a million files must not
#: cost a million entries here: past this many, further changes are only counted,
#: and the folder settles as a whole once they stop for `quiet` seconds, every file
#: then open for writing held (and tracked from then on).
MAX_TRACKED = 10_000
#: A version waits this long at most, once, for a held file about to settle (two logs closed
#: together, whose last changes came in different bursts), rather than publish it in the next one.
LINGER = 0.5
#: The shortest sleep between two plans, so that a deadline just passed never spins.
MIN_STEP = 0.05
#: Paths named in a state's detail; more are counted.
NAMED = 3


@dataclass(slots=True)
class Change:
    """When a path first changed since it was last published, when it last changed, and whether it was a folder."""

    first: float
    last: float
    is_dir: bool = False


class Changes:
    """The changes of one watched folder not published yet."""

    def __init__(self) -> None:
        self.paths: dict[str, Change] = {}
        #: Changes not tracked by path (made while nobody watched, to the root itself, or past
        #: MAX_TRACKED): they make the whole folder settle.
        self.whole: Change | None = None
        self.untracked = 0
        self.catch_up = False

    def __len__(self) -> int:
        return len(self.paths) + self.untracked

    def __bool__(self) -> bool:
        return bool(self.paths) or self.whole is not None

    def add(self, rel: str, now: float, is_dir: bool) -> None:
        """Record a change to `rel` (relative to the folder; "" for the folder itself)."""
        change = self.paths.get(rel)
        if change is not None:
            change.last = now
        elif rel and len(self.paths) < MAX_TRACKED:
            self.paths[rel] = Change(now, now, is_dir)
        else:
            self.untracked += bool(rel)
            self.touch_whole(now)

    def touch_whole(self, now: float) -> None:
        if self.whole is None:
            self.whole = Change(now, now, True)
        else:
            self.whole.last = now

    def start_catch_up(self, now: float) -> None:
        """Whatever changed while nobody watched is published once the folder settles."""
        self.catch_up = True
        self.touch_whole(now)

    def published(self, plan: "Plan", now: float) -> None:
        """Forget what `plan` published, unless it changed again while being shared; follow what it held untracked."""
        for rel, last in plan.publish.items():
            change = self.paths.get(rel)
            if change is not None and change.last == last:
                del self.paths[rel]
        if plan.whole is not None and self.whole is not None and self.whole.last == plan.whole:
            self.whole, self.untracked, self.catch_up = None, 0, False
        for rel in plan.track:
            self.add(rel, now, False)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: publish (`ready`), or show `state: detail` and plan again at `wake`."""

    ready: bool
    state: str
    detail: str | None
    wake: float
    #: The settled paths a version now publishes, each with the time of its last change.
    publish: dict[str, float]
    #: The paths still being written, which keep their previous entry.
    hold: tuple[str, ...]
    #: When the untracked changes last happened, if the version publishes them.
    whole: float | None
    message: str
    #: Held files no tracked change named (open for writing when the whole folder settles): followed from now on.
    track: tuple[str, ...] = ()
    #: When a held file settles, if that is within LINGER of now.
    linger: float | None = None
    #: Whether `message` counts changed files: the share words it again from what the version
    #: changes (`files_message`), since files may change after their events were counted.
    counts_files: bool = False


def plan(changes: Changes, writers: set[str], now: float, quiet: float, max_wait: float) -> Plan:
    """Classify every change; `writers` holds the paths (relative) open for writing."""
    due: dict[str, float] = {}
    open_: list[str] = []
    changing: list[str] = []
    arriving: list[str] = []
    for rel, change in changes.paths.items():
        if now >= change.first + max_wait or (rel not in writers and now >= change.last + quiet):
            due[rel] = change.last
        elif rel in writers:
            open_.append(rel)
        elif change.last - change.first >= quiet:
            changing.append(rel)
        else:
            arriving.append(rel)
    whole = changes.whole
    whole_due = whole is not None and (now >= whole.last + quiet or now >= whole.first + max_wait)
    whole_arriving = whole is not None and not whole_due
    # Untracked changes cannot tell a file still being written from one that changed: every writer is held.
    track = sorted(path for path in writers if path not in changes.paths) if whole_due else []
    changing += track
    # Files that keep arriving hold a burst back for `max_wait` at most, as files still being written do.
    first = min((changes.paths[rel].first for rel in due), default=math.inf)
    overdue_at = min(first, whole.first if whole is not None else math.inf) + max_wait
    held_back = bool(arriving or whole_arriving) and now < overdue_at
    ready = bool(due or whole_due) and not held_back
    if not ready:
        state, detail = _state(changes, arriving, whole_arriving, open_, changing)
        wake = _wake(changes, arriving, whole_arriving, open_ + changing, now, quiet, max_wait)
        return Plan(False, state, detail, min(wake, max(overdue_at, now + MIN_STEP)), {}, (), None, "")
    soon = [changes.paths[rel].last + quiet for rel in changing if rel in changes.paths]
    linger = max((t for t in soon if t <= now + LINGER), default=None)
    published = whole.last if whole_due and whole is not None else None
    message, counts_files = _message(changes, due, published)
    hold = tuple(open_ + changing + arriving)
    return Plan(True, "sharing", None, now, due, hold, published, message, tuple(track), linger, counts_files)


def _wake(
    changes: Changes, arriving: list[str], whole_arriving: bool, held: list[str], now: float, quiet: float, max_wait: float
) -> float:
    paths = changes.paths
    if arriving or whole_arriving:
        # Nothing is published before the last arrival settles.
        ends = [paths[rel].last + quiet for rel in arriving]
        if whole_arriving and changes.whole is not None:
            ends.append(changes.whole.last + quiet)
        return max(now + MIN_STEP, max(ends))
    # Open files are looked for again every `quiet` seconds; a held path may settle or expire sooner.
    soon = [paths[rel].last + quiet for rel in held if rel in paths]
    soon += [paths[rel].first + max_wait for rel in held if rel in paths]
    return max(now + MIN_STEP, min([now + quiet, *(t for t in soon if t > now)]))


def _state(
    changes: Changes, arriving: list[str], whole_arriving: bool, open_: list[str], changing: list[str]
) -> tuple[str, str | None]:
    if arriving or whole_arriving:
        count = len(arriving) + (changes.untracked if whole_arriving else 0)
        if count == 0:
            return "settling", "changes made while not watched" if changes.catch_up else "the folder changed"
        return "settling", f"{_files(count)} changing"
    parts = [f"{_names(open_)} open for writing"] if open_ else []
    if changing:
        parts.append(f"{_names(changing)} still changing")
    return "waiting", ", ".join(parts) or None


def _message(changes: Changes, due: dict[str, float], whole: float | None) -> tuple[str, bool]:
    """The version's message: how many paths it publishes changed, and which when few; and
    whether that counts files."""
    if whole is not None and changes.untracked:
        return f"watch: over {MAX_TRACKED:,} files changed", False
    files = [rel for rel in due if not changes.paths[rel].is_dir]
    if files:
        return _changed(_files(len(files)), files), True
    if whole is not None and changes.catch_up:
        return "watch: changes made while not watched", False
    if not due:
        return "watch: the folder changed", False
    return _changed(f"{len(due)} folder{'s' if len(due) != 1 else ''}", list(due)), False


def files_message(changed: Iterator[str]) -> str:
    """The message of a version that changes the files `changed` (in path order): how many, and which when few."""
    first: list[str] = []
    count = 0
    for count, path in enumerate(changed, 1):
        if count <= NAMED:
            first.append(path)
    if not count:
        return "watch: the folder changed"
    named = f" ({_names(first)})" if count <= NAMED else ""
    return f"watch: {_files(count)} changed{named}"


def _changed(count: str, paths: list[str]) -> str:
    return f"watch: {count} changed" + (f" ({_names(paths)})" if len(paths) <= NAMED else "")


def _files(count: int) -> str:
    return f"{count:,} file{'s' if count != 1 else ''}"


def _names(paths: list[str]) -> str:
    shown = sorted(paths)[:NAMED]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")
