"""Every system call a fetch makes in DEST may fail; each failure reaches the user as one
named error that says what to do, never an internal error, and the next fetch completes."""

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from test_filebatch import replace_in_python, write_new_in_python
from test_peers import fetch, shared_pair, tree_bytes

from shoal.daemon.fetch import writer
from shoal.errors import ShoalError

pytestmark = pytest.mark.trio


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


#: The calls a fetch makes on DEST, and how to tell from their arguments that they touch it.
FAULT_POINTS: dict[str, Callable[..., str]] = {
    "open": lambda path, *a, **k: str(path),
    "pwrite": lambda fd, *a: _fd_path(fd),
    "replace": lambda src, dst, *a, **k: str(dst),
    "mkdir": lambda path, *a, **k: str(path),
    # Every file of this dataset is filled by one write and stat'ed by path once installed
    # (writer.py); only a file of many runs is stat'ed through its descriptor.
    "lstat": lambda path, *a, **k: str(path),
}
ERRNOS = [errno.ENOSPC, errno.EACCES, errno.EIO, errno.EMFILE]


class Injector:
    """Makes the `nth` call of os.`name` below `root` fail with `code`.

    The writer's C batches (store/_filebatch.c) make their calls outside Python; here they are
    replaced by the same calls made through os, so that those fail too."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, code: int, root: Path, nth: int) -> None:
        monkeypatch.setattr(writer, "write_new", write_new_in_python)
        monkeypatch.setattr(writer, "replace", replace_in_python)
        self.fired = False
        self.calls = 0
        real = getattr(os, name)
        target = FAULT_POINTS[name]

        def faulty(*args, **kwargs):
            if not self.fired and target(*args, **kwargs).startswith(str(root)):
                self.calls += 1
                if self.calls == nth:
                    self.fired = True
                    raise OSError(code, os.strerror(code), target(*args, **kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, faulty)


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("name", FAULT_POINTS)
async def test_a_failing_call_in_dest_is_a_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: int
) -> None:
    dest = tmp_path / "dest"
    async with shared_pair(tmp_path) as (a, b):
        with monkeypatch.context() as patch:
            injector = Injector(patch, name, code, dest, nth=3)
            with pytest.raises(ShoalError) as raised:
                await fetch(b, dest)
        assert injector.fired, f"the fetch never called os.{name} on DEST three times"
        message = str(raised.value)
        assert "\n" not in message
        says = "no space left" if code == errno.ENOSPC else os.strerror(code).lower()
        assert says in message.lower(), message
        with trio.fail_after(30):
            await fetch(b, dest)
        assert tree_bytes(dest) == tree_bytes(tmp_path / "data")
