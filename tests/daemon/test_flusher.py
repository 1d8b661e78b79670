"""Small files are flushed many at a time in the background, and the rest when the writer ends."""

from pathlib import Path

import pytest
import trio

from shoal.daemon.fetch import flusher as flusher_module
from shoal.daemon.fetch.flusher import Flusher
from shoal.daemon.fetch.job import FileTask
from shoal.daemon.store import flush as flush_module
from shoal.protocol.format.objects import FileEntry

pytestmark = pytest.mark.trio


def tasks(names: str, size: int = 10) -> list[FileTask]:
    return [FileTask(("sub", n), FileEntry(n, size, bytes(32)), f"/partial/{n}", size, True) for n in names]


async def test_a_batch_is_flushed_in_the_background_one_at_a_time_and_the_rest_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flusher_module, "FLUSH_FILES", 3)
    release = trio.Event()
    flushed: list[list[tuple[str, str]]] = []

    def flush_and_drop(dest: Path, files: list[tuple[str, str]]) -> None:
        assert dest == tmp_path
        trio.from_thread.run(release.wait)
        flushed.append(files)

    monkeypatch.setattr(flusher_module, "flush_and_drop", flush_and_drop)
    async with trio.open_nursery() as nursery:
        flusher = Flusher(tmp_path, nursery, room=0)
        await flusher.wrote(tasks("ab"))
        await flusher.wrote(tasks("c"))  # the third file: a flush starts, and the writer goes on
        await flusher.wrote(tasks("de"))
        await flusher.wrote(tasks("f"))  # a batch ready while the first still runs: it waits
        with trio.move_on_after(0.2) as waited:
            await flusher.wrote(tasks("ghi"))  # two batches ahead: the writer waits for the flush
        assert waited.cancelled_caught
        release.set()
        await flusher.wrote(tasks("j"))
        await flusher.finish()
    names = [[partial.rsplit("/", 1)[1] for partial, _ in batch] for batch in flushed]
    assert names == [list("abc"), list("defghij")]
    assert flushed[0][0] == ("/partial/a", str(tmp_path / "sub" / "a"))


async def test_bytes_start_a_flush_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flusher_module, "FLUSH_BYTES", 100)
    flushed: list[int] = []
    monkeypatch.setattr(flusher_module, "flush_and_drop", lambda dest, files: flushed.append(len(files)))
    async with trio.open_nursery() as nursery:
        flusher = Flusher(tmp_path, nursery, room=0)
        await flusher.wrote(tasks("a", size=60))
        await trio.sleep(0.05)
        assert flushed == []
        await flusher.wrote(tasks("b", size=60))
        await flusher.finish()
        await flusher.finish()  # nothing left: no flush
    assert flushed == [2]


async def test_pages_stay_cached_while_they_fit_in_the_room_and_are_dropped_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flusher_module, "FLUSH_FILES", 2)
    flushed: list[list[str]] = []

    def flush_and_drop(dest: Path, files: list[tuple[str, str]]) -> None:
        flushed.append([partial.rsplit("/", 1)[1] for partial, _ in files])

    monkeypatch.setattr(flusher_module, "flush_and_drop", flush_and_drop)
    async with trio.open_nursery() as nursery:
        flusher = Flusher(tmp_path, nursery, room=35)
        for names in ("ab", "cd", "ef"):
            await flusher.wrote(tasks(names, size=10))
            await trio.sleep(0.05)
        await flusher.wrote(tasks("g", size=10))
        await flusher.finish()
    # 20 bytes fit, 20 more would not (15 left): dropped, and every batch after them.
    assert flushed == [[], list("cd"), list("ef"), list("g")]


async def test_free_memory_is_what_meminfo_calls_free() -> None:
    def mem_free() -> int:
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemFree:"))
        return int(line.split()[1]) * 1024

    before = mem_free()
    found = flush_module.free_memory()
    after = mem_free()
    # Memory moves while we look (other tests run beside this one): between the two looks, give or take.
    assert min(before, after) - (64 << 20) <= found <= max(before, after) + (64 << 20)
    assert found > 0
