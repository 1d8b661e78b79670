"""Sizes, rates, durations and counts as both front-ends show them."""

from __future__ import annotations

import time

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def format_size(size: int | float) -> str:
    """Decimal units, matching the rates `config set` accepts: 1 kB = 1000 B."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable: the last unit always returns")


def format_rate(bytes_per_second: int | float) -> str:
    """A transfer rate; 0 reads as "unlimited" because that is what a 0 limit means."""
    return "unlimited" if bytes_per_second == 0 else f"{format_size(bytes_per_second)}/s"


def format_duration(seconds: float) -> str:
    """Two units at most: 42s, 3m05s, 2h07m, 4d03h."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_elapsed(seconds: float) -> str:
    """A time something took, with the decimals a short one needs for a rate to match it: 0.42s, 9.7s, 3m05s."""
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return format_duration(seconds)


def format_time(unix: int | float) -> str:
    """Local date and time to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix))


def format_count(count: int, noun: str) -> str:
    """"1 file", "2,345 files"."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
