"""Read-ahead of files served in order: past runs that continue their file, not past the others."""

from shoal.daemon.store.readahead import ReadAhead

MB = 1 << 20


def test_runs_in_order_are_read_ahead_and_nothing_is_asked_twice() -> None:
    ahead = ReadAhead(ahead=32 * MB)
    # The first run of a file: just itself.
    assert ahead.extents("f", 0, 4 * MB) == [("f", 0, 4 * MB)]
    # The next one continues it: itself and 32 MiB past it.
    assert ahead.extents("f", 4 * MB, 4 * MB) == [("f", 4 * MB, 36 * MB)]
    # Runs inside what was asked for cost nothing more than keeping 32 MiB ahead.
    assert ahead.extents("f", 8 * MB, 4 * MB) == [("f", 40 * MB, 4 * MB)]
    # Out of order by a little (several requests in flight) still counts as in order.
    assert ahead.extents("f", 16 * MB, 4 * MB) == [("f", 44 * MB, 8 * MB)]
    assert ahead.extents("f", 12 * MB, 4 * MB) == []


def test_a_run_away_from_what_was_served_reads_only_itself() -> None:
    ahead = ReadAhead(ahead=32 * MB)
    ahead.extents("f", 0, 4 * MB)
    # A delta: a run far into the file, then one far back.
    assert ahead.extents("f", 500 * MB, 1 * MB) == [("f", 500 * MB, 1 * MB)]
    assert ahead.extents("f", 100 * MB, 1 * MB) == [("f", 100 * MB, 1 * MB)]
    # Another file is followed on its own.
    assert ahead.extents("g", 4 * MB, 4 * MB) == [("g", 4 * MB, 4 * MB)]


def test_only_so_many_files_are_remembered() -> None:
    ahead = ReadAhead(ahead=MB, files=2)
    for name in ("a", "b", "c"):
        ahead.extents(name, 0, MB)
    # "a" was forgotten: its next run is not known to continue it.
    assert ahead.extents("a", MB, MB) == [("a", MB, MB)]
    assert ahead.extents("c", MB, MB) == [("c", MB, 2 * MB)]
