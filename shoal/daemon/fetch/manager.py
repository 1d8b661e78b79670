"""Running fetches on behalf of control clients, and what they look like live."""

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from shoal.daemon.fetch.engine import Fetcher
from shoal.daemon.fetch.state import FetchSpec, Transfer
from shoal.errors import ShoalError

#: How often a running fetch reports progress to its client and to subscribers.
REPORT_INTERVAL = 0.5


class UnknownTransfer(ShoalError):
    """No running transfer has that id."""

    code = "not-found"
    exit_code = 4


class TransferCancelled(ShoalError):
    """A user cancelled the transfer."""

    code = "cancelled"


class Transfers:
    """The fetches in progress; each runs in the control request that asked for it."""

    def __init__(
        self,
        fetcher: Fetcher,
        on_done: Callable[[], Awaitable[None]],
        publish: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._fetcher = fetcher
        self._on_done = on_done
        self._publish = publish
        self._ids = itertools.count(1)
        self.active: dict[int, Transfer] = {}
        self._scopes: dict[int, trio.CancelScope] = {}

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"id": tid, **t.to_json()} for tid, t in self.active.items()]

    async def fetch(
        self,
        spec: FetchSpec,
        progress: Callable[[dict[str, Any]], Awaitable[None]],
        transfer: Transfer | None = None,
    ) -> dict[str, Any]:
        """Run one fetch to completion, reporting progress; return the result map.

        `transfer`, when given, is the live state to fill: the caller may read it afterwards.
        """
        tid = next(self._ids)
        transfer = transfer if transfer is not None else Transfer(spec)
        self.active[tid] = transfer
        self._publish("transfers", {"id": tid, "event": "started", "name": spec.name, "dest": str(spec.dest)})
        try:
            with trio.CancelScope() as scope:
                self._scopes[tid] = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._report, tid, transfer, progress)
                    result = await self._fetcher.fetch(spec, transfer)
                    nursery.cancel_scope.cancel()
            if scope.cancelled_caught:
                raise TransferCancelled(
                    f"the fetch of {spec.name} was cancelled; run it again to resume from what was verified"
                )
        except BaseException as e:
            reason = str(e) or type(e).__name__
            self._publish("transfers", {"id": tid, "event": "failed", "name": spec.name, "reason": reason})
            raise
        finally:
            del self.active[tid]
            del self._scopes[tid]
        self._publish("transfers", {"id": tid, "event": "done", **result.to_json()})
        await self._on_done()
        return result.to_json()

    def _find(self, tid: int) -> Transfer:
        transfer = self.active.get(tid)
        if transfer is None:
            raise UnknownTransfer(f"no transfer {tid} is running; `shoal status` lists them")
        return transfer

    def cancel(self, tid: int) -> dict[str, Any]:
        """Stop a fetch; its verified partial files stay for the next attempt."""
        state = {"id": tid, **self._find(tid).to_json()}
        self._scopes[tid].cancel()
        return state

    def pause(self, tid: int) -> dict[str, Any]:
        transfer = self._find(tid)
        transfer.pause()
        self._publish("transfers", {"id": tid, "event": "paused", **transfer.to_json()})
        return {"id": tid, **transfer.to_json()}

    def resume(self, tid: int) -> dict[str, Any]:
        transfer = self._find(tid)
        transfer.resume()
        self._publish("transfers", {"id": tid, "event": "resumed", **transfer.to_json()})
        return {"id": tid, **transfer.to_json()}

    async def _report(
        self, tid: int, transfer: Transfer, progress: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        while True:
            await trio.sleep(REPORT_INTERVAL)
            transfer.sample_rate(*self._fetcher.caps(transfer))
            self._fetcher.note_waiting(transfer)
            state = {"id": tid, **transfer.to_json()}
            self._publish("transfers", {"event": "progress", **state})
            await progress(state)
