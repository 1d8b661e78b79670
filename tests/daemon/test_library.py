"""The local library over real folders: share, re-share, verify, and bad input.

Expected root ids are computed here by walking the folder directly and building
the tree with the protocol builders, independently of the scanner's stat cache.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.library import scanner
from shoal.daemon.library.datasets import Library
from shoal.daemon.store.loader import index_loader
from shoal.errors import ShareError, UnknownDataset
from shoal.protocol.format.chunking import DEFAULT_PARAMS, make_chunker
from shoal.protocol.format.hashing import chunk_id
from shoal.protocol.format.manifest import FileBuilder, TreeBuilder, tree_entries
from shoal.protocol.format.objects import DirEntry, FileEntry, SymlinkEntry

pytestmark = pytest.mark.trio

KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
MIB = 1024 * 1024


def noise(label: str, n: int) -> bytes:
    return blake3.blake3(label.encode()).digest(length=n)


def expected_root(path: Path) -> tuple[bytes, int, int]:
    """(tree id, size, files) of a clean folder, built straight from its bytes."""
    builder = TreeBuilder(lambda i, d: None)
    files = 0
    for name in sorted(os.listdir(path), key=os.fsencode):
        p = path / name
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(p)
            builder.add(SymlinkEntry(name, target))
        elif stat.S_ISDIR(st.st_mode):
            tree_id, size, below = expected_root(p)
            builder.add(DirEntry(name, size, tree_id))
            files += below
        else:
            file = FileBuilder(DEFAULT_PARAMS, lambda i, d: None)
            for c in make_chunker(DEFAULT_PARAMS).cut_buf(p.read_bytes()):
                file.add_chunk(chunk_id(c.data), c.length)
            file_id, size = file.finish()
            builder.add(FileEntry(name, size, file_id, bool(st.st_mode & stat.S_IXUSR)))
            files += 1
    return builder.finish(), builder.size, files


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def lib(home: Path):
    library = Library.open(home, KEY)
    yield library
    library.close()


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    """A small dataset: nested folders, an empty file, an executable, a multi-chunk file, symlinks."""
    root = tmp_path / "ds"
    (root / "train" / "cats").mkdir(parents=True)
    (root / "val").mkdir()
    (root / "empty-dir").mkdir()
    (root / "README.md").write_text("# ds\n")
    (root / "train" / "cats" / "1.jpg").write_bytes(noise("cat 1", 3000))
    (root / "train" / "cats" / "2.jpg").write_bytes(noise("cat 2", 5000))
    (root / "train" / "shard.bin").write_bytes(noise("shard", 600_000))
    (root / "val" / "labels.csv").write_text("a,1\nb,2\n")
    (root / "val" / "empty").write_bytes(b"")
    (root / "prep.sh").write_text("#!/bin/sh\n")
    (root / "prep.sh").chmod(0o755)
    (root / "latest").symlink_to("train/shard.bin")
    (root / "val" / "readme").symlink_to("../README.md")
    return root


FILES_IN_DS = 7


async def test_first_share(lib: Library, ds: Path) -> None:
    result = await lib.share(ds, message="first")
    root, size, files = expected_root(ds)
    assert result.created and result.warnings == ()
    v = result.version
    assert (v.name, v.seq, v.parents, v.message) == ("ds", 1, (), "first")
    assert (v.root, v.size, v.files) == (root, size, files)
    assert files == FILES_IN_DS and result.files_rehashed == FILES_IN_DS
    assert result.new_bytes == sum(p.stat().st_size for p in ds.rglob("*") if p.is_file() and not p.is_symlink())
    assert [i.id for i in lib.log("ds")] == [v.id]
    [info] = lib.datasets()
    assert (info.name, info.path, info.head.id, info.versions) == ("ds", str(ds), v.id, 1)


async def test_reshare_unchanged_makes_no_version_and_hashes_nothing(lib: Library, ds: Path) -> None:
    first = await lib.share(ds)
    again = await lib.share(ds)
    assert not again.created
    assert again.version.id == first.version.id
    assert again.files_rehashed == 0 and again.new_bytes == 0
    assert again.files_scanned == FILES_IN_DS
    assert len(lib.log("ds")) == 1


async def test_changed_file_makes_version_2_and_rehashes_only_it(lib: Library, ds: Path) -> None:
    first = await lib.share(ds)
    with open(ds / "train" / "cats" / "2.jpg", "ab") as f:
        f.write(b"more")
    second = await lib.share(ds, message="append")
    assert second.created and second.files_rehashed == 1
    assert second.version.seq == 2 and second.version.parents == (first.version.id,)
    assert second.version.root == expected_root(ds)[0] != first.version.root
    assert [v.seq for v in lib.log("ds")] == [2, 1]


async def test_a_described_message_is_worded_from_the_paths_the_version_changes(lib: Library, ds: Path) -> None:
    seen: list[list[str]] = []

    def describe(changed) -> str:
        seen.append(list(changed))
        return f"{len(seen[-1])} changed"

    first = await lib.share(ds, describe=describe)
    assert first.version.message == "9 changed", "every file and link of a first version"
    (ds / "val" / "labels.csv").write_text("a,1\n")
    (ds / "train" / "new.jpg").write_bytes(noise("new", 100))
    second = await lib.share(ds, describe=describe)
    assert second.version.message == "2 changed" and seen[1] == ["train/new.jpg", "val/labels.csv"]
    again = await lib.share(ds, describe=describe)
    assert not again.created and len(seen) == 2, "no version, nothing to word"


async def test_a_head_not_all_stored_here_keeps_the_callers_message(lib: Library, ds: Path) -> None:
    first = await lib.share(ds)
    # The head's manifest in part only, as after a fetch of a few folders of it.
    val = next(e for e in tree_entries(index_loader(lib.index), first.version.root) if e.name == "val")
    lib.index._db.execute("DELETE FROM objects WHERE id = ?", (val.id,))
    (ds / "val" / "labels.csv").write_text("a,1\n")
    second = await lib.share(ds, message="watch: 1 file changed", describe=lambda changed: f"{len(list(changed))}")
    assert second.created and second.version.message == "watch: 1 file changed"


async def test_same_size_rewrite_is_seen(lib: Library, ds: Path) -> None:
    first = await lib.share(ds)
    (ds / "val" / "labels.csv").write_text("a,3\nb,4\n")  # same length, new bytes
    second = await lib.share(ds)
    assert second.created and second.files_rehashed == 1
    assert second.version.root == expected_root(ds)[0] != first.version.root


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: (ds / "README.md").unlink(),
        lambda ds: shutil.rmtree(ds / "train" / "cats"),
        lambda ds: (ds / "empty-dir").rmdir(),
        lambda ds: (ds / "latest").unlink(),
        lambda ds: (ds / "prep.sh").chmod(0o644),
    ],
    ids=["delete-file", "delete-dir", "delete-empty-dir", "delete-symlink", "exec-bit"],
)
async def test_deletions_make_a_new_version(lib: Library, ds: Path, change) -> None:
    first = await lib.share(ds)
    change(ds)
    second = await lib.share(ds)
    root, size, files = expected_root(ds)
    assert second.created and second.version.seq == 2
    assert (second.version.root, second.version.size, second.version.files) == (root, size, files)
    assert second.version.root != first.version.root
    third = await lib.share(ds)
    assert not third.created and third.files_rehashed == 0


async def test_file_and_directory_swap_places(lib: Library, ds: Path) -> None:
    await lib.share(ds)
    (ds / "README.md").unlink()
    (ds / "README.md").mkdir()
    (ds / "README.md" / "inner").write_text("x")
    shutil.rmtree(ds / "val")
    (ds / "val").write_text("now a file")
    result = await lib.share(ds)
    assert result.created and result.version.root == expected_root(ds)[0]
    assert not (await lib.share(ds)).created


async def test_stat_cache_survives_a_new_library(home: Path, ds: Path) -> None:
    lib = Library.open(home, KEY)
    first = await lib.share(ds)
    lib.close()
    lib = Library.open(home, KEY)
    try:
        again = await lib.share(ds)
        assert not again.created and again.files_rehashed == 0
        assert again.version == first.version
        (ds / "new.txt").write_text("new")
        third = await lib.share(ds)
        assert third.version.seq == 2 and third.files_rehashed == 1
    finally:
        lib.close()


async def test_explicit_name_and_name_conflicts(lib: Library, ds: Path, tmp_path: Path) -> None:
    result = await lib.share(ds, name="my-data")
    assert result.version.name == "my-data"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ShareError, match="already shared"):
        await lib.share(other, name="my-data")
    with pytest.raises(ShareError):
        await lib.share(other, name="bad name!")
    with pytest.raises(UnknownDataset):
        lib.log("nope")


# --- verify ---------------------------------------------------------------------------------


async def test_verify_clean_folder(lib: Library, ds: Path) -> None:
    await lib.share(ds)
    report = await lib.verify("ds")
    assert report.problems == () and report.files_checked == FILES_IN_DS


async def test_verify_reports_each_mismatch(lib: Library, ds: Path) -> None:
    await lib.share(ds)
    (ds / "val" / "labels.csv").write_text("a,9\nb,9\n")  # same size, other bytes
    (ds / "train" / "cats" / "1.jpg").unlink()  # missing
    with open(ds / "README.md", "ab") as f:  # size differs
        f.write(b"!")
    (ds / "prep.sh").unlink()
    (ds / "prep.sh").mkdir()  # a file became a directory
    (ds / "latest").unlink()
    (ds / "latest").symlink_to("val")  # a symlink points elsewhere
    (ds / "val" / "readme").unlink()
    (ds / "val" / "readme").write_text("../README.md")  # a symlink became a file
    problems = {p.path: p.reason for p in (await lib.verify("ds")).problems}
    assert problems.keys() == {"val/labels.csv", "train/cats/1.jpg", "README.md", "prep.sh", "latest", "val/readme"}
    assert problems["val/labels.csv"] == "content differs"
    assert problems["train/cats/1.jpg"] == "missing"
    assert "size" in problems["README.md"]
    assert "regular file" in problems["prep.sh"]
    assert "symlink" in problems["latest"] and "symlink" in problems["val/readme"]


async def test_verify_directory_replaced_by_file(lib: Library, ds: Path) -> None:
    await lib.share(ds)
    shutil.rmtree(ds / "train" / "cats")
    (ds / "train" / "cats").write_text("x")
    problems = {p.path: p.reason for p in (await lib.verify("ds")).problems}
    assert "directory" in problems["train/cats"]
    # Its former children are reported too, each once, and nothing outside it.
    assert set(problems) == {"train/cats", "train/cats/1.jpg", "train/cats/2.jpg"}


# --- bad input ----------------------------------------------------------------------------------


async def test_path_that_does_not_exist(lib: Library, tmp_path: Path) -> None:
    with pytest.raises(ShareError, match="does not exist"):
        await lib.share(tmp_path / "nope")


async def test_file_instead_of_folder(lib: Library, ds: Path) -> None:
    with pytest.raises(ShareError, match="not a directory"):
        await lib.share(ds / "README.md")


async def test_non_utf8_name_is_skipped_with_a_warning(lib: Library, ds: Path) -> None:
    bad = os.path.join(os.fsencode(ds), b"caf\xe9.txt")  # Latin-1, not UTF-8
    with open(bad, "wb") as f:
        f.write(b"x")
    result = await lib.share(ds)
    assert result.version.files == FILES_IN_DS
    assert len(result.warnings) == 1 and "caf" in result.warnings[0] and "UTF-8" in result.warnings[0]
    assert not (await lib.share(ds)).created  # the skipped name does not churn versions
    os.unlink(bad)
    assert not (await lib.share(ds)).created


async def test_fifo_is_skipped_without_blocking(lib: Library, ds: Path) -> None:
    os.mkfifo(ds / "val" / "pipe")
    with trio.fail_after(30):  # opening the fifo for reading would block forever
        result = await lib.share(ds)
    assert result.version.files == FILES_IN_DS
    assert len(result.warnings) == 1 and "val/pipe" in result.warnings[0] and "special" in result.warnings[0]
    assert (await lib.verify("ds")).problems == ()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "a/../../x", "../.."])
async def test_symlink_out_of_the_tree_is_skipped(lib: Library, ds: Path, target: str) -> None:
    (ds / "val" / "escape").symlink_to(target)
    result = await lib.share(ds)
    assert len(result.warnings) == 1 and "val/escape" in result.warnings[0]
    assert result.version.root == expected_root_without(ds, "val/escape")
    assert not (await lib.share(ds)).created


def expected_root_without(ds: Path, rel: str) -> bytes:
    """The expected root of `ds` as if `rel` were not there."""
    hidden = ds.parent / "hidden"
    shutil.move(ds / rel, hidden)
    try:
        return expected_root(ds)[0]
    finally:
        shutil.move(hidden, ds / rel)


async def test_file_changing_during_the_scan(lib: Library, ds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    growing = ds / "train" / "growing.bin"
    growing.write_bytes(noise("growing", 4 * MIB))
    real = scanner.make_chunker

    class AppendingChunker:
        """The real chunker; a writer appends to growing.bin while it is being read, every time."""

        def __init__(self, params) -> None:
            self._inner = real(params)

        def cut_buf(self, data):
            for i, chunk in enumerate(self._inner.cut_buf(data)):
                if i == 0:
                    self._grow()
                yield chunk

        def cut_stream(self, f):
            for i, chunk in enumerate(self._inner.cut_stream(f)):
                if i == 0:
                    self._grow()
                yield chunk

        @staticmethod
        def _grow() -> None:
            if growing.stat().st_size < 8 * MIB:
                with open(growing, "ab") as out:
                    out.write(b"x" * 4096)

    monkeypatch.setattr(scanner, "make_chunker", AppendingChunker)
    result = await lib.share(ds)
    monkeypatch.setattr(scanner, "make_chunker", real)
    assert len(result.warnings) == 1
    assert "train/growing.bin" in result.warnings[0] and "changing" in result.warnings[0]
    assert result.version.files == FILES_IN_DS  # everything else is in the version
    assert result.version.root == expected_root_without(ds, "train/growing.bin")

    # Once the writer has stopped, the file is shared and the index agrees with the folder.
    after = await lib.share(ds)
    assert after.created and after.warnings == () and after.files_rehashed == 1
    assert after.version.root == expected_root(ds)[0]
    assert (await lib.verify("ds")).problems == ()
    assert not (await lib.share(ds)).created


# Unreadable entries need a process without CAP_DAC_OVERRIDE: as root, chmod 000
# does not stop a read, so the scenario runs in a child as `nobody` in that case.
UNREADABLE_SCENARIO = """
import json, os, sys
from pathlib import Path
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from shoal.daemon.library.datasets import Library

