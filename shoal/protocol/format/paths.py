"""Path rules for names inside a dataset, symlink targets and dataset names.

Every tree that is built or received passes these checks, so nothing a peer sends
can name a path outside the destination.
"""

import re

from shoal.protocol.errors import PathError

MAX_NAME_BYTES = 255
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: object) -> str:
    """Return `name` if it is a valid entry name, else raise PathError."""
    if not isinstance(name, str):
        raise PathError(f"entry name is {type(name).__name__}, not a string")
    if name in ("", ".", ".."):
        raise PathError(f"entry name {name!r} is not allowed")
    if "/" in name or "\0" in name:
        raise PathError(f"entry name {name!r} contains '/' or NUL")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError(f"entry name {name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise PathError(f"entry name of {len(encoded)} bytes exceeds {MAX_NAME_BYTES}")
    return name


def check_symlink_target(target: object, depth: int) -> str:
    """Return `target` if a link at `depth` directories below the root may point there.

    A target is relative, made of valid names, and may climb with `..` only at its
    start and no higher than the dataset root. Forbidding `..` after a name means
    no chain of in-tree links can climb out through a link's parent.
    """
    if not isinstance(target, str):
        raise PathError("symlink target is not a string")
    if target.startswith("/"):
        raise PathError(f"symlink target {target!r} is absolute")
    parts = target.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > depth:
        raise PathError(f"symlink target {target!r} leaves the dataset")
    if ups == len(parts):
        raise PathError(f"symlink target {target!r} names no entry")
    for part in parts[ups:]:
        if part == "..":
            raise PathError(f"symlink target {target!r} climbs after descending")
        check_name(part)
    return target


def check_dataset_name(name: object) -> str:
    """Return `name` if it is a valid dataset name (letters, digits, '.', '_', '-')."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise PathError(
            f"dataset name {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name
