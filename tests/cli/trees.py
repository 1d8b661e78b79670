"""Comparing the files of a folder, outside shoal's partial folder, by content."""

import hashlib
from pathlib import Path

PARTIAL = ".shoal-partial"


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def digests(root: Path) -> dict[str, str]:
    """sha256 of every regular file below root, outside the partial folder."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] == PARTIAL or p.is_symlink() or not p.is_file():
            continue
        out[str(rel)] = digest(p)
    return out
