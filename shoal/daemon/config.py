"""Where shoal keeps its state (the home) and the daemon's settings in home/config.toml.

Keys (dotted names are TOML tables):

- listen: "HOST:PORT" the daemon accepts peers on; default "0.0.0.0:7453".
- discovery: announce and browse peers with mDNS on the LAN; default true.
- bandwidth.global_limit: upload+download cap in bytes/s over all peers; 0 = unlimited.
- bandwidth.per_peer_limit: the same cap for each peer on its own; 0 = unlimited.
- retention.max_versions: versions kept in the pack store per dataset, the newest included; default 5.
- retention.max_fraction: share of a dataset's size its kept versions may take in the store; default 0.25.
- retention.min_bytes: store bytes a dataset may always take, whatever its size; default 2 GiB.
  A dataset's budget is max(max_fraction × its size, min_bytes); see keeper.py.
- share.default_audience: who sees a newly shared dataset shared without --to:
  "all" trusted peers (the default) or "none" until `shoal share NAME --to PEER`.
- watch.quiet: seconds a changed file in a watched folder must go without changes
  (and not open for writing) before it is published; default 2. Files still being
  written do not hold the others back: a version keeps their last settled state.
- watch.max_wait: seconds a file still being written (open for writing, or changing
  again and again) is held back at most; then it is published as it is; default 600.
- fetch.workers: worker processes a fetch of many files is split over, each on a core of
  its own (1: none); default 0, shoal decides: none below 8 cores, else one per 4 cores.

Sizes accept "2GiB", "500MB" or a number of bytes. The limits accept rates such as "100MB/s",
"50Mbit" or "1.5GiB/s" from the command line and in the file; they are stored as bytes per second.

The TOML modules are imported by the functions that need them; the home and
socket paths live in `home.py`, so that `shoal status` never loads this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from shoal.daemon.toml_file import write_toml_atomic
from shoal.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing adds milliseconds to every `shoal` start; annotations do not need it at run time.
    from typing import Any

DEFAULT_PORT = 7453
CONFIG_FILE = "config.toml"


@dataclass(frozen=True, slots=True)
class Config:
    """The daemon's settings; defaults apply to every key absent from config.toml.

    Fields are the keys' last parts: bandwidth.global_limit is `global_limit`.
    """

    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    discovery: bool = True
    global_limit: int = 0
    per_peer_limit: int = 0
    max_versions: int = 5
    max_fraction: float = 0.25
    min_bytes: int = 2 * 1024**3
    quiet: float = 2.0
    max_wait: float = 600.0
    default_audience: str = "all"
    workers: int = 0

    def get(self, key: str) -> Any:
        """Return the value of a dotted key such as "bandwidth.global_limit"."""
        return getattr(self, _field(key))

    def with_value(self, key: str, value: Any) -> Config:
        """Return a copy with one already-validated key changed."""
        return replace(self, **{_field(key): value})

    def to_dict(self) -> dict[str, Any]:
        """Every key with its value, flat and dotted, in documented order."""
        return {key: self.get(key) for key in KEYS}


class Settings:
    """The configuration in force: `config.reload` replaces it; services read it at each use.

    The one mutable holder of the live Config, created before the services that
    read it, so none of them needs the control API (which reloads it) to exist first.
    """

    def __init__(self, config: Config) -> None:
        self._config = config

    def current(self) -> Config:
        """The configuration now in force."""
        return self._config

    def replace(self, config: Config) -> None:
        """Put `config` in force from now on."""
        self._config = config

    def limits(self) -> tuple[int, int]:
        """The bandwidth caps in bytes/s, all peers together and per peer (0: none)."""
        return self._config.global_limit, self._config.per_peer_limit


def load_config(home: Path) -> Config:
    """Read home/config.toml; a missing file means all defaults."""
    return _from_table(_read_table(home / CONFIG_FILE), home / CONFIG_FILE)


def set_config_value(home: Path, key: str, text: str) -> Config:
    """Parse `text` for `key`, write it to config.toml atomically, return the new config."""
    spec = _key_spec(key)
    value = spec.parse(text)
    path = home / CONFIG_FILE
    table = _read_table(path)
    section, _, name = key.rpartition(".")
    target = table.setdefault(section, {}) if section else table
    if not isinstance(target, dict):
        raise ConfigError(f"{path}: {section!r} must be a table; fix or delete the file")
    target[name] = value
    config = _from_table(table, path)
    write_toml_atomic(path, table)
    return config


def parse_host_port(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split "HOST:PORT" or "[IPv6]:PORT"; raise ConfigError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""
    lowest = 0 if allow_port_zero else 1
    if not sep or not host or not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ConfigError(
            f"{text!r} is not HOST:PORT; write e.g. 192.168.1.20:{DEFAULT_PORT} or [fe80::1]:{DEFAULT_PORT}"
        )
    return host, int(port_text)


#: A pattern string, compiled (and cached by re) on first use rather than at every import.
_RATE = r"(?P<number>\d+(?:\.\d+)?)\s*(?P<prefix>[kmgt]i?)?(?P<unit>bit|b)?(?:/s|ps)?"
_PREFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_rate(text: str) -> int:
    """Bytes per second from "100MB/s", "50Mbit", "2GiB/s", "12500000", "0" or "unlimited".

    A capital B means bytes; a lowercase b or "bit" means bits. K/M/G/T are powers of
    1000 and Ki/Mi/Gi/Ti powers of 1024.
    """
    cleaned = text.strip()
    if cleaned.lower() in ("unlimited", "none", "off"):
        return 0
    match = re.fullmatch(_RATE, cleaned, re.IGNORECASE)
    if not match:
        raise ConfigError(f"{text!r} is not a rate; write e.g. 100MB/s, 50Mbit, 2GiB/s or 0 for unlimited")
    scale = _scale(match["prefix"])
    unit = match["unit"] or "B"
    bits = unit != "B"
    rate = float(match["number"]) * scale / (8 if bits else 1)
    if 0 < rate < 1:
        raise ConfigError(f"{text!r} is below 1 byte/s; use 0 for unlimited")
    return round(rate)


_SIZE = r"(?P<number>\d+(?:\.\d+)?)\s*(?P<prefix>[kmgt]i?)?b?"


def parse_size(text: str) -> int:
    """Bytes from "2GiB", "500MB", "1.5G" or "12500000"; K/M/G/T as in `parse_rate`."""
    match = re.fullmatch(_SIZE, text.strip(), re.IGNORECASE)
    if not match:
        raise ConfigError(f"{text!r} is not a size; write e.g. 2GiB, 500MB or a number of bytes")
    return round(float(match["number"]) * _scale(match["prefix"]))


def _scale(prefix: str | None) -> int:
    lowered = (prefix or "").lower()
    return 1024 ** (1 + "kmgt".index(lowered[0])) if lowered.endswith("i") else _PREFIXES[lowered]


def _check_size(value: Any) -> int:
    if isinstance(value, str):
        return parse_size(value)
    if type(value) is not int or value < 0:
        raise ConfigError(f"{value!r} is not a size; use a number of bytes or text like \"2GiB\"")
    return value


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One configuration key: its documentation and how to read it from text and TOML."""

    doc: str
    parse: Callable[[str], Any]
    check: Callable[[Any], Any]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{text!r} is not a boolean; write true or false")


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{value!r} is not a boolean; write true or false")
    return value


