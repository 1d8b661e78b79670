"""Cutting long lists into pages, as a stream, never holding the whole list.

The rule (normative, SPEC.md "Paging"): a list of n items is cut into consecutive
runs of FANOUT items (the last run may be shorter). If there is one run, it is
the top. Otherwise each run becomes a page object at the current level, the list
of `Ref(size, page id)` becomes the next level's list, and the rule repeats. The
top run is stored inline in the owning object (the FILE or the directory's TREE)
together with its level.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar, cast

from shoal.protocol.errors import LocalProtocolError, ObjectFormatError
from shoal.protocol.format.objects import FANOUT, MAX_LEVEL, Ref


class Sized(Protocol):
    """An item of a paged list: it counts towards its page's size."""

    @property
    def size(self) -> int: ...


#: A level-0 item: a chunk's Ref, or a directory entry.
T = TypeVar("T", bound=Sized)

#: Builds a page object at `level` from its entries (items at level 0, Refs
#: above) and returns (id, encoded bytes).
PageEncoder = Callable[[int, list[T | Ref]], tuple[bytes, bytes]]
#: Receives each finished page: (id, encoded bytes).
PageSink = Callable[[bytes, bytes], None]


class PagedListBuilder(Generic[T]):
    """Accepts items one by one; emits full pages to `sink`; returns the top run."""

    def __init__(self, encode_page: PageEncoder[T], sink: PageSink) -> None:
        self._encode_page = encode_page
        self._sink = sink
        self._levels: list[list[T | Ref]] = [[]]
        self._sizes: list[int] = [0]
        self._emitted: list[int] = [0]

    def add(self, item: T) -> None:
        """Append one item to the list."""
        self._push(0, item)

    def _push(self, level: int, item: T | Ref) -> None:
        run = self._levels[level]
        # A full run is only cut when another item arrives, so a list of exactly
        # FANOUT items stays inline rather than becoming one lonely page.
        if len(run) == FANOUT:
            self._emit(level)
            run = self._levels[level]
        run.append(item)
        self._sizes[level] += item.size

    def _emit(self, level: int) -> None:
        page_id, data = self._encode_page(level, self._levels[level])
        self._sink(page_id, data)
        ref = Ref(self._sizes[level], page_id)
        self._levels[level] = []
        self._sizes[level] = 0
        self._emitted[level] += 1
        if level + 1 == len(self._levels):
            if level + 1 > MAX_LEVEL:
                raise LocalProtocolError("list too long to page")
            self._levels.append([])
            self._sizes.append(0)
            self._emitted.append(0)
        self._push(level + 1, ref)

    def finish(self) -> tuple[int, list[T | Ref]]:
        """Flush partial pages and return (level, entries) of the top run."""
        level = 0
        while True:
            top = level + 1 == len(self._levels)
            if top and self._emitted[level] == 0:
                return level, self._levels[level]
            if self._levels[level]:
                self._emit(level)
            level += 1


#: Loads the page `ref` points to, which must sit at `level`; returns its entries.
PageLoader = Callable[[int, Ref], Sequence[T | Ref]]


def iter_items(level: int, entries: Sequence[T | Ref], load_page: PageLoader[T]) -> Iterator[T]:
    """Yield the level-0 items of a paged list, loading pages depth first.

    Checks that the list is paged exactly as the rule cuts it (a top above
    level 0 has at least two pages; every page but the last of its level is
    full) and that each page adds up to the size its reference declares, so a
    list has one encoding and a dishonest page is caught where it is read.
    """
    if level > 0 and len(entries) < 2:
        raise ObjectFormatError("a paged list with fewer than two pages must be stored inline")
    yield from _iter_level(level, entries, load_page, last=True)


def _iter_level(level: int, entries: Sequence[T | Ref], load_page: PageLoader[T], last: bool) -> Iterator[T]:
    if level == 0:
        # The decoders hold every list to its level: items at 0, Refs above.
        yield from cast(Sequence[T], entries)
        return
    final = len(entries) - 1
    for i, ref in enumerate(entries):
        if not isinstance(ref, Ref):
            raise ObjectFormatError(f"a level {level} page lists an item where a page reference belongs")
        page = load_page(level - 1, ref)
        page_is_last = last and i == final
        if len(page) != FANOUT and not page_is_last:
            raise ObjectFormatError(f"page {ref.id.hex()[:16]} holds {len(page)} entries; only the last page may be short")
        if not page:
            raise ObjectFormatError(f"page {ref.id.hex()[:16]} is empty")
        total = sum(item.size for item in page)
        if total != ref.size:
            raise ObjectFormatError(f"page {ref.id.hex()[:16]} holds {total} bytes, its reference says {ref.size}")
        yield from _iter_level(level - 1, page, load_page, page_is_last)
