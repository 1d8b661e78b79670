"""The request rules of an open session, in both directions.

Each side numbers its own requests; a request stays open until its END, which
lists exactly the ids that were not delivered (for GET_RUNS: the first ids of
the runs not delivered). A peer may hold at most
MAX_OUTSTANDING_REQUESTS open at us. A peer that breaks these rules commits a
RequestViolation; our own code breaking them is a LocalProtocolError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from shoal.protocol.errors import LocalProtocolError
from shoal.protocol.wire.events import RequestViolation
from shoal.protocol.wire.messages import (
    MAX_REQUEST_ID,
    Cancel,
    Data,
    DataRuns,
    End,
    GetChunks,
    GetObjects,
    GetRuns,
    Message,
)

Request = GetObjects | GetChunks | GetRuns

#: Requests a peer may have open at us at once; one more is a violation.
MAX_OUTSTANDING_REQUESTS = 32


class RequestTable:
    """Requests open in one direction and the ids still owed on each.

    The Connection updates it; the application only reads it.
    """

    def __init__(self) -> None:
        self._owed: dict[int, set[bytes]] = {}
        self._asked: dict[int, tuple[bytes, ...]] = {}
        self._cancelled: set[int] = set()
        #: The open requests that are GET_RUNS (answered with DATA_RUNS, the others with DATA).
        self._runs: set[int] = set()

    def __contains__(self, req: object) -> bool:
        return req in self._owed

    def __len__(self) -> int:
        return len(self._owed)

    def __iter__(self) -> Iterator[int]:
        return iter(tuple(self._owed))

    def pending(self, req: int) -> frozenset[bytes]:
        """Ids of request `req` neither delivered nor declared missing yet."""
        return frozenset(self._owed[req])

    def pending_in_order(self, req: int) -> tuple[bytes, ...]:
        """`pending(req)` in the order the request named them."""
        owed = self._owed[req]
        return tuple(oid for oid in self._asked[req] if oid in owed)

    def owes(self, req: int, object_id: bytes) -> bool:
        """Whether DATA for `object_id` may still come for request `req`."""
        return object_id in self._owed.get(req, ())

    def is_cancelled(self, req: int) -> bool:
        return req in self._cancelled

    def add(self, req: int, ids: tuple[bytes, ...], *, runs: bool = False) -> None:
        self._owed[req] = set(ids)
        self._asked[req] = ids
        if runs:
            self._runs.add(req)

    def refusal(self, req: int, ids: tuple[bytes, ...], *, runs: bool) -> str | None:
        """Why DATA for `ids` of request `req` (with `runs`, DATA_RUNS) breaks the rules; None if it does not."""
        if req not in self._owed:
            return "the request is not open"
        if (req in self._runs) != runs:
            return "GET_RUNS is answered with DATA_RUNS, the others with DATA"
        for oid in ids:
            if not self.owes(req, oid):
                return f"the request does not ask for {oid.hex()}, or not any more"
        return None

    def settle(self, req: int, *ids: bytes) -> None:
        for oid in ids:
            self._owed[req].discard(oid)

    def cancel(self, req: int) -> None:
        self._cancelled.add(req)

    def remove(self, req: int) -> None:
        del self._owed[req]
        del self._asked[req]
        self._cancelled.discard(req)
        self._runs.discard(req)


class Requests:
    """The requests of one session: ours (`sent`) and the peer's (`received`)."""

    def __init__(self) -> None:
        self.sent = RequestTable()
        self.received = RequestTable()
        self._next_req = 0

    def new_id(self) -> int:
        """A request id not open on our side."""
        while True:
            req = self._next_req
            self._next_req = (req + 1) & MAX_REQUEST_ID
            if req not in self.sent:
                return req

    # --- the peer's messages ----------------------------------------------------------

    def receive(self, message: Request | Data | DataRuns | End | Cancel) -> bool:
        """Check a request message from the peer against the rules and book it; whether the
        application should see it (a CANCEL crossing our END is dropped)."""
        return _RECEIVE[type(message)](self, message)

    def _on_request(self, message: Request) -> bool:
        if message.req in self.received:
            raise RequestViolation(f"request id {message.req} is already open")
        if len(self.received) >= MAX_OUTSTANDING_REQUESTS:
            raise RequestViolation(f"more than {MAX_OUTSTANDING_REQUESTS} requests open at once")
        self.received.add(message.req, message.ids, runs=isinstance(message, GetRuns))
        return True

    def _on_data(self, message: Data) -> bool:
        self._delivered(message.req, (message.id,), "DATA")
        return True

    def _on_runs(self, message: DataRuns) -> bool:
        self._delivered(message.req, message.ids, "DATA_RUNS")
        return True

    def _delivered(self, req: int, ids: tuple[bytes, ...], name: str) -> None:
        why = self.sent.refusal(req, ids, runs=name == "DATA_RUNS")
        if why is not None:
            raise RequestViolation(f"{name} for request {req}: {why}")
        self.sent.settle(req, *ids)

    def _on_end(self, message: End) -> bool:
        if message.req not in self.sent:
            raise RequestViolation(f"END for request {message.req}, which is not open")
        if frozenset(message.missing) != self.sent.pending(message.req):
            raise RequestViolation(f"END of request {message.req} must list exactly the ids not delivered")
        self.sent.remove(message.req)
        return True

    def _on_cancel(self, message: Cancel) -> bool:
        # A CANCEL crossing our END names a request we already finished: not an error.
        if message.req not in self.received or self.received.is_cancelled(message.req):
            return False
        self.received.cancel(message.req)
        return True

    # --- ours ---------------------------------------------------------------------------

    def track(self, message: Message) -> bool:
        """Book a message we are about to send; whether it is to be sent at all
        (a CANCEL of a request that already ended is not)."""
        track = _SEND.get(type(message))
        return track is None or track(self, message)

    def settle(self, req: int, *ids: bytes, runs: bool = False) -> None:
        """Book DATA (with `runs`, DATA_RUNS) we send for `ids` on the peer's request `req`."""
        why = self.received.refusal(req, ids, runs=runs)
        if why is not None:
            raise LocalProtocolError(f"request {req}: {why}")
        self.received.settle(req, *ids)

    def _track_request(self, message: Request) -> bool:
        if message.req in self.sent:
            raise LocalProtocolError(f"request id {message.req} is already open")
        if len(self.sent) >= MAX_OUTSTANDING_REQUESTS:
            raise LocalProtocolError(f"{MAX_OUTSTANDING_REQUESTS} requests are open; wait for an END")
        self.sent.add(message.req, message.ids, runs=isinstance(message, GetRuns))
        return True

    def _track_data(self, message: Data) -> bool:
        self.settle(message.req, message.id)
        return True

    def _track_runs(self, message: DataRuns) -> bool:
        self.settle(message.req, *message.ids, runs=True)
        return True

    def _track_end(self, message: End) -> bool:
        if message.req not in self.received:
            raise LocalProtocolError(f"request {message.req} is not open")
        if frozenset(message.missing) != self.received.pending(message.req):
            raise LocalProtocolError(f"END of request {message.req} must list exactly the ids not sent")
        self.received.remove(message.req)
        return True

    def _track_cancel(self, message: Cancel) -> bool:
        # Cancelling a request that already ended (or twice) sends nothing: it races with END.
        if message.req not in self.sent or self.sent.is_cancelled(message.req):
            return False
        self.sent.cancel(message.req)
        return True


_RECEIVE: dict[type, Callable[[Requests, Any], bool]] = {
    GetObjects: Requests._on_request,
    GetChunks: Requests._on_request,
    GetRuns: Requests._on_request,
    Data: Requests._on_data,
    DataRuns: Requests._on_runs,
    End: Requests._on_end,
    Cancel: Requests._on_cancel,
}

_SEND: dict[type, Callable[[Requests, Any], bool]] = {
    GetObjects: Requests._track_request,
    GetChunks: Requests._track_request,
    GetRuns: Requests._track_request,
    Data: Requests._track_data,
    DataRuns: Requests._track_runs,
    End: Requests._track_end,
    Cancel: Requests._track_cancel,
}
