"""Path rules: entry names, symlink targets (checked at their depth) and dataset names."""

import posixpath

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.protocol.errors import ObjectFormatError, PathError
from shoal.protocol.format.hashing import Kind, object_id
from shoal.protocol.format.manifest import walk_tree
from shoal.protocol.format.paths import check_dataset_name, check_name, check_symlink_target


@pytest.mark.parametrize("name", ["a", "README.md", ".hidden", "...", "a b", "é", "日本語", "x" * 255, "é" * 127 + "x", "a\\b"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "/", "a/", "a\0b", "\0", "x" * 256, "é" * 128, "\udcff", b"a", None, 3],
)
def test_invalid_names(name: object) -> None:
    with pytest.raises(PathError):
        check_name(name)


@pytest.mark.parametrize(
    "target, depth",
    [
        ("a", 0),
        ("a/b/c", 0),
        ("../a", 1),
        ("../../a/b", 2),
        ("../a", 5),
        ("..a", 0),  # a name that starts with dots is still a name
        ("a..", 0),
    ],
)
def test_valid_symlink_targets(target: str, depth: int) -> None:
    assert check_symlink_target(target, depth) == target


@pytest.mark.parametrize(
    "target, depth",
    [
        ("/etc/passwd", 3),  # absolute
        ("/", 0),
        ("../a", 0),  # climbs above the root from the root
        ("../..", 1),  # climbs two levels from depth 1
        ("../../x", 1),
        ("a/../..", 3),  # descends then climbs: refused at any depth
        ("a/../b", 3),
        ("a/..", 3),
        ("..", 1),  # names no entry
        ("../..", 2),
        ("", 0),
        (".", 0),
        ("./a", 0),
        ("a/./b", 0),
        ("a//b", 0),
        ("a/", 0),  # trailing slash is an empty component
        ("a\0b", 0),
        ("x" * 256, 0),
        (b"a", 0),
    ],
)
def test_invalid_symlink_targets(target: object, depth: int) -> None:
    with pytest.raises(PathError):
        check_symlink_target(target, depth)


_COMPONENTS = st.sampled_from(["..", ".", "", "a", "b", "..."])


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_COMPONENTS, min_size=1, max_size=6), depth=st.integers(0, 3), absolute=st.booleans())
def test_accepted_targets_never_leave_the_root(parts: list[str], depth: int, absolute: bool) -> None:
    target = ("/" if absolute else "") + "/".join(parts)
    try:
        check_symlink_target(target, depth)
    except PathError:
        return
    # Resolve lexically from the link's directory, d0/d1/...; the result must stay inside.
    resolved = posixpath.normpath(posixpath.join(*[f"d{i}" for i in range(depth)], target) if depth else target)
    assert not resolved.startswith("/") and resolved != ".." and not resolved.startswith("../")
    assert resolved != "."  # a link must name an entry, not the root itself


@pytest.mark.parametrize("name", ["a", "ImageNet-1k", "coco_2017.v2", "9", "x" * 128])
def test_valid_dataset_names(name: str) -> None:
    assert check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "a/b", "x" * 129, "é", "a\n", None])
def test_invalid_dataset_names(name: object) -> None:
    with pytest.raises(PathError):
        check_dataset_name(name)


# --- walking a received tree ------------------------------------------------------------------


class Store:
    """Encoded TREE objects by id, as a peer might hand them over."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}

    def tree(self, entries: list) -> bytes:
        data = msgpack.packb([3, 0, entries], use_bin_type=True)
        oid = object_id(Kind.TREE, data)
        self.objects[oid] = data
        return oid

    def load(self, kind: Kind, oid: bytes) -> bytes:
        assert kind == Kind.TREE
        return self.objects[oid]


def link(name: str, target: str) -> list:
    return [name, 2, False, len(target.encode()), target]


def directory(name: str, tree_id: bytes, size: int) -> list:
    return [name, 1, False, size, tree_id]


@pytest.mark.parametrize(
    "target, depth",
    [("../x", 0), ("../../x", 1), ("a/../..", 1), ("/etc", 2), ("../../../x", 2)],
)
def test_walk_rejects_escaping_links_at_their_depth(target: str, depth: int) -> None:
    store = Store()
    tree_id = store.tree([link("l", target)])
    size = len(target.encode())
    for level in reversed(range(depth)):
        tree_id = store.tree([directory(f"d{level}", tree_id, size)])
    with pytest.raises(ObjectFormatError, match="l"):
        list(walk_tree(store.load, tree_id))


def test_walk_accepts_a_link_that_climbs_to_the_root() -> None:
    store = Store()
    inner = store.tree([link("up", "../../top")])
    size = len("../../top")
    middle = store.tree([directory("b", inner, size)])
    root = store.tree([directory("a", middle, size), ["top", 0, False, 0, bytes(32)]])
    paths = [path for path, _ in walk_tree(store.load, root)]
    assert paths == [("a",), ("a", "b"), ("a", "b", "up"), ("top",)]


def test_walk_checks_links_by_depth_not_by_name() -> None:
    # The same link is fine one level down and escaping at the root.
    store = Store()
    sub = store.tree([link("l", "../x")])
    ok = store.tree([directory("d", sub, 4)])
    assert len(list(walk_tree(store.load, ok))) == 2
    with pytest.raises(ObjectFormatError):
        list(walk_tree(store.load, store.tree([link("l", "../x")])))
