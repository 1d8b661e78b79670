"""The pieces of a split fetch that need no peer: when to split, lanes, the link's messages, progress."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from shoal.daemon.fetch.checked_dirs import CheckedDirs
from shoal.daemon.fetch.errors import DiskFull, FetchError, NoPeer
from shoal.daemon.fetch.job import FileTask, Job
from shoal.daemon.fetch.link import Link, LinkClosed, Progress, Setup, snapshot, task_fields, task_from
from shoal.daemon.fetch.split import (
    MIN_FILES_PER_WORKER,
    SPLIT_AFTER,
    Lanes,
    Split,
    WorkerConfig,
    auto_workers,
    failure,
    split_count,
)
from shoal.daemon.fetch.state import FetchSpec, PeerStats, Transfer
from shoal.protocol.format.objects import FileEntry
from shoal.protocol.wire.messages import MAX_LANE


@dataclass
class FakeSource:
    peer_id: str
    lane_address: str | None = "127.0.0.1:7453"


def config(count: int) -> WorkerConfig:
    return WorkerConfig(b"k" * 32, Path("/nonexistent/index.sqlite"), lambda: count)


def test_shoal_splits_no_fetch_below_eight_cores_then_one_worker_per_four():
    assert [auto_workers(c) for c in (1, 2, 4, 7)] == [1, 1, 1, 1]
    assert [auto_workers(c) for c in (8, 16, 64, 128)] == [2, 4, 15, 15]


def test_a_fetch_is_split_only_when_every_peer_takes_lanes_and_nothing_caps_it():
    files = 10 * MIN_FILES_PER_WORKER
    sources = [FakeSource("a"), FakeSource("b")]
    assert split_count(config(4), files, sources, capped=False) == 4
    assert split_count(None, files, sources, capped=False) == 1
    assert split_count(config(4), files, sources, capped=True) == 1
    assert split_count(config(4), files, [FakeSource("a"), FakeSource("b", None)], capped=False) == 1
    assert split_count(config(4), files, [], capped=False) == 1
    # Each worker gets enough files to pay for its start.
    assert split_count(config(4), 2 * MIN_FILES_PER_WORKER + 1, sources, capped=False) == 2
    assert split_count(config(4), MIN_FILES_PER_WORKER - 1, sources, capped=False) == 1


def test_lanes_are_leased_two_or_more_least_recently_used_first_and_come_back():
    lanes = Lanes()
    with lanes.lease(1) as none:
        assert none == []
    with lanes.lease(4) as first:
        assert first == [1, 2, 3, 4]
        with lanes.lease(MAX_LANE) as second:
            assert second == list(range(5, MAX_LANE + 1))
            with lanes.lease(3) as third:
                assert third == []
        with lanes.lease(20) as again:
            assert again == list(range(5, MAX_LANE + 1))
    # 1-4 came back last: a peer may still hold them open for a moment.
    with lanes.lease(2) as later:
        assert later == [5, 6]
    with pytest.raises(RuntimeError), lanes.lease(2):
        raise RuntimeError("a failing fetch")
    with lanes.lease(MAX_LANE) as whole:
        assert sorted(whole) == list(range(1, MAX_LANE + 1)) and whole[:3] == [9, 10, 11]


def test_a_task_and_a_setup_cross_the_link_unchanged():
    entry = FileEntry("x.bin", 5000, b"\x01" * 32, True, 0o750)
    task = FileTask(("a", "b", "x.bin"), entry, "/d/.shoal-partial/p1", 5000, False)
    back = task_from(task_fields(task))
    assert (back.parts, back.entry, back.partial, back.remaining, back.fresh) == (
        task.parts, entry, task.partial, 5000, False
    )
    spec = FetchSpec("ds", "3", Path("/d"), ("*.jpg",), "peer", 12.5, None, True, True)
    setup = Setup(b"k" * 32, Path("/h/index.sqlite"), spec, b"v" * 32, b"s", None, True, False,
                  (("id1", "gpu-box", "127.0.0.1:7453", 2),))
    assert Setup.from_fields(setup.fields()) == setup


@pytest.mark.trio
async def test_messages_cross_a_link_and_its_end_is_seen():
    left, right = trio.testing.memory_stream_pair()
    a, b = Link(left, left), Link(right, right)
    await a.send("tasks", [[["x"], 1, b"i" * 32, False, None, "/p", True]] * 3000)
    await a.send("end")
    assert (await b.receive())[1][2999][5] == "/p"
    assert await b.receive() == ["end"]
    await left.aclose()
    with pytest.raises(LinkClosed):
        await b.receive()


def test_progress_adds_what_each_worker_adds():
    spec = FetchSpec("ds", None, Path("/d"))
    daemon = Transfer(spec)
    daemon.bytes_done, daemon.files_done = 100, 1  # files the plan found in place
    progress = Progress(daemon)
    one, two = Transfer(spec), Transfer(spec)
    one.started, two.started = daemon.started + 1.0, daemon.started + 2.0
    one.bytes_done, one.bytes_received, one.files_done, one.files_written = 500, 400, 3, 3
    one.first_byte = 0.5
    one.peers["p"] = PeerStats(received=400, chunks=4)
    progress.apply(0, snapshot(one))
    two.bytes_done, two.bytes_received, two.files_done = 50, 50, 1
    two.first_byte = 0.1
    two.peers["p"] = PeerStats(received=50, chunks=1, dropped="gone")
    progress.apply(1, snapshot(two))
    one.bytes_done, one.bytes_received, one.files_done = 700, 600, 4
    one.peers["p"].received = 600
    progress.apply(0, snapshot(one))
    assert (daemon.bytes_done, daemon.bytes_received, daemon.files_done, daemon.files_written) == (850, 650, 6, 3)
    assert daemon.peers["p"].received == 650 and daemon.peers["p"].chunks == 5
    assert daemon.peers["p"].dropped == "gone"
    # The first chunk of the whole fetch: worker one's, 1.5 s after the fetch began.
    assert daemon.first_byte == pytest.approx(1.5)


def test_a_worker_failure_keeps_its_name():
    assert type(failure(NoPeer.code, "no peer")) is NoPeer
    assert type(failure(DiskFull.code, "full")) is DiskFull
    other = failure("something-else", "it broke; run the fetch again")
    assert type(other) is FetchError and str(other) == "it broke; run the fetch again"


@pytest.mark.trio
async def test_a_plan_too_small_to_split_is_assembled_by_the_daemon_without_workers(tmp_path: Path):
    spec = FetchSpec("ds", None, tmp_path)
    transfer = Transfer(spec)
    job = Job(
        None, spec, transfer, tmp_path, b"v" * 32, None, CheckedDirs(), b"", None, False, False,
        lambda peer: peer,
    )
    split = Split(job, config(4), [FakeSource("a")], [1, 2, 3, 4])
    planned = [FileTask(("f", str(i)), FileEntry(str(i), 1, b"i" * 32), f"/p{i}", 1, True) for i in range(SPLIT_AFTER - 1)]
    send, receive = trio.open_memory_channel[list[FileTask]](1)
    seen: list[FileTask] = []

    async def alone(tasks: trio.MemoryReceiveChannel[list[FileTask]]) -> list[str]:
        async for step in tasks:
            seen.extend(step)
        return ["a warning"]

    async def plan() -> None:
        async with send:
            for start in range(0, len(planned), 256):
                await send.send(planned[start : start + 256])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(plan)
        assert await split.run(receive, alone) == ["a warning"]
    assert seen == planned and transfer.workers == 0
