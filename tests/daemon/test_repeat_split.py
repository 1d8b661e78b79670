"""Repeats.split: which places of a repeated chunk are fetched and which wait for the first copy."""

from pathlib import Path

import pytest

from shoal.daemon.fetch import repeats as repeats_module
from shoal.daemon.fetch.job import FileTask
from shoal.daemon.fetch.repeats import Repeats
from shoal.protocol.format.objects import FileEntry, Ref

ZERO = Ref(256, b"\x00" * 32)


def task(name: str) -> FileTask:
    return FileTask((name,), FileEntry(name, 1024, b"\x02" * 32), Path("/nonexistent") / name, 1024, True)


def test_only_the_first_place_of_an_id_is_fetched_across_segments_and_files() -> None:
    repeats = Repeats(None)  # type: ignore[arg-type]
    other = Ref(256, b"\x01" * 32)
    a, b = task("a"), task("b")
    assert repeats.split(a, [(0, ZERO), (256, other), (512, ZERO)]) == [(0, ZERO), (256, other)]
    assert repeats.split(a, [(768, ZERO)]) == []
    assert repeats.split(b, [(0, other), (256, Ref(256, b"\x03" * 32))]) == [(256, Ref(256, b"\x03" * 32))]


def test_past_its_bound_on_waiting_places_a_repeat_is_fetched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repeats_module, "MAX_WAITING", 2)
    repeats = Repeats(None)  # type: ignore[arg-type]
    a = task("a")
    places = [(i * 256, ZERO) for i in range(5)]
    assert repeats.split(a, places) == [places[0], places[3], places[4]]
