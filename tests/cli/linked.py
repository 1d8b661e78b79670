"""Real daemons on loopback that trust each other, for tests that move data between them."""

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import ShoalCli, make_home, remove_home


@contextmanager
def linked_daemons(count: int, *, nofile: int | None = None) -> Iterator[list[ShoalCli]]:
    """`count` running daemons, each trusting every other one at its static address.

    `nofile` sets both the soft and the hard limit of open files the daemons run under,
    so that raising the soft limit to the hard one cannot hide a descriptor leak.
    """
    homes = [make_home() for _ in range(count)]
    clis = [ShoalCli(h) for h in homes]
    try:
        for cli in clis:
            started = start_daemon(cli, nofile)
            assert started.returncode == 0, started.stderr
        ids = [cli.json("id")["peer_id"] for cli in clis]
        listens = [cli.json("status")["listen"] for cli in clis]
        for i, cli in enumerate(clis):
            for j in range(count):
                if i != j:
                    ok(cli("trust", ids[j], "--name", f"peer{j}", "--addr", listens[j]))
        yield clis
    finally:
        for cli, home in zip(clis, homes):
            cli("daemon", "stop")
            remove_home(home)


def start_daemon(cli: ShoalCli, nofile: int | None = None) -> subprocess.CompletedProcess:
    """`shoal daemon start`, under a limit of `nofile` open files when given."""
    if nofile is None:
        return cli("daemon", "start")
    return subprocess.run(
        [sys.executable, "-m", "shoal", "--home", str(cli.home), "daemon", "start"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SHOAL_NO_AUTOSTART"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
    )


def ok(process) -> str:
    assert process.returncode == 0, process.stderr
    return process.stdout


def write_files(root: Path, files: dict[str, int]) -> None:
    """Random content of the given sizes at the given paths below root."""
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def files_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".shoal-partial" not in p.parts
    }


def inodes_of(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (inode, mtime_ns): a file rewritten or replaced changes both."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".shoal-partial" not in p.parts:
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return out
