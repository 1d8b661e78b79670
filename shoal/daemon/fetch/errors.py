"""The errors a fetch ends with, and how a failure of many tasks becomes one of them."""

import errno
from collections.abc import Iterator
from pathlib import Path

import trio

from shoal.errors import ShoalError


class FetchError(ShoalError):
    """A fetch could not complete."""

    code = "fetch-failed"


class NoPeer(FetchError):
    """No connected peer has the requested dataset or version."""

    code = "no-peer"
    exit_code = 6


class DiskFull(FetchError):
    """The destination's disk filled up; what was written stays for the next attempt."""

    code = "disk-full"


class PeerMisbehaved(ShoalError):
    """A peer sent bytes that do not match what was asked for."""


def named_failure(exc: BaseException, dest: Path) -> ShoalError | None:
    """The one error to report for `exc`, a failure of the fetch into `dest`; None to let it through.

    Several tasks failing at once (a peer's eight requests, say) give the first;
    the system's errors say what the user can do about them.
    """
    leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)]
    for leaf in leaves:
        if isinstance(leaf, OSError) and leaf.errno is not None:
            return _system_failure(leaf, dest)
    named = [e for e in leaves if isinstance(e, ShoalError)]
    if leaves and len(named) == len(leaves):
        return named[0]
    return None


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _system_failure(error: OSError, dest: Path) -> FetchError:
    where = error.filename or dest
    resume = "; then run the same fetch again: it resumes from what was already verified"
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"no space left on the disk of {dest}; free some space{resume}")
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return FetchError(
            f"the daemon ran out of open files ({error.strerror}); raise the limit (`ulimit -n 4096` before"
            f" `shoal daemon start`){resume}"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return FetchError(f"permission denied writing {where}; make {dest} writable for the daemon's user{resume}")
    if error.errno == errno.EROFS:
        return FetchError(f"{dest} is on a read-only filesystem; fetch into a writable folder")
    return FetchError(f"the fetch into {dest} failed: {error.strerror} ({where}){resume}")