def _check_listen(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{value!r} is not HOST:PORT text; write e.g. \"0.0.0.0:{DEFAULT_PORT}\"")
    parse_host_port(value, allow_port_zero=True)
    return value


def _check_rate(value: Any) -> int:
    if isinstance(value, str):
        return parse_rate(value)
    if type(value) is not int or value < 0:
        raise ConfigError(f"{value!r} is not a rate; use bytes/s (0 = unlimited) or text like \"100MB/s\"")
    return value


def _parse_versions(text: str) -> int:
    try:
        return _check_versions(int(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not a whole number of versions") from None


def _check_versions(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(f"{value!r} is not a number of versions; use a whole number of at least 1")
    return value


def _parse_fraction(text: str) -> float:
    try:
        return _check_fraction(float(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not a fraction; write a number such as 0.25") from None


def _check_fraction(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value <= 1:
        raise ConfigError(f"{value!r} is not a fraction of the dataset's size; use a number in (0, 1], e.g. 0.25")
    return float(value)


def _parse_seconds(text: str) -> float:
    try:
        return _check_seconds(float(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of seconds; write e.g. 2 or 0.5") from None


def _check_seconds(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value <= 86400:
        raise ConfigError(f"{value!r} is not a duration; use seconds above 0 and at most 86400, e.g. 2")
    return float(value)


AUDIENCES = ("all", "none")


def _check_audience(value: Any) -> str:
    if value not in AUDIENCES:
        raise ConfigError(f"{value!r} is not an audience; write all (every trusted peer) or none")
    return value


#: A fetch worker opens a lane of its own to each peer, and a peer takes 15 (SPEC.md, "Lanes").
MAX_FETCH_WORKERS = 15


def _parse_workers(text: str) -> int:
    try:
        return _check_workers(int(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of workers; write 0 (shoal decides) to {MAX_FETCH_WORKERS}") from None


def _check_workers(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_FETCH_WORKERS:
        raise ConfigError(f"{value!r} is not a number of workers; use 0 (shoal decides), 1 (none) to {MAX_FETCH_WORKERS}")
    return value


#: Every configuration key, in documented order.
KEYS: dict[str, KeySpec] = {
    "listen": KeySpec("HOST:PORT to accept peers on", _check_listen, _check_listen),
    "discovery": KeySpec("find peers on the LAN with mDNS", _parse_bool, _check_bool),
    "bandwidth.global_limit": KeySpec("bytes/s over all peers, 0 = unlimited", parse_rate, _check_rate),
    "bandwidth.per_peer_limit": KeySpec("bytes/s per peer, 0 = unlimited", parse_rate, _check_rate),
    "retention.max_versions": KeySpec("versions kept per dataset, the newest included", _parse_versions, _check_versions),
    "retention.max_fraction": KeySpec("share of a dataset's size its kept versions may take", _parse_fraction, _check_fraction),
    "retention.min_bytes": KeySpec("store bytes a dataset may always take", parse_size, _check_size),
    "share.default_audience": KeySpec(
        "who sees a dataset shared without --to: all trusted peers, or none", _check_audience, _check_audience
    ),
    "watch.quiet": KeySpec(
        "seconds a changed file stays unchanged (and not open for writing) before a watch publishes it",
        _parse_seconds, _check_seconds,
    ),
    "watch.max_wait": KeySpec(
        "seconds a watch holds back a file still being written before it publishes it as it is",
        _parse_seconds, _check_seconds,
    ),
    "fetch.workers": KeySpec(
        "worker processes a fetch of many files is split over (1: none; 0: shoal decides)", _parse_workers, _check_workers
    ),
}
_SECTIONS = {key.partition(".")[0] for key in KEYS if "." in key}


def _field(key: str) -> str:
    _key_spec(key)
    return key.rpartition(".")[2]


def _key_spec(key: str) -> KeySpec:
    try:
        return KEYS[key]
    except KeyError:
        raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}") from None


def _read_table(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it or delete it to use the defaults") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; check its permissions") from None


def _from_table(table: dict[str, Any], path: Path) -> Config:
    config = Config()
    for key, value in _flatten(table, path):
        try:
            config = config.with_value(key, KEYS[key].check(value))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from None
    return config


def _flatten(table: dict[str, Any], path: Path) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for name, value in table.items():
        if name in _SECTIONS and isinstance(value, dict):
            pairs.extend((f"{name}.{sub}", subvalue) for sub, subvalue in value.items())
        else:
            pairs.append((name, value))
    for key, _ in pairs:
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(KEYS)}")
    return pairs
