"""Dataset references as users type them: NAME[@VERSION][:SUBSET]."""

from __future__ import annotations

from collections import namedtuple

from shoal.errors import UsageError


class Ref(namedtuple("Ref", "name version subset")):
    """NAME, VERSION and SUBSET (None when absent); a namedtuple, as `dataclasses` and
    `typing` would cost every `shoal` start milliseconds."""

    __slots__ = ()


def parse_ref(text: str, *, subset: bool = True) -> Ref:
    """Split NAME[@VERSION][:SUBSET]; a missing part is None."""
    base, colon, subset_name = text.partition(":")
    name, at, version = base.partition("@")
    form = "NAME[@VERSION][:SUBSET]" if subset else "NAME[@VERSION]"
    if not name or (at and not version) or (colon and not subset_name) or (colon and not subset):
        raise UsageError(f"{text!r} is not {form}; e.g. imagenet@3" + (":small" if subset else ""))
    return Ref(name, version or None, subset_name or None)
