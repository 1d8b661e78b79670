"""What a fetch selects from a version: --include patterns and a named subset.

A selection is recorded for every folder a fetch fills (the index's `dests`
table), so the next fetch into it knows which files the folder should hold and
can bring it to exactly the new selection.
"""

from collections.abc import Sequence

import msgpack

from shoal.daemon.fetch.dest import include_matcher
from shoal.daemon.fetch.draw import Draw, draw_for_fetch, exact_draw
from shoal.daemon.fetch.job import Matcher
from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.state import Transfer
from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.errors import BadSample, UnknownSubset, UsageError
from shoal.protocol.errors import ObjectFormatError, ProtocolError
from shoal.protocol.format.objects import (
    DRAW_EXACT,
    DRAW_PER_FILE,
    MAX_SUBSETS,
    SAMPLE_ALL,
    Subset,
    VersionRecord,
    check_subset,
)
from shoal.protocol.format.subsets import format_share, in_draw, in_sample, parse_fraction


def subset_of(record: VersionRecord, name: str) -> Subset:
    """The subset called `name` in `record`."""
    for subset in record.subsets:
        if subset.name == name:
            return subset
    known = ", ".join(s.name for s in record.subsets) or "none"
    raise UnknownSubset(
        f"{record.name}@{record.seq} has no subset {name!r} (it has: {known}); `shoal subset {record.name}` lists them"
    )


def selection_matcher(include: tuple[str, ...], subset: Subset | None, draw: Draw | None = None) -> Matcher:
    """match(parts, is_dir): whether a path is selected by the patterns and the subset
    (an exact sample's by its `draw` from the version fetched)."""
    outer = include_matcher(include)
    if subset is None:
        return outer
    inner = include_matcher(subset.include)

    def drawn(path: str) -> bool:
        if draw is not None:
            return in_draw(path, subset.seed, draw.last)
        return in_sample(path, subset.sample, subset.seed)

    def match(parts: tuple[str, ...], is_dir: bool) -> bool:
        if not (outer(parts, is_dir) and inner(parts, is_dir)):
            return False
        return is_dir or drawn("/".join(parts))

    return match


def selection_key(include: tuple[str, ...], subset: Subset | None, draw: Draw | None = None) -> bytes:
    """Equal for two selections that pick the same files of any tree: an exact draw's
    files depend on the whole version, so its last drawn key is part of it."""
    picked = None if subset is None else [list(subset.include), subset.sample, subset.seed]
    if picked is not None and draw is not None:
        picked += [DRAW_EXACT, draw.last]
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


async def selection_of(
    include: tuple[str, ...], subset_name: str | None, record: VersionRecord,
    objects: Objects, transfer: Transfer, sources: Sequence[Source],
) -> tuple[Matcher, bytes]:
    """(matcher, selection key) of a fetch of `record`; an exact sample first fetches
    the trees its patterns include, to draw from them."""
    subset = subset_of(record, subset_name) if subset_name is not None else None
    draw = None
    if subset is not None and subset.draw == DRAW_EXACT:
        draw = await draw_for_fetch(record.root, subset, objects, transfer, sources)
    return selection_matcher(include, subset, draw), selection_key(include, subset, draw)


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
            raise BadSample("sample must be text such as '10%' or '0.1'")
        try:
            ppm = parse_fraction(sample)
        except ValueError as e:
            raise BadSample(f"bad --sample: {e}") from None
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
        raise UsageError("seed must be an integer from 0 to 2^64 - 1")
    if seed is not None and sample is None:
        raise UsageError("--seed only makes sense with --sample")
    subset = Subset(name, tuple(patterns), ppm, seed or 0, DRAW_EXACT if ppm < SAMPLE_ALL else DRAW_PER_FILE)
    try:
        check_subset(subset)
    except ObjectFormatError as e:
        raise UsageError(f"bad subset: {e}") from None
    return subset


def defined(index: Index, head: VersionRecord, subset: Subset) -> tuple[tuple[Subset, ...], str]:
    """The head's subsets with `subset` added or replaced, and the message of the version that
    publishes them: what the subset holds of the head's files, when its trees are stored here."""
    subsets = with_subset(head, subset)
    verb = "redefined" if any(s.name == subset.name for s in head.subsets) else "defined"
    try:
        draw = exact_draw(index_loader(index), head.root, subset)
    except ProtocolError:
        draw = None  # a partial copy: its trees outside the fetched part are not here
    return subsets, f"subset {subset.name} {verb}: {_holds(subset, draw)}"


def _holds(subset: Subset, draw: Draw | None) -> str:
    shown = subset.include[:3]
    matching = f" matching {' '.join(shown)}" if shown else ""
    if len(subset.include) > len(shown):
        matching += f" and {len(subset.include) - len(shown)} more patterns"
    if draw is None:
        share = f"{format_share(subset.sample)} of " if subset.sample < SAMPLE_ALL else ""
        return f"{share}the files{matching}"
    files = f"{draw.files:,} file{'s' if draw.files != 1 else ''}{matching}"
    if subset.sample == SAMPLE_ALL:
        return files
    return f"{format_share(subset.sample)} of {files}, {draw.drawn:,} drawn"
