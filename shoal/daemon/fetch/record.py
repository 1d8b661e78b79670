"""Recording what a fetch put in DEST: each installed file, then the version as present here."""

import os
import shutil
from pathlib import Path

import trio

from shoal.daemon.fetch.job import FileTask, Job, offsets
from shoal.daemon.fetch.objects import stored_bytes
from shoal.daemon.fetch.state import FetchSpec
from shoal.daemon.model import PARTIAL_DIR
from shoal.daemon.store.flush import sync_filesystem
from shoal.daemon.store.index import FileRecord, FileStat, Index, VersionRow
from shoal.daemon.store.loader import index_loader
from shoal.protocol.format.manifest import file_chunks
from shoal.protocol.format.objects import FileEntry, stored_file

#: Chunk locations written to the index per call, for a large file.
LOCATION_BATCH = 4096
#: Installed files the recorder gathers for one worker-thread call (it stops once it has
#: this many), and how long it waits for them. Each call is a transaction whose cost is
#: mostly the pages it touches (random chunk ids, a leaf each): 10,000 small files took
#: 0.30-0.37 s of CPU recorded 20 at a time, 0.17-0.25 s 100 at a time, 0.08-0.17 s
#: 1,000 at a time. The files are in place already: recording them later only delays
#: serving them.
RECORD_FILES = 1024
RECORD_GATHER = 0.05

#: A file moved into place, with its stat after the rename.
Installed = tuple[FileTask, FileStat]


async def record_stage(job: Job, installed: trio.MemoryReceiveChannel[list[Installed]]) -> None:
    """The last stage: let the index serve each installed file, about RECORD_FILES per worker-thread call."""
    async with installed:
        while group := await _gather(installed):
            await trio.to_thread.run_sync(record_installed, job.index, job.dest, group)


async def _gather(installed: trio.MemoryReceiveChannel[list[Installed]]) -> list[Installed]:
    """What the finisher has installed, waiting up to RECORD_GATHER for RECORD_FILES of it; [] at the end."""
    try:
        group = list(await installed.receive())
    except trio.EndOfChannel:
        return []
    with trio.move_on_after(RECORD_GATHER):
        while len(group) < RECORD_FILES:
            try:
                group += await installed.receive()
            except trio.EndOfChannel:
                break
    return group


def record_installed(index: Index, dest: Path, group: list[Installed]) -> None:
    """Record installed files: small ones from the locations kept since planning, in one call."""
    records = []
    for task, stat in group:
        if task.locations is None:
            record_file(index, dest, task.parts, task.entry, stat)
            continue
        rel = "/".join(task.parts[:-1])
        records.append(FileRecord(rel, task.parts[-1], stat, task.entry.id, task.locations, []))
    index.record_files(str(dest), records)


def record_file(index: Index, dest: Path, parts: tuple[str, ...], entry: FileEntry, stat: FileStat) -> None:
    """Record one file DEST holds, reading its chunk list from its FILE object."""
    row = index.begin_file(str(dest), "/".join(parts[:-1]), parts[-1], stat)
    file_id = entry.id
    file = stored_file(stored_bytes(index, file_id), file_id)
    batch: list[tuple[bytes, int, int]] = []
    for offset, ref in offsets(file_chunks(index_loader(index), file)):
        batch.append((ref.id, offset, ref.size))
        if len(batch) >= LOCATION_BATCH:
            index.add_locations(row, batch)
            batch = []
    index.add_locations(row, batch)
    index.finish_file(row, stat, file_id)


def record_version(
    index: Index, dest: Path, version: VersionRow, data: bytes, spec: FetchSpec, selection: bytes
) -> None:
    """The fetch is complete: flush DEST, then record the version as present there."""
    # One syncfs for the whole fetch instead of an fsync per file: the data is
    # on disk before the version is recorded as present here.
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_filesystem(fd)
    finally:
        os.close(fd)
    if not spec.partial:
        known = index.dataset(spec.name)
        if known is None or known[0] is None or known[0] == str(dest):
            index.add_version(version, data, path=str(dest))
        else:
            # Another checkout: the dataset's own folder, and the head it offers, stay.
            index.store_version(version, data)
    else:
        index.unlist_dataset(spec.name, str(dest))
    index.set_dest_state(str(dest), spec.name, version.id, version.root, None if spec.include else selection)
    shutil.rmtree(dest / PARTIAL_DIR, ignore_errors=True)
