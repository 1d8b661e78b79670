"""Writing into a fetch's destination folder without ever leaving it.

Directories are created as real directories (anything else in the way is
removed first), symlinks and files are made beside their place and renamed
into it, and nothing here follows a symlink.
"""

import fnmatch
import os
import shutil
import stat
from pathlib import Path

import blake3
import pathspec

from shoal.daemon.model import PARTIAL_DIR
from shoal.errors import UsageError
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import EntryType, TreeEntry


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, before any thread
    # could create a file in the moment it is cleared.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def partial_name(parts: tuple[str, ...], file_id: bytes) -> str:
    # Derived from path and content, so a restarted fetch finds its own partial file.
    key = blake3.blake3("/".join(parts).encode("utf-8") + file_id).hexdigest(length=16)
    return f"{key}.part"


def remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def ensure_dir(dest: Path, parts: tuple[str, ...]) -> None:
    """Create DEST/parts as real directories, replacing anything else in the way.

    Never follows a symlink: a link where a directory belongs is removed, so no
    write can be redirected outside DEST.
    """
    current = dest
    current.mkdir(parents=True, exist_ok=True)
    for part in parts:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            current.mkdir()
            continue
        if not _is_real_dir(st.st_mode):
            current.unlink()
            current.mkdir()


def _is_real_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode)


def place_symlink(dest: Path, parts: tuple[str, ...], target: str) -> None:
    path = dest.joinpath(*parts)
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = dest / PARTIAL_DIR / (partial_name(parts, target.encode("utf-8")) + ".link")
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(target, tmp)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


def include_matcher(include: tuple[str, ...]):
    """Return match(parts, is_dir): whether a path is part of the requested subset."""
    if not include:
        return lambda parts, is_dir: True
    try:
        spec = pathspec.PathSpec.from_lines("gitwildmatch", include)
    except Exception as e:
        raise UsageError(f"bad --include pattern: {e}") from None
    # As in gitignore, a pattern without a slash before its end matches at any depth.
    prefixes = [p.strip("/").split("/") if "/" in p.rstrip("/") else ["**"] for p in include]

    def match(parts: tuple[str, ...], is_dir: bool) -> bool:
        path = "/".join(parts)
        if spec.match_file(path + ("/" if is_dir else "")):
            return True
        if is_dir:
            # Descend into a directory that a pattern could still match below.
            return any(_could_contain(parts, p) for p in prefixes)
        return False

    return match


def _could_contain(parts: tuple[str, ...], pattern: list[str]) -> bool:
    if "**" in pattern:
        return True
    if len(parts) >= len(pattern):
        return False
    return all(fnmatch.fnmatchcase(name, pat) for name, pat in zip(parts, pattern))


def prune(dest: Path, load, parts: tuple[str, ...], entry: TreeEntry) -> None:
    """Remove what an earlier version put at `parts`, keeping anything else found there.

    A directory goes only once nothing is left in it, so files a user added survive.
    """
    path = dest.joinpath(*parts)
    if entry.type != EntryType.DIR:
        if not path.is_dir() or path.is_symlink():
            remove_entry(path)
        return
    if path.is_symlink() or not path.is_dir():
        return
    for child in tree_entries(load, entry.id):
        prune(dest, load, parts + (child.name,), child)
    try:
        path.rmdir()
    except OSError:
        pass
