"""Content-defined chunking parameters and the chunker that applies them.

Chunk boundaries follow FastCDC 2020 (normalized chunking level 1, the paper's
default gear table) as implemented by the compiled `pyfastcdc` package. The sizes
are format parameters recorded in every file object, so a later default can
change without making old versions unreadable. SPEC.md gives the reasoning for
the defaults.
"""

from dataclasses import dataclass

import pyfastcdc

from shoal.protocol.errors import ObjectFormatError

#: pyfastcdc's accepted ranges; anything outside them is not a shoal file.
_MIN_RANGE = (64, 1024 * 1024)
_AVG_RANGE = (256, 4 * 1024 * 1024)
_MAX_RANGE = (1024, 16 * 1024 * 1024)
MAX_CHUNK_SIZE = _MAX_RANGE[1]


@dataclass(frozen=True, slots=True)
class ChunkingParams:
    """Minimum, target average and maximum chunk size in bytes."""

    min_size: int
    avg_size: int
    max_size: int

    def __post_init__(self) -> None:
        for value, (lo, hi), label in (
            (self.min_size, _MIN_RANGE, "min"),
            (self.avg_size, _AVG_RANGE, "avg"),
            (self.max_size, _MAX_RANGE, "max"),
        ):
            if type(value) is not int or not lo <= value <= hi:
                raise ObjectFormatError(f"chunking {label} size {value!r} is outside {lo}..{hi}")
        if not self.min_size <= self.avg_size <= self.max_size:
            raise ObjectFormatError("chunking sizes must satisfy min <= avg <= max")

    def as_list(self) -> list[int]:
        """The encoded form: [min, avg, max]."""
        return [self.min_size, self.avg_size, self.max_size]


DEFAULT_PARAMS = ChunkingParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


def make_chunker(params: ChunkingParams) -> pyfastcdc.FastCDC:
    """Return a chunker for `params`; not safe to share between threads."""
    return pyfastcdc.FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=1,
        seed=0,
    )
