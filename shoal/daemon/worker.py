"""A fetch worker process: it assembles the files its daemon deals it (fetch/split.py).

Started as `python -m shoal.daemon.worker`, it reads the fetch's setup from
stdin, opens a lane of its own to each serving peer with the daemon's key
(SPEC.md, "Lanes") and its own connection to the index, and runs the same
assembling stages as the daemon (fetch/stages.py): every chunk verified before
it is written, every file renamed into place when whole and recorded in the
index. Its stdin closing means the daemon is gone: it stops at once, and its
partial files are there for the next fetch to resume from.
"""

import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.fetch.checked_dirs import CheckedDirs
from shoal.daemon.fetch.errors import FetchError, NoPeer, named_failure
from shoal.daemon.fetch.job import FileTask, Job, open_partial
from shoal.daemon.fetch.link import Link, LinkClosed, Say, Setup, snapshot, task_from
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.stages import assemble_stages
from shoal.daemon.fetch.state import Transfer
from shoal.daemon.fetch.wakeup import Signal
from shoal.daemon.net.lanes import open_lane
from shoal.daemon.net.session import PeerSession, Rejected
from shoal.daemon.store.fdlimit import FilePool, pool_size
from shoal.daemon.store.index import Index
from shoal.protocol.errors import ProtocolError
from shoal.protocol.wire.events import DuplicateSession

_log = logging.getLogger("shoal.worker")

#: How often the worker tells the daemon its counters.
PROGRESS_EVERY = 0.1
#: How long the worker says goodbye to its peers at the end.
CLOSE_TIMEOUT = 1.0
#: The first wait before asking again for a lane the peer still holds open, and the longest.
LANE_RETRY = 0.05
LANE_RETRY_MAX = 2.0


class DaemonGone(Exception):
    """The daemon closed the worker's stdin: nobody wants the rest of the work."""


class LiveLanes:
    """The worker's lanes that are open now: the sources its puller asks."""

    def __init__(self) -> None:
        self.open: list[PeerSession] = []
        self.errors: list[str] = []
        self._changed = Signal()

    def sources(self) -> list[Source]:
        return list(self.open)

    async def changed(self) -> None:
        await self._changed.wait()

    async def keep(
        self, key: Ed25519PrivateKey, peer: tuple[str, str, str, int], index: Index, dialled: Callable[[], None]
    ) -> None:
        """Open a lane to `peer` and keep it while it lasts; a lane that fails leaves the others the work."""
        peer_id, name, address, lane = peer
        async with trio.open_nursery() as nursery:
            try:
                session = await _open(nursery, key, address, peer_id, lane, index, name)
            except (OSError, ProtocolError, Rejected, trio.TooSlowError, trio.BrokenResourceError) as e:
                self.errors.append(f"{name}: {e}")
                return
            finally:
                dialled()
            self.open.append(session)
            self._changed.notify()
        self.open.remove(session)
        self._changed.notify()

    async def close(self) -> None:
        """Say goodbye on every lane, briefly: the files are all in place."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            for session in list(self.open):
                await session.close("fetch worker done")


async def _open(
    nursery: trio.Nursery, key: Ed25519PrivateKey, address: str, peer_id: str, lane: int, index: Index, name: str
) -> PeerSession:
    """open_lane, again while the peer still holds this lane number open: the worker that had
    it before may have ended a moment ago (a killed one says no BYE)."""
    delay = LANE_RETRY
    while True:
        try:
            return await open_lane(nursery, key, address, peer_id, lane, index, name)
        except ProtocolError as e:
            if e.code != DuplicateSession.code or delay > LANE_RETRY_MAX:
                raise
        await trio.sleep(delay)
        delay *= 2


async def run(link: Link) -> None:
    """The worker's whole life: setup, files, and the last word to the daemon."""
    message = await link.receive()
    if message[0] != Say.SETUP:
        raise ValueError(f"a fetch worker starts with {Say.SETUP}, not {message[0]!r}")
    setup = Setup.from_fields(message[1])
    index = Index(setup.index)
    transfer = Transfer(setup.spec)
    try:
        warnings = await _assemble(link, setup, index, transfer)
    except Exception as exc:
        if _daemon_gone(exc):
            raise DaemonGone() from exc
        named = named_failure(exc, setup.spec.dest)
        if named is None:
            _log.exception("fetch worker failed")
            code, text = FetchError.code, (
                f"a fetch worker failed ({type(exc).__name__}: {exc}; the daemon's log has its traceback);"
                " run the same fetch again: it resumes from what was already verified"
            )
        else:
            code, text = getattr(named, "code", FetchError.code), str(named)
        await link.send(Say.PROGRESS, snapshot(transfer))
        await link.send(Say.FAILED, code, text)
        return
    finally:
        index.close()
    await link.send(Say.PROGRESS, snapshot(transfer))
    await link.send(Say.DONE, warnings)


