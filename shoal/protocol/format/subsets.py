"""Which files a named subset holds: deterministic sampling, specified in SPEC.md.

A file is in a sample of `ppm` parts per million drawn with `seed` when the
first 8 bytes of BLAKE3 (derive-key mode, SAMPLE_CONTEXT) of the canonical
encoding of `[seed, path]`, read as a big-endian integer h, satisfy
h × 1,000,000 < ppm × 2^64. Every implementation draws the same files.
"""

from fractions import Fraction

import blake3
import msgpack

from shoal.protocol.format.objects import SAMPLE_ALL

SAMPLE_CONTEXT = "shoal 2026-11 sample v1"


def sample_key(path: str, seed: int) -> int:
    """The 64-bit number that decides whether `path` is drawn."""
    data = msgpack.packb([seed, path], use_bin_type=True)
    digest = blake3.blake3(data, derive_key_context=SAMPLE_CONTEXT, max_threads=1).digest(length=8)
    return int.from_bytes(digest, "big")


def in_sample(path: str, ppm: int, seed: int) -> bool:
    """Whether the file at `path` ('/'-separated, relative to the root) is in the sample."""
    if ppm >= SAMPLE_ALL:
        return True
    return sample_key(path, seed) * SAMPLE_ALL < ppm << 64


def parse_fraction(text: str) -> int:
    """Parts per million from '1%', '0.5%' or '0.01'; ValueError when it is not in (0, 100%]."""
    text = text.strip()
    try:
        value = Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a fraction like 1% or 0.01") from None
    ppm = value * SAMPLE_ALL
    if ppm.denominator != 1 or not 0 < ppm <= SAMPLE_ALL:
        raise ValueError(f"{text!r} must be above 0 and at most 100%, in steps of 0.0001%")
    return int(ppm)
