"""File-system change notification for one folder tree, from watchfiles (inotify on Linux).

watchfiles wraps the Rust `notify` crate. Its own `awatch` cannot be cancelled
promptly under trio (its worker thread only notices a stop every few seconds),
so this drives the documented `RustNotify` backend from a trio worker thread
and sets its stop event the moment the owning scope is cancelled.

A directory created under the root gets its kernel watch only once it is
reported, so files written into it before then raise no event: each new
directory is listed, and what it holds is reported with it.
"""

import os
import threading
from collections.abc import Callable
from pathlib import Path

import trio
from watchfiles import Change
from watchfiles._rust_notify import RustNotify

#: The watcher hands over a burst once nothing new came for this long (ms), or after DEBOUNCE_MS at most.
STEP_MS = 100
DEBOUNCE_MS = 500


async def watch_tree(
    root: Path,
    on_changes: Callable[[set[str]], None],
    *,
    listed: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Report the absolute paths changed under `root`, a burst at a time, until cancelled.

    Started once the kernel watches are in place, so no change after that is missed.
    At most `listed` paths found in new directories are reported per burst (memory must
    not grow with a directory of a million files moved in; past that many, the caller counts).
    Raises OSError when `root` cannot be watched.
    """
    stop = threading.Event()
    notify = await trio.to_thread.run_sync(_open, root)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_when_cancelled, stop)
            task_status.started()
            while True:
                batch = await trio.to_thread.run_sync(notify.watch, DEBOUNCE_MS, STEP_MS, 0, stop)
                if isinstance(batch, str):  # "stop" (we were cancelled) or "signal"
                    break
                changed = {path for _, path in batch}
                added = [path for change, path in batch if change == Change.added and os.path.isdir(path)]
                if added:
                    changed |= await trio.to_thread.run_sync(_below, added, listed)
                on_changes(changed)
            nursery.cancel_scope.cancel()
    finally:
        stop.set()
        notify.close()


def _open(root: Path) -> RustNotify:
    # Adding an inotify watch per directory walks the tree: a worker thread's job.
    return RustNotify([str(root)], False, False, 300, True, True)


def _below(dirs: list[str], limit: int) -> set[str]:
    """Up to `limit` paths below `dirs`, not following symlinks."""
    found: set[str] = set()
    todo = list(dirs)
    while todo and len(found) < limit:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if len(found) >= limit:
                        break
                    found.add(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue  # gone again, or unreadable: the share reports what it cannot read
    return found


async def _stop_when_cancelled(stop: threading.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()