def _daemon_gone(exc: Exception) -> bool:
    """Whether `exc` says the daemon is gone: its end of the link closed, either way."""
    gone = (DaemonGone, trio.BrokenResourceError)
    if isinstance(exc, ExceptionGroup):
        return exc.subgroup(gone) is not None
    return isinstance(exc, gone)


async def _assemble(link: Link, setup: Setup, index: Index, transfer: Transfer) -> list[str]:
    key = Ed25519PrivateKey.from_private_bytes(setup.key)
    names = {peer_id: name for peer_id, name, _, _ in setup.peers}
    lanes = LiveLanes()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_report, link, transfer)
        dialled = trio.Semaphore(0)
        for peer in setup.peers:
            nursery.start_soon(lanes.keep, key, peer, index, dialled.release)
        for _ in setup.peers:
            await dialled.acquire()
        if not lanes.open:
            raise NoPeer(
                "a fetch worker could not open a lane to any peer serving the version ("
                + "; ".join(lanes.errors)
                + "); `shoal config set fetch.workers 1` makes the daemon fetch without workers"
            )
        # Told by the daemon, whose walk checks the manifest while the first files arrive.
        checked = CheckedDirs()
        job = Job(
            index, setup.spec, transfer, setup.spec.dest, setup.version_id, FilePool(pool_size(), open_partial),
            checked, setup.selection, setup.old_root, setup.reuse_unchanged, setup.resuming,
            lambda peer_id: names.get(peer_id, peer_id[:12]),
        )
        # Unbounded: the daemon deals a worker at most split.DEALT_AHEAD files it has not finished.
        tasks_out, tasks_in = trio.open_memory_channel[list[FileTask]](math.inf)
        nursery.start_soon(_feed, link, tasks_out, transfer, checked)
        try:
            warnings = await assemble_stages(job, Objects(index, job.name_of), lanes.sources, lanes.changed, tasks_in)
        finally:
            job.files.close_all()
        await lanes.close()
        nursery.cancel_scope.cancel()
    return warnings


async def _feed(
    link: Link, tasks: trio.MemorySendChannel[list[FileTask]], transfer: Transfer, checked: CheckedDirs
) -> None:
    """The daemon's messages: files to the stages until END, the rest at any time (a PAUSE
    must not wait behind files the paused stages cannot take)."""
    async with tasks:
        while (message := await _next(link, transfer, checked))[0] != Say.END:
            if message[0] == Say.TASKS:
                tasks.send_nowait([task_from(fields) for fields in message[1]])
    while True:
        await _next(link, transfer, checked)


async def _next(link: Link, transfer: Transfer, checked: CheckedDirs) -> list[Any]:
    try:
        message = await link.receive()
    except LinkClosed:
        raise DaemonGone() from None
    if message[0] == Say.PAUSE:
        transfer.pause()
    elif message[0] == Say.RESUME:
        transfer.resume()
    elif message[0] == Say.WALKED:
        checked.finish()
    return message


async def _report(link: Link, transfer: Transfer) -> None:
    last = None
    while True:
        await trio.sleep(PROGRESS_EVERY)
        now = snapshot(transfer)
        if now != last:
            await link.send(Say.PROGRESS, now)
            last = now


def _stdio() -> Link:
    return Link(trio.lowlevel.FdStream(os.dup(0)), trio.lowlevel.FdStream(os.dup(1)))


async def _main() -> None:
    try:
        await run(_stdio())
    except (DaemonGone, trio.BrokenResourceError):
        # Nobody reads what this worker would say: the daemon stopped or was killed.
        sys.exit(1)


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="shoal fetch worker: %(message)s")
    trio.run(_main)


if __name__ == "__main__":
    main()
