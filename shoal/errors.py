"""The root of shoal's exception hierarchy.

A `ShoalError`'s message is written for the user: the CLI prints it as one line.
"""


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


class UsageError(ShoalError):
    """The user asked for something that cannot be done as asked."""


class UnknownDataset(ShoalError):
    """No dataset of that name is known here."""


class UnknownSubscription(UnknownDataset):
    """No subscription follows that dataset."""


class ShareError(ShoalError):
    """A folder could not be shared (missing, unreadable, not a directory)."""


class HomeFolder(UsageError):
    """A folder that is, holds or lies inside shoal's home: sharing it would publish the daemon's private key."""


class DaemonNotRunning(ShoalError):
    """The daemon's control socket does not answer."""


class ConfigError(UsageError):
    """A configuration key or value is unknown or invalid, or config.toml is malformed."""


class UnknownPeer(ShoalError):
    """No trusted peer has that id."""


class DaemonAlreadyRunning(ShoalError):
    """Another daemon holds this home's lock."""


class DaemonStartFailed(DaemonNotRunning):
    """A daemon was spawned but never answered on its control socket."""


class NotBuilt(ShoalError):
    """shoal's C module was not built by its install (no compiler, or a checkout pulled since)."""


class TimedOut(ShoalError):
    """An operation did not finish within its time limit."""


class DaemonError(ShoalError):
    """The daemon answered a request with an error reply."""

    def __init__(self, message: str, *, code: str, exit_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code


class UnknownSubset(UnknownDataset):
    """The version has no subset of that name."""


class BadSample(UsageError):
    """A --sample share that is not a percentage or fraction above 0 and at most 100%."""


def single_exception(exc: BaseException) -> BaseException:
    """The lone exception inside nested one-member groups, as a handler's nursery raises them."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
