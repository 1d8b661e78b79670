"""The keep-local rule of a subscription's update, on a real folder and index.

The folder is shared first, so the index holds its objects and a stat record of
every file, as it does for a folder a fetch wrote.
"""

import os
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.fetch.local_changes import MAX_REPORTED, Conflict, ConflictLog, KeepLocal
from shoal.daemon.library.datasets import Library
from shoal.daemon.store.loader import index_loader
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import EntryType, FileEntry, TreeEntry

pytestmark = pytest.mark.trio

KEY = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)


@pytest.fixture
async def shared(tmp_path: Path):
    """(library, folder, {name: entry} of its root) after sharing a small folder."""
    home = tmp_path / "home"
    home.mkdir()
    folder = tmp_path / "dest"
    (folder / "sub").mkdir(parents=True)
    for name in ("same.bin", "touched.bin", "edited.bin", "gone.bin", "newer.bin"):
        (folder / name).write_bytes(os.urandom(5000))
    (folder / "sub" / "x.bin").write_bytes(os.urandom(100))
    (folder / "link").symlink_to("same.bin")
    library = Library.open(home, KEY)
    result = await library.share(folder, name="ds", message="")
    entries = {e.name: e for e in tree_entries(index_loader(library.index), result.version.root)}
    yield library, folder, entries
    library.close()


def other(entry: TreeEntry) -> TreeEntry:
    """The same path in a newer version, with other content."""
    if entry.type == EntryType.SYMLINK:
        return replace(entry, target="elsewhere")
    return replace(entry, id=b"\x01" * 32)


async def test_only_what_the_user_changed_is_kept(shared) -> None:
    library, folder, old = shared
    conflicts: list[Conflict] = []
    guard = KeepLocal(library.index, folder, 7, conflicts.append)
    os.utime(folder / "touched.bin", ns=(1, 1))  # stat differs, bytes do not: still the fetch's
    with open(folder / "edited.bin", "r+b") as f:
        f.write(b"mine")
    (folder / "added.txt").write_text("mine")
    (folder / "sub" / "notes.txt").write_text("mine")
    (folder / "gone.bin").unlink()

    for name in ("same.bin", "touched.bin", "edited.bin", "link"):
        guard.make_way((name,), old[name], other(old[name]))
    guard.make_way(("added.txt",), None, FileEntry("added.txt", 3, b"\x02" * 32))
    # A file recorded as written by a fetch of a version newer than `old` (an interrupted update).
    guard.make_way(("newer.bin",), None, other(old["newer.bin"]))
    guard.remove(index_loader(library.index), ("sub",), old["sub"])
    assert guard.left_deleted(("gone.bin",), old["gone.bin"], old["gone.bin"]) is True
    assert guard.left_deleted(("gone.bin",), old["gone.bin"], other(old["gone.bin"])) is False
    assert guard.left_deleted(("same.bin",), old["same.bin"], old["same.bin"]) is False

    assert conflicts == [
        Conflict("edited.bin", "edited", "edited.bin.shoal-conflict-7"),
        Conflict("added.txt", "added", "added.txt.shoal-conflict-7"),
        Conflict("sub/notes.txt", "added", "sub/notes.txt"),
        Conflict("gone.bin", "deleted", None),
    ]
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "added.txt.shoal-conflict-7", "edited.bin.shoal-conflict-7", "link", "newer.bin", "same.bin", "sub",
        "touched.bin",
    ]
    assert (folder / "edited.bin.shoal-conflict-7").read_bytes()[:4] == b"mine"
    assert [p.name for p in (folder / "sub").iterdir()] == ["notes.txt"]


async def test_a_removed_folder_holding_only_the_fetch_s_files_goes(shared) -> None:
    library, folder, old = shared
    conflicts: list[Conflict] = []
    guard = KeepLocal(library.index, folder, 2, conflicts.append)
    guard.remove(index_loader(library.index), ("sub",), old["sub"])
    guard.remove(index_loader(library.index), ("same.bin",), old["same.bin"])
    with open(folder / "edited.bin", "r+b") as f:
        f.write(b"mine")
    guard.remove(index_loader(library.index), ("edited.bin",), old["edited.bin"])
    assert conflicts == [Conflict("edited.bin", "edited", "edited.bin")]
    assert not (folder / "sub").exists() and not (folder / "same.bin").exists()
    assert (folder / "edited.bin").read_bytes()[:4] == b"mine"


async def test_conflict_names_never_replace_an_existing_file(shared) -> None:
    library, folder, old = shared
    conflicts: list[Conflict] = []
    guard = KeepLocal(library.index, folder, 3, conflicts.append)
    (folder / "edited.bin.shoal-conflict-3").write_text("an older conflict copy")
    (folder / "edited.bin").write_text("mine")
    guard.make_way(("edited.bin",), old["edited.bin"], other(old["edited.bin"]))
    assert conflicts == [Conflict("edited.bin", "edited", "edited.bin.shoal-conflict-3-2")]
    assert (folder / "edited.bin.shoal-conflict-3").read_text() == "an older conflict copy"
    assert (folder / "edited.bin.shoal-conflict-3-2").read_text() == "mine"


async def test_one_update_reports_a_bounded_number_of_conflicts() -> None:
    log = ConflictLog()
    for i in range(MAX_REPORTED + 50):
        log.add(Conflict(f"f{i}", "edited", f"f{i}.shoal-conflict-2"))
    assert log.total == MAX_REPORTED + 50
    assert [c.path for c in log.reported] == [f"f{i}" for i in range(MAX_REPORTED)]
