"""The stages that assemble the files a planner hands over: in the daemon, or in a fetch worker process.

    copier (copier.py) → puller (puller.py) → writer → finisher (writer.py) → recorder (record.py)

A chunk needed at several places is fetched once; the fill stage (repeats.py)
copies it to the others. Each stage ends when its input channel closes, and
closes its output.
"""

import math
from collections.abc import Awaitable, Callable

import trio

from shoal.daemon.fetch.copier import Copier
from shoal.daemon.fetch.job import FileTask, Job, Target
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.puller import Arrival, Puller
from shoal.daemon.fetch.record import Installed, record_stage
from shoal.daemon.fetch.repeats import Repeats
from shoal.daemon.fetch.schedule import Batch
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.writer import finish_stage, write_stage


async def assemble_stages(
    job: Job, objects: Objects, sources: Callable[[], list[Source]], peers_changed: Callable[[], Awaitable[None]],
    tasks: trio.MemoryReceiveChannel[list[FileTask]],
) -> list[str]:
    """Assemble, install and record every file that comes in on `tasks`, until it closes;
    the warnings about peers."""
    batches_out, batches_in = trio.open_memory_channel[Batch[Target]](0)
    arrivals_out, arrivals_in = trio.open_memory_channel[Arrival](math.inf)
    finished_out, finished_in = trio.open_memory_channel[FileTask](math.inf)
    installed_out, installed_in = trio.open_memory_channel[list[Installed]](1)
    puller = Puller(job, sources, peers_changed, arrivals_out)
    repeats = Repeats(job)
    copier = Copier(job, objects, batches_out, finished_out.clone(), repeats)

    async def pull() -> None:
        await puller.run(batches_in)
        repeats.received()

    def written(arrivals: list[Arrival], verdicts: list[bool]) -> None:
        puller.written(arrivals, verdicts)
        repeats.written(arrivals, verdicts)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(copier.run, tasks)
        nursery.start_soon(pull)
        nursery.start_soon(repeats.fill_stage, finished_out.clone())
        nursery.start_soon(write_stage, job, arrivals_in, finished_out, written)
        nursery.start_soon(finish_stage, job, finished_in, installed_out)
        nursery.start_soon(record_stage, job, installed_in)
    return puller.warnings