work = Path(sys.argv[1])
lib = Library.open(work / "home", Ed25519PrivateKey.generate())
results = [trio.run(lib.share, work / "ds").to_json()]
os.chmod(work / "ds" / "secret.bin", 0o644)
os.chmod(work / "ds" / "private", 0o755)
results.append(trio.run(lib.share, work / "ds").to_json())
results.append(trio.run(lib.share, work / "ds").to_json())
lib.close()
print(json.dumps(results))
"""


class ShareResultView:
    """The fields of a ShareResult.to_json() that the subprocess test reads."""

    def __init__(self, data: dict) -> None:
        self.created = data["created"]
        self.warnings = data["warnings"]
        self.rehashed = data["files_rehashed"]
        self.seq = data["version"]["seq"]
        self.files = data["version"]["files"]
        self.root = bytes.fromhex(data["version"]["root"])


async def test_unreadable_file_and_directory(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "private").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (ds / "ok.txt").write_text("ok")
    (ds / "secret.bin").write_bytes(noise("secret", 1000))
    (ds / "private" / "inner.txt").write_text("inner")
    (ds / "secret.bin").chmod(0)
    (ds / "private").chmod(0)
    # Root reads anything through CAP_DAC_OVERRIDE; the scenario runs without it (and
    # without CAP_DAC_READ_SEARCH) rather than as another user, who could not run this
    # venv's interpreter when it lives under a private /root.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    run = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [*drop, sys.executable, "-c", UNREADABLE_SCENARIO, str(tmp_path)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
    )
    assert run.returncode == 0, run.stderr
    locked, unlocked, again = (ShareResultView(r) for r in json.loads(run.stdout))

    assert locked.files == 1 and locked.seq == 1
    assert any("secret.bin" in w and "ermission denied" in w for w in locked.warnings)
    assert any("private" in w and "unreadable" in w for w in locked.warnings)
    assert len(locked.warnings) == 2

    assert unlocked.created and unlocked.seq == 2 and unlocked.files == 3 and unlocked.warnings == []
    assert unlocked.root == expected_root(ds)[0]
    assert not again.created and again.rehashed == 0


async def test_index_never_holds_file_contents(lib: Library, home: Path, tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    marker = b"SHOAL-CONTENT-MARKER-" + noise("marker", 16).hex().encode()
    (root / "notes.txt").write_bytes(marker * 4)
    for i in range(4):
        (root / f"part{i}.bin").write_bytes(noise(f"part {i}", 8 * MIB))
    result = await lib.share(root)
    data_bytes = 32 * MIB + len(marker) * 4
    assert result.new_bytes == data_bytes
    index_files = [p for p in home.iterdir() if p.name.startswith("index.sqlite")]
    stored = b"".join(p.read_bytes() for p in index_files)
    assert marker not in stored
    assert len(stored) < data_bytes / 20  # WAL frames included
    # A slice of a data file is not in there either.
    assert noise("part 2", 8 * MIB)[5 * MIB : 5 * MIB + 64] not in stored

