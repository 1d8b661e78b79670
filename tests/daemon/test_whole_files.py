"""Files that one run fills are written whole and installed by path (fetch/writer.py): they
get their mode at creation, and the index records the stat they have in DEST, so a
later fetch recognises them without reading them again."""

import os
import stat
from pathlib import Path

import pytest
import trio
from test_peers import Node, befriend, fetch, start, tree_bytes

from shoal.daemon.fetch.dest import UMASK
from shoal.daemon.model import PARTIAL_DIR
from shoal.daemon.store.index import FileStat

pytestmark = pytest.mark.trio

MODES = (0o644, 0o600, 0o755, 0o664, 0o640)


def make_files(root: Path) -> dict[str, int]:
    """Small files with several modes, and one file of many runs; each file's mode."""
    modes = {}
    for i in range(40):
        folder = root / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i:02}.bin"
        path.write_bytes(os.urandom(200 + 1500 * i))
        path.chmod(MODES[i % len(MODES)])
        modes[f"d{i % 4}/f{i:02}.bin"] = MODES[i % len(MODES)]
    (root / "big.bin").write_bytes(os.urandom(9_000_000))
    (root / "big.bin").chmod(0o600)
    modes["big.bin"] = 0o600
    return modes


async def test_small_files_get_their_mode_and_a_stat_record_that_matches(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "dest"
    modes = make_files(data)
    a, b = Node(tmp_path / "a"), Node(tmp_path / "b")
    await a.library.share(data)
    async with trio.open_nursery() as nursery:
        await start(nursery, a, b)
        befriend(a, b)
        result = await fetch(b, dest)
        assert tree_bytes(dest) == tree_bytes(data)
        assert result.files_written == len(modes)
        assert not (dest / PARTIAL_DIR).exists()
        index = b.library.index
        for rel, mode in modes.items():
            st = os.lstat(dest / rel)
            assert stat.S_IMODE(st.st_mode) == mode & ~UMASK, rel
            folder, _, name = rel.rpartition("/")
            recorded = index.cached_files(str(dest), folder)[name]
            assert recorded.stat == FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), rel

        again = await fetch(b, dest)
        assert again.files_written == 0 and again.bytes_received == 0
        nursery.cancel_scope.cancel()
