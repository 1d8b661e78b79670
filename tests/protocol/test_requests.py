"""The request rules of an open session, on their own (the Connection applies them)."""

import pytest

from shoal.protocol.errors import LocalProtocolError
from shoal.protocol.wire.events import RequestViolation
from shoal.protocol.wire.messages import MAX_REQUEST_ID, Cancel, Data, End, GetChunks, GetObjects
from shoal.protocol.wire.requests import MAX_OUTSTANDING_REQUESTS, Requests

A, B = b"\xaa" * 32, b"\xbb" * 32


def test_a_request_the_peer_makes_is_owed_until_its_end() -> None:
    requests = Requests()
    assert requests.receive(GetObjects(5, (A, B)))
    requests.settle(5, A)
    assert requests.received.pending(5) == {B}
    with pytest.raises(LocalProtocolError, match="does not ask for"):
        requests.settle(5, A)  # sent once already
    with pytest.raises(LocalProtocolError, match="exactly the ids not sent"):
        requests.track(End(5, ()))
    assert requests.track(End(5, (B,)))
    assert 5 not in requests.received


def test_our_request_takes_data_it_asked_for_and_the_end_that_matches() -> None:
    requests = Requests()
    req = requests.new_id()
    assert requests.track(GetChunks(req, (A, B)))
    assert requests.receive(Data(req, A, b"x"))
    with pytest.raises(RequestViolation, match="does not ask for"):
        requests.receive(Data(req, A, b"x"))
    with pytest.raises(RequestViolation, match="exactly the ids not delivered"):
        requests.receive(End(req, ()))
    assert requests.receive(End(req, (B,)))
    with pytest.raises(RequestViolation, match="not open"):
        requests.receive(End(req, (B,)))


def test_limits_and_ids() -> None:
    requests = Requests()
    for req in range(MAX_OUTSTANDING_REQUESTS):
        requests.receive(GetObjects(req, (A,)))
    with pytest.raises(RequestViolation, match="already open"):
        requests.receive(GetObjects(0, (A,)))
    with pytest.raises(RequestViolation, match="at once"):
        requests.receive(GetObjects(MAX_OUTSTANDING_REQUESTS, (A,)))
    ours = [requests.new_id() for _ in range(MAX_OUTSTANDING_REQUESTS)]
    for req in ours:
        requests.track(GetObjects(req, (A,)))
    with pytest.raises(LocalProtocolError, match="wait for an END"):
        requests.track(GetObjects(requests.new_id(), (A,)))
    # Ids wrap around and skip those still open.
    requests._next_req = MAX_REQUEST_ID
    assert requests.new_id() == MAX_REQUEST_ID and requests.new_id() == MAX_OUTSTANDING_REQUESTS


def test_a_cancel_that_crosses_an_end_is_dropped_both_ways() -> None:
    requests = Requests()
    req = requests.new_id()
    requests.track(GetObjects(req, (A,)))
    assert requests.track(Cancel(req))
    assert not requests.track(Cancel(req))  # twice: nothing more to send
    requests.receive(End(req, (A,)))
    assert not requests.track(Cancel(req))  # already ended
    assert not requests.receive(Cancel(9))  # the peer cancels what we already ended
    requests.receive(GetObjects(9, (A,)))
    assert requests.receive(Cancel(9)) and requests.received.is_cancelled(9)
    assert not requests.receive(Cancel(9))
