"""CPU per trio task and per worker-thread function of a daemon, for `bench/fetch_cpu.py --tasks`.

Python imports this module at start-up when its folder is on PYTHONPATH. Where
SHOAL_BENCH_TASKS_DIR is set, every `trio.run` gets an instrument that adds the
thread CPU time of each task step to the task's name, and `trio.to_thread.run_sync`
adds the CPU time of each call to its function's name and counts the calls; SIGUSR2
writes the three, with the event-loop thread's own CPU time, to tasks-PID.json in
that folder. Not part of shoal: the daemon does not know it is measured.
"""

import collections
import json
import os
import signal
import threading
import time

_DIR = os.environ.get("SHOAL_BENCH_TASKS_DIR")

if _DIR:
    import trio

    _tasks: collections.Counter[str] = collections.Counter()
    _threads: collections.Counter[str] = collections.Counter()
    _calls: collections.Counter[str] = collections.Counter()
    _loop_cpu = [0.0]
    _threads_lock = threading.Lock()

    class _TaskCpu(trio.abc.Instrument):
        def __init__(self) -> None:
            self._started = 0.0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self._started = time.thread_time()

        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            _tasks[task.name] += time.thread_time() - self._started

    def _dump(signum: int, frame: object) -> None:
        _loop_cpu[0] = time.thread_time()
        path = os.path.join(_DIR, f"tasks-{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"loop": _loop_cpu[0], "tasks": dict(_tasks), "threads": dict(_threads), "calls": dict(_calls)}, f)
        os.replace(path + ".tmp", path)

    _run = trio.run
    _to_thread = trio.to_thread.run_sync

    def _instrumented_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        kwargs["instruments"] = [*kwargs.get("instruments", ()), _TaskCpu()]
        signal.signal(signal.SIGUSR2, _dump)
        return _run(*args, **kwargs)

    async def _timed_to_thread(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        # A partial's repr would format its arguments (whole tree objects) on every call.
        inner = getattr(fn, "func", fn)
        name = getattr(inner, "__qualname__", None) or type(inner).__qualname__
        _calls[name] += 1

        def timed(*a):  # noqa: ANN002, ANN202
            started = time.thread_time()
            try:
                return fn(*a)
            finally:
                spent = time.thread_time() - started
                with _threads_lock:
                    _threads[name] += spent

        return await _to_thread(timed, *args, **kwargs)

    trio.run = _instrumented_run
    trio.to_thread.run_sync = _timed_to_thread
