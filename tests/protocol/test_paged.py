"""Paging of chunk lists and directories: the cut rule, boundaries, and hostile pages."""

import math

import msgpack
import pytest

from shoal.protocol.errors import IntegrityError, LocalProtocolError, ObjectFormatError
from shoal.protocol.format.chunking import DEFAULT_PARAMS
from shoal.protocol.format.hashing import Kind, object_id
from shoal.protocol.format.manifest import FileBuilder, TreeBuilder, file_chunks, tree_entries, walk_tree
from shoal.protocol.format.objects import FANOUT, ChunkListNode, FileEntry, FileObject, Ref, decode

PARAMS = [16384, 65536, 262144]


class Store:
    """Objects by id, with the kind each was stored as; loads check both."""

    def __init__(self) -> None:
        self.objects: dict[bytes, tuple[Kind, bytes]] = {}

    def sink(self, oid: bytes, data: bytes) -> None:
        self.objects[oid] = (Kind(data[1]), data)

    def put(self, kind: Kind, fields: list) -> bytes:
        data = msgpack.packb(fields, use_bin_type=True)
        oid = object_id(kind, data)
        self.objects[oid] = (kind, data)
        return oid

    def load(self, kind: Kind, oid: bytes) -> bytes:
        stored_kind, data = self.objects[oid]
        assert stored_kind == kind
        return data


def expected_shape(n: int) -> tuple[int, list[int]]:
    """(top level, pages per level) for n items, straight from the rule in SPEC.md."""
    level, pages = 0, []
    while n > FANOUT:
        n = math.ceil(n / FANOUT)
        pages.append(n)
        level += 1
    return level, pages


def cid(i: int) -> bytes:
    return i.to_bytes(32, "big")


@pytest.mark.parametrize("n", [0, 1, FANOUT - 1, FANOUT, FANOUT + 1, 2 * FANOUT, 2 * FANOUT + 1, FANOUT * FANOUT + 1])
def test_chunk_list_boundaries_round_trip(n: int) -> None:
    store = Store()
    builder = FileBuilder(DEFAULT_PARAMS, store.sink)
    for i in range(n):
        builder.add_chunk(cid(i), 1 + i % 3)
    file_id, size = builder.finish()
    assert size == sum(1 + i % 3 for i in range(n))

    file = decode(Kind.FILE, store.load(Kind.FILE, file_id), file_id)
    assert isinstance(file, FileObject)
    level, pages = expected_shape(n)
    assert file.level == level
    assert len(file.entries) == (n if level == 0 else pages[-1])
    per_level = [0] * 9
    for kind, data in store.objects.values():
        if kind == Kind.CHUNKS:
            per_level[data[2]] += 1  # [1, level, ...]: the level is the third byte
    assert per_level[: len(pages)] == pages
    assert sum(per_level) == sum(pages)

    chunks = list(file_chunks(store.load, file))
    assert len(chunks) == n
    assert all(r.id == cid(i) and r.size == 1 + i % 3 for i, r in enumerate(chunks))


