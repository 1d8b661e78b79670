"""Which process, if any, holds a file under a folder open for writing (Linux /proc).

A checkpoint written slowly can sit unchanged for longer than any quiet period
while its writer still holds it open; this is how a watch tells it is not done.
Processes whose /proc entries we cannot read (other users') are skipped.
"""

import os

PROC = "/proc"
#: O_ACCMODE bits of an fdinfo "flags" field that mean the descriptor can write.
_O_ACCMODE = 0o3
_O_RDONLY = 0


def open_for_writing(root: str) -> list[str]:
    """The paths under `root` that other processes have open for writing.

    Empty where /proc is not available: the quiet period is then the only guard.
    """
    prefix = root.rstrip("/") + "/"
    me = str(os.getpid())
    try:
        pids = [name for name in os.listdir(PROC) if name.isdigit() and name != me]
    except OSError:
        return []
    return [path for pid in pids for path in _writing_in(pid, prefix)]


def _writing_in(pid: str, prefix: str) -> list[str]:
    fd_dir = f"{PROC}/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return []
    found = []
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith(prefix) and _writable(pid, fd):
            found.append(target)
    return found


def _writable(pid: str, fd: str) -> bool:
    try:
        with open(f"{PROC}/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & _O_ACCMODE != _O_RDONLY
    except (OSError, ValueError, IndexError):
        pass
    return False
