"""File-system change notification for one folder tree, from watchfiles (inotify on Linux).

watchfiles wraps the Rust `notify` crate. Its own `awatch` cannot be cancelled
promptly under trio (its worker thread only notices a stop every few seconds),
so this drives the documented `RustNotify` backend from a trio worker thread
and sets its stop event the moment the owning scope is cancelled.
"""

import threading
from collections.abc import Callable
from pathlib import Path

import trio
from watchfiles._rust_notify import RustNotify

#: The watcher hands over a burst once nothing new came for this long (ms), or after DEBOUNCE_MS at most.
STEP_MS = 100
DEBOUNCE_MS = 500


async def watch_tree(
    root: Path,
    on_changes: Callable[[set[str]], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Report the absolute paths changed under `root`, a burst at a time, until cancelled.

    Started once the kernel watches are in place, so no change after that is missed.
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
                on_changes({path for _, path in batch})
            nursery.cancel_scope.cancel()
    finally:
        stop.set()
        notify.close()


def _open(root: Path) -> RustNotify:
    # Adding an inotify watch per directory walks the tree: a worker thread's job.
    return RustNotify([str(root)], False, False, 300, True, True)


async def _stop_when_cancelled(stop: threading.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()
