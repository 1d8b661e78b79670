"""Per-file settling rules (shoal/daemon/watch/settle.py), without I/O: times are plain numbers."""

from shoal.daemon.watch.settle import MAX_TRACKED, Changes, files_message, plan

QUIET = 1.0
MAX_WAIT = 60.0


def planned(changes: Changes, now: float, writers: tuple[str, ...] = ()):
    return plan(changes, set(writers), now, QUIET, MAX_WAIT)


def test_a_burst_of_files_publishes_once_its_last_file_settles() -> None:
    changes = Changes()
    for i in range(5):
        changes.add(f"shards/{i}.bin", 0.3 * i, False)
    changes.add("shards", 0.0, True)
    early = planned(changes, 1.5)
    assert not early.ready, "the first files settled while the last ones were still arriving"
    assert (early.state, early.detail) == ("settling", "3 files changing")
    assert early.wake == 0.3 * 4 + QUIET
    ready = planned(changes, 0.3 * 4 + QUIET)
    assert ready.ready and ready.hold == () and len(ready.publish) == 6
    assert ready.message == "watch: 5 files changed" and ready.counts_files


def test_a_log_open_for_writing_does_not_hold_back_a_checkpoint() -> None:
    changes = Changes()
    for t in (0.0, 0.2, 0.4, 5.0, 5.2, 5.4, 6.6):
        changes.add("train.log", t, False)
    changes.add("ckpt_small.pt", 1.0, False)
    changes.add("ckpt_small.pt", 5.5, False)
    writing = planned(changes, 5.6, ("train.log", "ckpt_small.pt"))
    assert not writing.ready
    assert (writing.state, writing.detail) == ("waiting", "ckpt_small.pt, train.log open for writing")
    assert 5.6 < writing.wake <= 5.6 + QUIET
    closed = planned(changes, 6.6, ("train.log",))
    assert closed.ready
    assert closed.publish == {"ckpt_small.pt": 5.5} and closed.hold == ("train.log",)
    assert closed.message == "watch: 1 file changed (ckpt_small.pt)"
    changes.published(closed, 7.0)
    assert set(changes.paths) == {"train.log"} and len(changes) == 1
    alone = planned(changes, 7.0, ("train.log",))
    assert not alone.ready and alone.detail == "train.log open for writing"


def test_a_file_rewritten_again_and_again_is_held_while_others_settle() -> None:
    changes = Changes()
    for i in range(20):
        changes.add("metrics.csv", 0.2 * i, False)
    changes.add("eval.json", 2.0, False)
    ready = planned(changes, 3.9)
    assert ready.ready and ready.hold == ("metrics.csv",) and set(ready.publish) == {"eval.json"}
    changes.published(ready, 3.9)
    held = planned(changes, 3.9)
    assert not held.ready and (held.state, held.detail) == ("waiting", "metrics.csv still changing")
    # Once it stops, it settles like any file.
    last = changes.paths["metrics.csv"].last
    assert planned(changes, last + QUIET).publish == {"metrics.csv": last}


def test_a_file_held_for_max_wait_is_published_as_it_is() -> None:
    changes = Changes()
    changes.add("events.out", 0.0, False)
    changes.add("events.out", MAX_WAIT - 0.5, False)
    assert not planned(changes, MAX_WAIT - 0.1, ("events.out",)).ready
    expired = planned(changes, MAX_WAIT, ("events.out",))
    assert expired.ready and expired.publish == {"events.out": MAX_WAIT - 0.5} and expired.hold == ()


def test_a_path_changed_while_being_shared_stays_pending() -> None:
    changes = Changes()
    changes.add("a.bin", 0.0, False)
    ready = planned(changes, 2.0)
    changes.add("a.bin", 2.5, False)
    changes.published(ready, 3.0)
    assert "a.bin" in changes.paths and bool(changes)


def test_a_catch_up_holds_files_open_for_writing_and_follows_them() -> None:
    changes = Changes()
    changes.start_catch_up(0.0)
    first = planned(changes, 0.5, ("train.log",))
    assert not first.ready and first.detail == "changes made while not watched"
    ready = planned(changes, 1.0, ("train.log",))
    assert ready.ready and ready.hold == ("train.log",) and ready.track == ("train.log",)
    assert ready.message == "watch: changes made while not watched"
    changes.published(ready, 1.0)
    assert changes.whole is None and set(changes.paths) == {"train.log"}
    assert planned(changes, 2.0).publish == {"train.log": 1.0}


def test_past_the_cap_changes_are_counted_and_settle_as_a_whole() -> None:
    changes = Changes()
    for i in range(MAX_TRACKED + 500):
        changes.add(f"{i}.bin", i / 10_000, False)
    assert len(changes.paths) == MAX_TRACKED and changes.untracked == 500 and len(changes) == MAX_TRACKED + 500
    last = (MAX_TRACKED + 499) / 10_000
    assert not planned(changes, last + 0.5).ready
    # A file open for writing may be one of the untracked changes: the version holds it, and it is followed.
    ready = planned(changes, last + QUIET, ("late.bin",))
    assert ready.ready and ready.whole == last and ready.message == f"watch: over {MAX_TRACKED:,} files changed"
    assert ready.hold == ("late.bin",) == ready.track
    changes.published(ready, last + QUIET)
    assert changes.whole is None and list(changes.paths) == ["late.bin"] and len(changes) == 1


def test_the_plan_never_wakes_at_once_for_a_file_that_stays_open() -> None:
    changes = Changes()
    changes.add("train.log", 0.0, False)
    for now in (2.0, 10.0, 30.0):
        waiting = planned(changes, now, ("train.log",))
        assert not waiting.ready and waiting.wake == now + QUIET


def test_a_version_lingers_for_a_held_file_about_to_settle() -> None:
    changes = Changes()
    for i in range(10):
        changes.add("train.log", 0.2 * i, False)
        changes.add("metrics.csv", 0.2 * i + 0.3, False)
    ready = planned(changes, 1.8 + QUIET)
    assert ready.ready and ready.hold == ("metrics.csv",) and ready.linger == changes.paths["metrics.csv"].last + QUIET
    assert planned(changes, ready.linger).publish.keys() == {"train.log", "metrics.csv"}


def test_files_arriving_without_end_hold_a_burst_back_for_max_wait_at_most() -> None:
    changes = Changes()
    changes.add("ckpt.pt", 0.0, False)
    for step in range(1, 150):
        changes.add(f"samples/{step:04d}.png", 0.5 * step, False)
        now = 0.5 * step + 0.1
        waiting = planned(changes, now)
        if now < MAX_WAIT:
            assert not waiting.ready and waiting.detail == "2 files changing", now
            assert waiting.wake <= MAX_WAIT
        else:
            assert waiting.ready and waiting.hold == (f"samples/{step - 1:04d}.png", f"samples/{step:04d}.png")
            assert "ckpt.pt" in waiting.publish and waiting.message == f"watch: {step - 1} files changed"
            return
    raise AssertionError("the burst was never published")


def test_a_version_that_counts_files_is_worded_from_what_it_changes() -> None:
    # The share words it again from the version's own changes: events for files that
    # changed after the plan (a burst slower than its events) are not all in yet.
    assert files_message(iter(f"shards/{i:04d}.bin" for i in range(300))) == "watch: 300 files changed"
    assert files_message(iter(["b.pt", "a.log"])) == "watch: 2 files changed (a.log, b.pt)"
    assert files_message(iter([])) == "watch: the folder changed"
    folders = Changes()
    folders.add("empty", 0.0, True)
    assert not planned(folders, 2.0).counts_files, "a version of folders alone keeps its message"
