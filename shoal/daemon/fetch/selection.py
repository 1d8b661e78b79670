"""What a fetch selects from a version: --include patterns and a named subset.

A selection is recorded for every folder a fetch fills (the index's `dests`
table), so the next fetch into it knows which files the folder should hold and
can bring it to exactly the new selection.
"""

import msgpack

from shoal.daemon.fetch.dest import include_matcher
from shoal.errors import UnknownSubset, UsageError
from shoal.protocol.errors import ObjectFormatError
from shoal.protocol.format.objects import MAX_SUBSETS, SAMPLE_ALL, Subset, VersionRecord, check_subset
from shoal.protocol.format.subsets import in_sample, parse_fraction


def subset_of(record: VersionRecord, name: str) -> Subset:
    """The subset called `name` in `record`."""
    for subset in record.subsets:
        if subset.name == name:
            return subset
    known = ", ".join(s.name for s in record.subsets) or "none"
    raise UnknownSubset(
        f"{record.name}@{record.seq} has no subset {name!r} (it has: {known}); `shoal subset {record.name}` lists them"
    )


def selection_matcher(include: tuple[str, ...], subset: Subset | None):
    """match(parts, is_dir): whether a path is selected by the patterns and the subset."""
    outer = include_matcher(include)
    if subset is None:
        return outer
    inner = include_matcher(subset.include)

    def match(parts: tuple[str, ...], is_dir: bool) -> bool:
        if not (outer(parts, is_dir) and inner(parts, is_dir)):
            return False
        return is_dir or in_sample("/".join(parts), subset.sample, subset.seed)

    return match


def selection_key(include: tuple[str, ...], subset: Subset | None) -> bytes:
    """Equal for two selections that pick the same files of any tree."""
    picked = None if subset is None else [list(subset.include), subset.sample, subset.seed]
    return msgpack.packb([sorted(include), picked], use_bin_type=True)


def with_subset(record: VersionRecord, subset: Subset) -> tuple[Subset, ...]:
    """The record's subsets with `subset` added or replaced, sorted by name."""
    others = [s for s in record.subsets if s.name != subset.name]
    if len(others) >= MAX_SUBSETS:
        raise UsageError(f"{record.name} already has {MAX_SUBSETS} subsets; delete one first")
    return tuple(sorted(others + [subset], key=lambda s: s.name.encode("utf-8")))


def without_subset(record: VersionRecord, name: str) -> tuple[Subset, ...]:
    """The record's subsets without `name`, which must be one of them."""
    subset_of(record, name)
    return tuple(s for s in record.subsets if s.name != name)


def selection_of(include: tuple[str, ...], subset_name: str | None, record: VersionRecord):
    """(matcher, selection key) of a fetch of `record`."""
    subset = subset_of(record, subset_name) if subset_name is not None else None
    return selection_matcher(include, subset), selection_key(include, subset)


def parse_subset(name: str, include: object, sample: object, seed: object) -> Subset:
    """A subset from control parameters: include patterns and/or a sample ("1%") with a seed."""
    if include is None and sample is None:
        raise UsageError(f"say what subset {name} holds: --include GLOB and/or --sample PCT")
    patterns = include or []
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise UsageError("include must be a list of non-empty glob patterns")
    include_matcher(tuple(patterns))
    ppm = SAMPLE_ALL
    if sample is not None:
        if not isinstance(sample, str):
            raise UsageError("sample must be text such as '1%' or '0.01'")
        try:
            ppm = parse_fraction(sample)
        except ValueError as e:
            raise UsageError(f"bad --sample: {e}") from None
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
        raise UsageError("seed must be an integer from 0 to 2^64 - 1")
    if seed is not None and sample is None:
        raise UsageError("--seed only makes sense with --sample")
    subset = Subset(name, tuple(patterns), ppm, seed or 0)
    try:
        check_subset(subset)
    except ObjectFormatError as e:
        raise UsageError(f"bad subset: {e}") from None
    return subset
