"""The daemon's exact draw (SQLite-sorted keys over a stored tree) against SPEC.md's vectors,
and the per-file draw of older records selecting what it always did."""

import pytest

from shoal.daemon.fetch.draw import Draw, exact_draw, included_paths
from shoal.daemon.fetch.selection import selection_key, selection_matcher
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.objects import DRAW_EXACT, Subset, decode_version
from shoal.protocol.format.subsets import in_sample
from tests.protocol.test_subset_vectors import VERSION_1_PATHS, VERSION_2_PATHS, draw_by_hand
from tests.protocol.test_vectors import shoal_build

BUILT = shoal_build()


def load(kind: Kind, object_id: bytes) -> bytes:
    return BUILT.store[object_id]


def root_of(version: int) -> bytes:
    vid, data, _ = BUILT.versions[version - 1]
    return decode_version(data, vid).root


def test_included_paths_are_the_files_and_links_a_walk_finds() -> None:
    assert sorted(included_paths(load, root_of(1), ())) == sorted(VERSION_1_PATHS)
    assert sorted(included_paths(load, root_of(2), ())) == sorted(VERSION_2_PATHS)
    assert sorted(included_paths(load, root_of(1), ("data/*",))) == ["data/big.bin", "data/random.bin", "data/up"]
    # A pattern without a slash matches at any depth, as in gitignore: checkpoints by their suffix.
    assert sorted(included_paths(load, root_of(1), ("*.bin",))) == ["data/big.bin", "data/random.bin"]
    assert sorted(included_paths(load, root_of(1), ("/*.bin", "/run.sh"))) == ["run.sh"]


@pytest.mark.parametrize(
    "version, sample", [(2, 100_000), (2, 500_000), (1, 100_000), (1, 500_000), (1, 999_999), (1, 1)]
)
def test_the_draw_over_a_stored_tree_is_the_specs(version: int, sample: int) -> None:
    paths = VERSION_1_PATHS if version == 1 else VERSION_2_PATHS
    expected = draw_by_hand(paths, sample, 7)
    draw = exact_draw(load, root_of(version), Subset("s", (), sample, 7, DRAW_EXACT))
    assert draw == Draw(len(paths), len(expected), expected[-1])
    matcher = selection_matcher((), Subset("s", (), sample, 7, DRAW_EXACT), draw)
    picked = {p for p in paths if matcher(tuple(p.split("/")), False)}
    assert picked == {key[8:].decode() for key in expected}


def test_patterns_narrow_the_population_before_the_draw() -> None:
    subset = Subset("s", ("many/",), 100_000, 7, DRAW_EXACT)
    draw = exact_draw(load, root_of(1), subset)
    assert (draw.files, draw.drawn) == (1025, 103)
    matcher = selection_matcher((), subset, draw)
    assert not matcher(("README.txt",), False) and not matcher(("data", "big.bin"), False)
    assert sum(matcher(tuple(p.split("/")), False) for p in VERSION_1_PATHS) == 103


def test_a_per_file_record_selects_what_it_always_did() -> None:
    legacy = Subset("tenth", (), 100_000, 7)
    matcher = selection_matcher((), legacy)
    assert {p for p in VERSION_1_PATHS if matcher(tuple(p.split("/")), False)} == {
        p for p in VERSION_1_PATHS if in_sample(p, 100_000, 7)
    }
    # A folder fetched with it before keeps matching its recorded selection.
    assert selection_key((), legacy) == selection_key((), legacy, None)


def test_an_exact_selection_changes_with_its_draw() -> None:
    subset = Subset("s", (), 100_000, 7, DRAW_EXACT)
    one = exact_draw(load, root_of(1), subset)
    two = exact_draw(load, root_of(2), subset)
    assert selection_key((), subset, one) != selection_key((), subset, two)
    assert selection_key((), subset, one) != selection_key((), Subset("s", (), 100_000, 7), None)
