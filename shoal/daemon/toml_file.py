"""The daemon's TOML state files (config, peers, watches, subscriptions), replaced atomically."""

import os
from pathlib import Path
from typing import Any


def write_toml_atomic(path: Path, table: dict[str, Any]) -> None:
    """Replace `path` with `table` as TOML so readers see the old or the new file, never half."""
    import tomli_w

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as file:
            tomli_w.dump(table, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
