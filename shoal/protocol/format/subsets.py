"""Which files a named subset holds: deterministic sampling, specified in SPEC.md "Subsets".

Every file has a key: the first 8 bytes of BLAKE3 (derive-key mode,
SAMPLE_CONTEXT) of the canonical encoding of `[seed, path]`, read as a
big-endian integer h. Two rules draw with it:

- exact (DRAW_EXACT): of the N files the patterns include, the
  draw_count(N, sample) whose draw_key (h's 8 bytes, then the path) sorts
  first. One threshold, the last drawn key, then decides each path alone.
- per file (DRAW_PER_FILE, records from before the exact draw): a file is in
  when h × 1,000,000 < sample × 2^64, so the count only approaches the share.

Every implementation draws the same files.
"""

from fractions import Fraction

import blake3
import msgpack

from shoal.protocol.format.objects import SAMPLE_ALL

SAMPLE_CONTEXT = "shoal 2026-11 sample v1"
#: Copied for each key: deriving the context's key anew is most of a key's cost.
_KEYED = blake3.blake3(derive_key_context=SAMPLE_CONTEXT, max_threads=1)


def sample_key(path: str, seed: int) -> int:
    """The 64-bit number that decides whether `path` is drawn."""
    hasher = _KEYED.copy()
    hasher.update(msgpack.packb([seed, path], use_bin_type=True))
    return int.from_bytes(hasher.digest(length=8), "big")


def draw_key(path: str, seed: int) -> bytes:
    """What an exact draw sorts files by: the key's 8 bytes, then the path, so no two files tie."""
    return sample_key(path, seed).to_bytes(8, "big") + path.encode("utf-8")


def draw_count(files: int, ppm: int) -> int:
    """How many of `files` included files an exact draw of `ppm` parts per million keeps:
    the share rounded half up, and at least one file of a non-empty set."""
    if files == 0:
        return 0
    return max(1, (ppm * files + SAMPLE_ALL // 2) // SAMPLE_ALL)


def in_draw(path: str, seed: int, last: bytes | None) -> bool:
    """Whether an exact draw whose last drawn key is `last` (None: nothing drawn) holds `path`."""
    return last is not None and draw_key(path, seed) <= last


def in_sample(path: str, ppm: int, seed: int) -> bool:
    """Whether the per-file draw holds the file at `path` ('/'-separated, relative to the root)."""
    if ppm >= SAMPLE_ALL:
        return True
    return sample_key(path, seed) * SAMPLE_ALL < ppm << 64


def parse_fraction(text: str) -> int:
    """Parts per million from '1%', '0.5%' or '0.01'; ValueError saying what to write instead."""
    text = text.strip()
    try:
        value = Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a share of the files; write a percentage such as 10% or 0.5%, "
                         "or a fraction such as 0.1") from None
    ppm = value * SAMPLE_ALL
    if ppm <= 0:
        raise ValueError(f"{text} draws no file; give a share above 0, such as 10%")
    if ppm > SAMPLE_ALL:
        raise ValueError(f"{text} is more than every file; give at most 100%")
    if ppm.denominator != 1:
        raise ValueError(f"{text} is finer than 0.0001%, the smallest step; round it to 4 decimals of a percent")
    return int(ppm)


def format_share(ppm: int) -> str:
    """Parts per million as a percentage without trailing zeros: 100000 → '10%', 5 → '0.0005%'."""
    whole, part = divmod(ppm, SAMPLE_ALL // 100)
    return f"{whole}.{part:04d}".rstrip("0").rstrip(".") + "%"
