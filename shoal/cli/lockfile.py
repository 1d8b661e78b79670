"""`shoal.lock`: the dataset versions a repository's code is pinned to.

The file sits at the repository's root (the nearest folder above the working
directory that holds `.git`, else the working directory) and lists one
`[[dataset]]` table per pinned folder; paths are relative to the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import tomli_w

from shoal.errors import UsageError

LOCK_NAME = "shoal.lock"
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_HEADER = "# Written by `shoal pin`; `shoal sync` brings every path below to its pinned version.\n\n"


@dataclass(frozen=True, slots=True)
class Pin:
    """One pinned folder: dataset, version and root ids, optional subset, path relative to the lock."""

    name: str
    version: str
    root: str
    subset: str | None
    path: str

    def to_toml(self) -> dict[str, str]:
        table = {"name": self.name, "version": self.version, "root": self.root, "path": self.path}
        if self.subset is not None:
            table["subset"] = self.subset
        return table


def find_lock(start: Path) -> Path:
    """The lock file's place for a command run in `start`."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder / LOCK_NAME
    return start / LOCK_NAME


def read_pins(lock: Path) -> list[Pin]:
    """The pins in `lock`; none when it does not exist."""
    try:
        text = lock.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {lock}: {e}; fix or delete it") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{lock} is not valid TOML ({e}); fix it or pin again after deleting it") from None
    tables = data.get("dataset", [])
    if set(data) - {"dataset"} or not isinstance(tables, list):
        raise UsageError(f"{lock} must hold only [[dataset]] tables; fix it or pin again after deleting it")
    pins = [_pin(lock, n, table) for n, table in enumerate(tables, 1)]
    paths = [p.path for p in pins]
    if len(set(paths)) != len(paths):
        raise UsageError(f"{lock} pins two datasets to one path; remove one of them")
    return pins


def _pin(lock: Path, n: int, table: object) -> Pin:
    where = f"{lock}, dataset {n}"
    if not isinstance(table, dict):
        raise UsageError(f"{where} is not a table; fix the file")
    unknown = set(table) - {"name", "version", "root", "subset", "path"}
    missing = {"name", "version", "root", "path"} - set(table)
    if unknown or missing:
        raise UsageError(
            f"{where}: missing {sorted(missing)} / unknown {sorted(unknown)} keys; fix the file"
        )
    if not all(isinstance(v, str) and v for v in table.values()):
        raise UsageError(f"{where}: every value must be non-empty text; fix the file")
    for key in ("version", "root"):
        if not _HEX_ID.fullmatch(table[key]):
            raise UsageError(f"{where}: {key} must be a full 64-digit lowercase hex id; pin again")
    path = check_pin_path(table["path"], where)
    return Pin(table["name"], table["version"], table["root"], table.get("subset"), path)


def check_pin_path(path: str, where: str) -> str:
    """A pinned path: relative, inside the lock file's folder, in '/' form."""
    pure = PurePosixPath(path.replace(os.sep, "/"))
    if pure.is_absolute() or ".." in pure.parts or str(pure) in ("", "."):
        raise UsageError(f"{where}: path {path!r} must be a folder below the lock file's, without '..'")
    return str(pure)


def write_pins(lock: Path, pins: list[Pin]) -> None:
    """Replace `lock` with `pins`, sorted by path, atomically."""
    body = tomli_w.dumps({"dataset": [p.to_toml() for p in sorted(pins, key=lambda p: p.path)]})
    _replace_text(lock, _HEADER + body)


def _replace_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def updated(pins: list[Pin], pin: Pin) -> list[Pin]:
    """`pins` with `pin` replacing the entry at its path."""
    return [p for p in pins if p.path != pin.path] + [pin]


def ignore_in_git(lock: Path, path: str) -> Path | None:
    """Add `/path/` to the .gitignore beside a lock that sits in a git repository, as DVC does:
    the data is pinned by the lock, not committed. Returns the .gitignore changed, else None."""
    if not (lock.parent / ".git").exists():
        return None
    gitignore = lock.parent / ".gitignore"
    try:
        text = gitignore.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    line = f"/{path}/"
    if {line, f"/{path}", f"{path}/", path} & {existing.strip() for existing in text.splitlines()}:
        return None
    if text and not text.endswith("\n"):
        text += "\n"
    _replace_text(gitignore, f"{text}{line}\n")
    return gitignore
