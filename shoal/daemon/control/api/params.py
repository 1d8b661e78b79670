"""Reading a request's params: each reader checks one value and names it in the error it raises."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shoal.daemon.net.trust import TrustStore
from shoal.errors import UsageError

#: How long a lookup waits for a peer that has the dataset, unless the request says otherwise.
DEFAULT_FETCH_TIMEOUT = 30.0
#: Entries `browse` and `ls --remote` return unless asked for another number.
DEFAULT_BROWSE_LIMIT = 10_000


def only(params: dict[str, Any], *allowed: str) -> None:
    """Refuse params other than `allowed`, so a misspelt option is an error, not ignored."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UsageError(f"unknown parameters {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")


def text(params: dict[str, Any], key: str) -> str:
    """A required, non-empty text."""
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"parameter {key!r} must be non-empty text")
    return value


def optional_text(params: dict[str, Any], key: str) -> str | None:
    """A text, or None when absent."""
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"parameter {key!r} must be text")
    return value


def flag(params: dict[str, Any], key: str) -> bool:
    """A boolean, False when absent."""
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"parameter {key!r} must be true or false")
    return value


def absolute(params: dict[str, Any], key: str) -> Path:
    """A required absolute path, normalised."""
    path = Path(text(params, key))
    if not path.is_absolute():
        raise UsageError(f"parameter {key!r} must be an absolute path, not {str(path)!r}")
    return Path(os.path.normpath(path))


def limit(params: dict[str, Any]) -> int:
    """`limit`: how many entries a listing returns at most."""
    value = params.get("limit", DEFAULT_BROWSE_LIMIT)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError("limit must be a positive integer")
    return value


def audience_fields(trust: TrustStore, audience: Sequence[str] | None) -> dict[str, list[str] | None]:
    """A dataset's audience as results show it: `audience`, peer ids (None: every trusted
    peer), and `seen_by`, the same peers by trust name, which is what people read."""
    if audience is None:
        return {"audience": None, "seen_by": None}
    return {"audience": list(audience), "seen_by": [trust.name_of(peer_id) for peer_id in audience]}


def timeout(params: dict[str, Any]) -> float:
    """`timeout`: seconds to wait for a peer that has the dataset."""
    value = params.get("timeout", DEFAULT_FETCH_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UsageError("timeout must be a positive number of seconds")
    return float(value)


def transfer_id(params: dict[str, Any]) -> int:
    """`id`: a running transfer's number."""
    value = params.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError("parameter 'id' must be a transfer id (an integer)")
    return value
