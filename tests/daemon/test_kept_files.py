"""FILE objects the manifest walk decoded reach the copier without a second read and decode."""

import os
from pathlib import Path

import pytest

from shoal.daemon.fetch import objects as objects_module
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.store.index import Index
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.chunking import DEFAULT_PARAMS
from shoal.protocol.format.objects import FileEntry, FileObject, Ref, encode_with_id


def downloaded(count: int) -> tuple[list[FileEntry], dict[bytes, object]]:
    """Entries of `count` one-chunk files whose FILE objects the index does not hold."""
    entries, decoded = [], {}
    for i in range(count):
        file = FileObject(10, DEFAULT_PARAMS, 0, (Ref(10, os.urandom(32)),))
        oid, _ = encode_with_id(file)
        entries.append(FileEntry(f"f{i}", 10, oid))
        decoded[oid] = file
    return entries, decoded


def test_the_copier_takes_what_the_walk_kept_once(tmp_path: Path) -> None:
    objects = Objects(Index(tmp_path / "index.db"), str)
    entries, decoded = downloaded(3)
    walked = objects.files(entries, decoded, keep=True)
    # Nothing is in the index: only the kept objects can answer.
    assert objects.files(entries[:2]) == walked[:2]
    assert objects.file(entries[2].id) == walked[2]
    with pytest.raises(ProtocolError, match="not in the index"):
        objects.files(entries[:1])


def test_without_keep_nothing_is_kept(tmp_path: Path) -> None:
    objects = Objects(Index(tmp_path / "index.db"), str)
    entries, decoded = downloaded(1)
    objects.files(entries, decoded)
    with pytest.raises(ProtocolError, match="not in the index"):
        objects.files(entries)


def test_at_most_kept_files_are_kept_the_oldest_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects_module, "KEPT_FILES", 2)
    objects = Objects(Index(tmp_path / "index.db"), str)
    entries, decoded = downloaded(3)
    walked = objects.files(entries, decoded, keep=True)
    assert objects.files(entries[1:]) == walked[1:]
    with pytest.raises(ProtocolError, match="not in the index"):
        objects.files(entries[:1])