@pytest.mark.parametrize("n", [0, 1, FANOUT, FANOUT + 1, 3 * FANOUT + 7])
def test_directory_boundaries_round_trip(n: int) -> None:
    store = Store()
    builder = TreeBuilder(store.sink)
    names = [f"{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        builder.add(FileEntry(name, i, cid(i)))
    tree_id = builder.finish()
    assert builder.size == sum(range(n))
    node = decode(Kind.TREE, store.load(Kind.TREE, tree_id), tree_id)
    assert node.level == expected_shape(n)[0]  # type: ignore[union-attr]
    assert [e.name for e in tree_entries(store.load, tree_id)] == names


def test_tree_builder_refuses_unsorted_or_repeated_names() -> None:
    builder = TreeBuilder(lambda i, d: None)
    builder.add(FileEntry("b", 0, cid(0)))
    with pytest.raises(LocalProtocolError):
        builder.add(FileEntry("a", 0, cid(0)))
    with pytest.raises(LocalProtocolError):
        builder.add(FileEntry("b", 0, cid(0)))


# --- hostile pages -----------------------------------------------------------------------------


def chunk_page(store: Store, level: int, refs: list[tuple[int, bytes]]) -> bytes:
    return store.put(Kind.CHUNKS, [1, level, [list(r) for r in refs]])


def file_over(store: Store, level: int, refs: list[tuple[int, bytes]]) -> FileObject:
    size = sum(s for s, _ in refs)
    oid = store.put(Kind.FILE, [2, size, PARAMS, level, [list(r) for r in refs]])
    file = decode(Kind.FILE, store.load(Kind.FILE, oid), oid)
    assert isinstance(file, FileObject)
    return file


def full_page(store: Store) -> tuple[int, bytes]:
    return FANOUT, chunk_page(store, 0, [(1, cid(i)) for i in range(FANOUT)])


def test_chunk_page_at_the_wrong_level_rejected() -> None:
    store = Store()
    inner = chunk_page(store, 0, [(1, cid(0))])
    # A level-1 page where a level-0 page belongs.
    wrong = chunk_page(store, 1, [(1, inner)])
    file = file_over(store, 1, [full_page(store), (1, wrong)])
    with pytest.raises(ObjectFormatError, match="level"):
        list(file_chunks(store.load, file))


def test_chunk_page_sizes_must_match_its_ref() -> None:
    store = Store()
    short = chunk_page(store, 0, [(1, cid(0))])
    file = file_over(store, 1, [full_page(store), (5, short)])  # claims 5 bytes, holds 1
    with pytest.raises(ObjectFormatError):
        list(file_chunks(store.load, file))


def test_a_page_of_the_wrong_kind_rejected() -> None:
    # A TREE object's bytes offered where a CHUNKS page belongs fail the id check: the
    # two kinds hash under different contexts, so the bytes cannot match the ref.
    store = Store()
    tree_page = store.put(Kind.TREE, [3, 0, [["a", 0, False, 1, cid(0)]]])
    file = file_over(store, 1, [full_page(store), (1, tree_page)])
    with pytest.raises(IntegrityError):
        list(file_chunks(lambda kind, oid: store.objects[oid][1], file))


def test_directory_page_at_the_wrong_level_rejected() -> None:
    store = Store()
    leaf = store.put(Kind.TREE, [3, 0, [["z", 0, False, 1, cid(0)]]])
    wrong = store.put(Kind.TREE, [3, 1, [[1, leaf]]])
    first = store.put(Kind.TREE, [3, 0, [[f"{i:04d}", 0, False, 0, cid(i)] for i in range(FANOUT)]])
    root = store.put(Kind.TREE, [3, 1, [[0, first], [1, wrong]]])
    with pytest.raises(ObjectFormatError, match="level"):
        list(tree_entries(store.load, root))


@pytest.mark.parametrize("second", [["0000", 0, False, 0], ["0001", 0, False, 0]])
def test_directory_order_is_checked_across_pages(second: list) -> None:
    # The second page starts with a name that is not after the first page's last: unsorted or repeated.
    store = Store()
    first = store.put(Kind.TREE, [3, 0, [[f"{i:04d}", 0, False, 0, cid(i)] for i in range(1, FANOUT + 1)]])
    last = store.put(Kind.TREE, [3, 0, [second + [cid(0)]]])
    root = store.put(Kind.TREE, [3, 1, [[0, first], [0, last]]])
    with pytest.raises(ObjectFormatError, match="order"):
        list(tree_entries(store.load, root))


def test_directory_page_sizes_must_match_its_ref() -> None:
    store = Store()
    first = store.put(Kind.TREE, [3, 0, [[f"{i:04d}", 0, False, 1, cid(i)] for i in range(FANOUT)]])
    last = store.put(Kind.TREE, [3, 0, [["9999", 0, False, 1, cid(0)]]])
    root = store.put(Kind.TREE, [3, 1, [[FANOUT, first], [7, last]]])
    with pytest.raises(ObjectFormatError):
        list(tree_entries(store.load, root))


def test_directory_entry_size_must_match_its_tree() -> None:
    # SPEC "The objects": a directory entry's size is the sum of its tree's entries. A walk
    # loads every subtree, so it can and must catch a declared total that does not add up
    # (a hostile one would mislead progress totals and free-space checks).
    store = Store()
    sub = store.put(Kind.TREE, [3, 0, [["a", 2, False, 1, "b"], ["c", 0, False, 10, cid(0)]]])
    honest = store.put(Kind.TREE, [3, 0, [["d", 1, False, 11, sub]]])
    assert [p for p, _ in walk_tree(store.load, honest)] == [("d",), ("d", "a"), ("d", "c")]
    inflated = store.put(Kind.TREE, [3, 0, [["d", 1, False, 2**40, sub]]])
    with pytest.raises(ObjectFormatError):
        list(walk_tree(store.load, inflated))


# The paging rule fixes one shape per list (SPEC.md "Paging"). A reader that accepts
# another shape accepts a second id for the same content, which a re-hash of that
# content (verify, re-share) can never reproduce.


def test_a_list_that_fits_inline_must_not_be_paged() -> None:
    store = Store()
    page = chunk_page(store, 0, [(1, cid(i)) for i in range(3)])
    file = file_over(store, 1, [(3, page)])  # one page: the rule keeps 3 chunks inline
    with pytest.raises(ObjectFormatError):
        list(file_chunks(store.load, file))


def test_only_the_last_page_of_a_level_may_be_short() -> None:
    store = Store()
    short = chunk_page(store, 0, [(1, cid(0))])
    rest = chunk_page(store, 0, [(1, cid(i)) for i in range(1, FANOUT + 1)])
    file = file_over(store, 1, [(1, short), (FANOUT, rest)])
    with pytest.raises(ObjectFormatError):
        list(file_chunks(store.load, file))


def test_the_canonical_shape_of_the_same_chunks_is_accepted() -> None:
    # Control for the two tests above: the rule's own shape of a 1025-chunk list passes.
    store = Store()
    first = chunk_page(store, 0, [(1, cid(i)) for i in range(FANOUT)])
    last = chunk_page(store, 0, [(1, cid(FANOUT))])
    file = file_over(store, 1, [(FANOUT, first), (1, last)])
    assert [r.id for r in file_chunks(store.load, file)] == [cid(i) for i in range(FANOUT + 1)]
    built = Store()
    builder = FileBuilder(DEFAULT_PARAMS, built.sink)
    for i in range(FANOUT + 1):
        builder.add_chunk(cid(i), 1)
    assert builder.finish()[0] == object_id(Kind.FILE, msgpack.packb([2, FANOUT + 1, PARAMS, 1, [[FANOUT, first], [1, last]]]))


def test_chunk_list_node_decodes_to_its_entries() -> None:
    store = Store()
    page = chunk_page(store, 0, [(5, cid(1)), (6, cid(2))])
    node = decode(Kind.CHUNKS, store.load(Kind.CHUNKS, page), page)
    assert node == ChunkListNode(0, (Ref(5, cid(1)), Ref(6, cid(2))))
