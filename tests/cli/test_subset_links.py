"""Symbolic links in subsets between real daemons (SPEC "Subsets"): a link is selected
by its own path, like a file, and its target is not consulted."""

import os
from pathlib import Path

import pytest
from linked import linked_daemons, ok

pytestmark = pytest.mark.slow


def entries(root: Path) -> dict[str, str | None]:
    """path -> link target, or None for a file; directories left out."""
    return {
        p.relative_to(root).as_posix(): (os.readlink(p) if p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_links_are_selected_by_their_own_path(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "x.csv").write_text("x")
    (folder / "top.txt").write_text("t")
    os.symlink("x.csv", folder / "data" / "link.csv")
    os.symlink("data/x.csv", folder / "toplink")
    with linked_daemons(2) as (a, b):
        ok(a("share", str(folder), "--name", "ds"))
        ok(a("subset", "ds", "small", "--include", "data/*"))
        # Seed 3 draws data/link.csv and toplink but neither file.
        ok(a("subset", "ds", "half", "--sample", "50%", "--seed", "3"))
        ok(b("fetch", "ds:small", str(tmp_path / "small"), "--timeout", "20"))
        ok(b("fetch", "ds:half", str(tmp_path / "half"), "--timeout", "20"))
    assert entries(tmp_path / "small") == {"data/link.csv": "x.csv", "data/x.csv": None}
    assert entries(tmp_path / "half") == {"data/link.csv": "x.csv", "toplink": "data/x.csv"}
