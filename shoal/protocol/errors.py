"""Protocol errors, split by who is at fault.

`LocalProtocolError` means our own code tried something the protocol forbids;
`RemoteProtocolError` means the bytes we received are bad. A remote error closes
that one session and never the daemon.
"""

from shoal.errors import ShoalError


class ProtocolError(ShoalError):
    """A violation of the shoal format or wire protocol."""

    code: str = "protocol"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We were about to send or build something invalid."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something invalid: malformed, oversized, out of order or hostile."""


class FrameTooLarge(RemoteProtocolError):
    """A frame's declared length exceeds the limit; nothing of it was buffered."""

    code = "frame-too-large"


class ObjectFormatError(RemoteProtocolError):
    """Bytes that do not decode to a valid object of the expected kind."""

    code = "bad-object"


class IntegrityError(RemoteProtocolError):
    """Bytes whose hash does not match the id they were sent or stored under."""

    code = "bad-hash"


class PathError(ProtocolError):
    """A name or path that breaks the path rules (empty, `.`, `..`, `/`, NUL, escaping link)."""

    code = "bad-path"
