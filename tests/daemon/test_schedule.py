"""The fetch scheduler on its own: a batch's life from queued to done, and the endgame."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shoal.daemon.fetch.errors import PeerMisbehaved
from shoal.daemon.fetch.schedule import ENDGAME_COPIES, Batch, Idle, Release, Scheduler

WINDOW = 2


def batch_of(*cids: bytes, size: int = 10) -> Batch[str]:
    batch: Batch[str] = Batch()
    for cid in cids:
        batch.add(cid, size, f"file-of-{cid.hex()}")
    return batch


def scheduler(*peers: str) -> Scheduler[str]:
    schedule: Scheduler[str] = Scheduler(WINDOW)
    for peer in peers:
        schedule.join(peer)
    return schedule


def serve(schedule: Scheduler[str], batch: Batch[str], peer: str) -> None:
    """`peer` delivers every pending chunk of `batch`, all of which verify."""
    for cid in sorted(batch.pending):
        receipt = schedule.receive(batch, peer, cid, batch.sizes[cid])
        assert receipt is not None
        schedule.written(batch, peer, cid, receipt.targets, True)


def test_queued_outstanding_drained_done():
    schedule = scheduler("a")
    batch = batch_of(b"\x01", b"\x02")
    schedule.add(batch)
    assert schedule.take("a") is batch
    assert batch.serving == {"a"}
    assert list(schedule.batches()) == [batch]
    receipt = schedule.receive(batch, "a", b"\x01", 10)
    assert receipt is not None and receipt.targets == ["file-of-01"] and not receipt.cancel
    assert not batch.drained
    schedule.written(batch, "a", b"\x01", receipt.targets, True)
    assert batch.drained and batch.pending == {b"\x02"}
    serve(schedule, batch, "a")
    assert schedule.release(batch, "a") is Release.DONE
    assert list(schedule.batches()) == []
    assert schedule.take("a") is Idle.WAIT  # more may still come
    schedule.close()
    assert schedule.finished
    assert schedule.take("a") is Idle.STOP


def test_a_repeated_chunk_goes_to_every_place():
    batch: Batch[str] = Batch()
    batch.add(b"\x01", 10, "here")
    batch.add(b"\x01", 10, "there")
    assert len(batch) == 1
    schedule = scheduler("a")
    schedule.add(batch)
    schedule.take("a")
    receipt = schedule.receive(batch, "a", b"\x01", 10)
    assert receipt is not None and receipt.targets == ["here", "there"]


def test_a_failed_peers_batch_is_requeued_first_for_another():
    schedule = scheduler("a", "b")
    first, second = batch_of(b"\x01", b"\x02"), batch_of(b"\x03")
    schedule.add(first)
    schedule.add(second)
    assert schedule.take("a") is first
    serve_one = schedule.receive(first, "a", b"\x01", 10)
    assert serve_one is not None
    schedule.written(first, "a", b"\x01", serve_one.targets, True)
    assert schedule.drop("a")
    assert not schedule.drop("a")
    assert schedule.release(first, "a") is Release.REQUEUED
    assert schedule.take("a") is Idle.STOP
    assert schedule.take("b") is first
    assert first.pending == {b"\x02"}
    assert first.serving == {"b"}


def test_endgame_duplicates_a_slow_batch_once_and_cancels_the_loser():
    schedule = scheduler("a", "b", "c")
    batch = batch_of(b"\x01", b"\x02")
    schedule.add(batch)
    assert schedule.take("a") is batch
    assert schedule.take("b") is Idle.WAIT  # no endgame while batches may still come
    schedule.close()
    assert schedule.take("a") is Idle.WAIT  # never a duplicate to its own server
    assert schedule.take("b") is batch
    assert batch.serving == {"a", "b"}
    assert len(batch.serving) == ENDGAME_COPIES
    assert schedule.take("c") is Idle.WAIT  # two copies at most
    first = schedule.receive(batch, "b", b"\x01", 10)
    assert first is not None and not first.cancel
    assert schedule.receive(batch, "a", b"\x01", 10) is None  # the other copy lost
    last = schedule.receive(batch, "a", b"\x02", 10)
    assert last is not None and last.cancel == frozenset({"b"})
    for cid, receipt in ((b"\x01", first), (b"\x02", last)):
        schedule.written(batch, "b" if cid == b"\x01" else "a", cid, receipt.targets, True)
    assert schedule.release(batch, "a") is Release.DONE
    assert schedule.release(batch, "b") is Release.DONE
    assert schedule.finished


def test_a_peer_leaving_the_endgame_leaves_the_batch_to_the_other():
    schedule = scheduler("a", "b")
    batch = batch_of(b"\x01")
    schedule.add(batch)
    schedule.close()
    schedule.take("a")
    assert schedule.take("b") is batch
    assert schedule.release(batch, "a") is Release.SHARED
    assert list(schedule.batches()) == [batch]
    serve(schedule, batch, "b")
    assert schedule.release(batch, "b") is Release.DONE
    assert schedule.finished


def test_a_chunk_that_does_not_verify_is_pending_again_and_its_sender_a_liar():
    schedule = scheduler("a", "b")
    batch = batch_of(b"\x01")
    schedule.add(batch)
    schedule.take("a")
    receipt = schedule.receive(batch, "a", b"\x01", 10)
    assert receipt is not None
    schedule.written(batch, "a", b"\x01", receipt.targets, False)
    assert batch.pending == {b"\x01"} and batch.liars == {"a"} and batch.drained
    assert batch.targets[b"\x01"] == ["file-of-01"]
    assert schedule.release(batch, "a") is Release.REQUEUED
    assert schedule.take("b") is batch


def test_unasked_or_wrongly_sized_chunks_are_misbehaviour():
    schedule = scheduler("a")
    batch = batch_of(b"\x01")
    schedule.add(batch)
    schedule.take("a")
    with pytest.raises(PeerMisbehaved, match="not asked for"):
        schedule.receive(batch, "a", b"\x09", 10)
    with pytest.raises(PeerMisbehaved, match="the manifest says 10"):
        schedule.receive(batch, "a", b"\x01", 11)
    assert batch.pending == {b"\x01"} and batch.drained


def test_a_batch_refused_by_every_live_peer_is_stuck():
    schedule = scheduler("a", "b", "c")
    batch = batch_of(b"\x01")
    schedule.add(batch)
    assert schedule.take("a") is batch
    assert not schedule.refused(batch, "a")
    assert schedule.release(batch, "a") is Release.REQUEUED
    assert schedule.take("a") is Idle.WAIT  # not asked again of a peer that lacks it
    schedule.drop("c")
    assert schedule.take("b") is batch
    assert schedule.refused(batch, "b")  # c, dropped, does not count


def test_the_queue_is_bounded_by_the_peers_windows():
    schedule = scheduler()
    for n in range(2 * WINDOW):
        assert schedule.has_room()
        schedule.add(batch_of(bytes([n])))
    assert not schedule.has_room()
    schedule.join("a")
    schedule.join("b")
    assert schedule.has_room()
    schedule.leave("b")
    assert not schedule.has_room()


PEERS = ("a", "b", "c")


class SchedulerMachine(RuleBasedStateMachine):
    """Random events from peers that deliver, fail, lie, refuse and leave: no chunk is lost or counted twice."""

    def __init__(self) -> None:
        super().__init__()
        self.schedule: Scheduler[bytes] = Scheduler(WINDOW)
        self.all: set[bytes] = set()
        self.done: list[bytes] = []
        self.requests: list[tuple[str, Batch[bytes]]] = []
        self.writing: list[tuple[str, Batch[bytes], bytes, list[bytes]]] = []
        self.closed = False
        self.next_id = 0

    @precondition(lambda self: not self.closed)
    @rule(n=st.integers(1, 4))
    def add_batch(self, n: int) -> None:
        batch: Batch[bytes] = Batch()
        for _ in range(n):
            cid = self.next_id.to_bytes(4, "big")
            self.next_id += 1
            batch.add(cid, 1, cid)
            self.all.add(cid)
        self.schedule.add(batch)

    @rule()
    def close(self) -> None:
        self.closed = True
        self.schedule.close()

    @rule(peer=st.sampled_from(PEERS))
    def join(self, peer: str) -> None:
        self.schedule.join(peer)

    @rule(peer=st.sampled_from(PEERS))
    def take(self, peer: str) -> None:
        decision = self.schedule.take(peer)
        if isinstance(decision, Batch):
            assert (peer, decision) not in self.requests
            self.requests.append((peer, decision))

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        peer, batch = data.draw(st.sampled_from(self.requests))
        cid = data.draw(st.sampled_from(sorted(batch.sizes)))
        receipt = self.schedule.receive(batch, peer, cid, 1)
        if receipt is not None:
            assert receipt.targets == [cid]
            assert all(w[2] != cid for w in self.writing)
            self.writing.append((peer, batch, cid, receipt.targets))

    @precondition(lambda self: self.writing)
    @rule(data=st.data(), good=st.booleans())
    def write(self, data: st.DataObject, good: bool) -> None:
        item = data.draw(st.sampled_from(self.writing))
        self.writing.remove(item)
        peer, batch, cid, targets = item
        self.schedule.written(batch, peer, cid, targets, good)
        if good:
            assert cid not in self.done
            self.done.append(cid)

    @precondition(lambda self: any(batch.drained for _, batch in self.requests))
    @rule(data=st.data(), how=st.sampled_from(["served", "refused", "failed", "dropped"]))
    def end_request(self, data: st.DataObject, how: str) -> None:
        peer, batch = data.draw(st.sampled_from([r for r in self.requests if r[1].drained]))
        self.requests.remove((peer, batch))
        if how == "refused" and batch.pending:
            self.schedule.refused(batch, peer)
        elif how == "dropped":
            self.schedule.drop(peer)
        self.schedule.release(batch, peer)

    @invariant()
    def every_chunk_is_in_exactly_one_place(self) -> None:
        batches = list(self.schedule.batches())
        assert len({id(b) for b in batches}) == len(batches)
        pending = [cid for b in batches for cid in b.pending]
        writing = [w[2] for w in self.writing]
        places = pending + writing + self.done
        assert sorted(places) == sorted(self.all)

    @invariant()
    def serving_matches_the_requests(self) -> None:
        for batch in self.schedule.batches():
            assert batch.serving == {peer for peer, b in self.requests if b is batch}
            assert len(batch.serving) <= ENDGAME_COPIES
            assert batch.writing == sum(1 for w in self.writing if w[1] is batch)

    def teardown(self) -> None:
        """An honest new peer finishes whatever is left."""
        for peer, batch, cid, targets in self.writing:
            self.schedule.written(batch, peer, cid, targets, True)
            self.done.append(cid)
        for peer, batch in self.requests:
            self.schedule.release(batch, peer)
        self.schedule.close()
        self.schedule.join("honest")
        for _ in range(len(self.all) + 1):
            batch = self.schedule.take("honest")
            if batch is Idle.STOP:
                break
            assert isinstance(batch, Batch)
            for cid in sorted(batch.pending):
                receipt = self.schedule.receive(batch, "honest", cid, 1)
                assert receipt is not None
                self.schedule.written(batch, "honest", cid, receipt.targets, True)
                self.done.append(cid)
            assert self.schedule.release(batch, "honest") is Release.DONE
        assert self.schedule.finished
        assert sorted(self.done) == sorted(self.all)


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
