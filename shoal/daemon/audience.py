"""Who may see each dataset: its audience, and the serving check that enforces it.

A dataset's audience is either every trusted peer (the default, stored as no
row) or a set of chosen peer ids. A peer outside a dataset's audience gets what
an untrusted peer gets for it: the dataset is left out of the catalog it is
sent, and every object and chunk of it is answered as missing.

The check must cost nothing for a peer that sees every dataset, the usual case:
`hides_from` answers that from memory. Otherwise the ids a request asks for are
checked against the objects and chunks reachable from the versions of the
datasets hidden from that peer; only an id found there is looked up in the
datasets the peer may see, since content shared by two datasets is served
through either. Reachable sets are computed once per set of versions and cached.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from shoal.daemon.index import Index
from shoal.daemon.scanner import index_loader
from shoal.protocol.errors import ProtocolError
from shoal.protocol.hashing import Kind
from shoal.protocol.manifest import file_chunks, tree_entries
from shoal.protocol.objects import EntryType, FileObject, VersionRecord, decode


class Audiences:
    """The audience of every dataset, kept in the index and mirrored in memory."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._chosen: dict[str, frozenset[str]] = index.audiences()
        self._reach: dict[str, tuple[tuple[bytes, ...], frozenset[bytes]]] = {}
        self._lock = threading.Lock()

    def of(self, name: str) -> frozenset[str] | None:
        """The peer ids chosen to see `name`, or None when every trusted peer does."""
        return self._chosen.get(name)

    def set(self, name: str, peers: Iterable[str] | None) -> None:
        """Limit `name` to `peers`, or (None) open it to every trusted peer."""
        chosen = None if peers is None else frozenset(peers)
        self._index.set_audience(name, chosen)
        if chosen is None:
            self._chosen.pop(name, None)
        else:
            self._chosen[name] = chosen

    def forget(self, name: str) -> None:
        self.set(name, None)

    def may_see(self, peer_id: str, name: str) -> bool:
        chosen = self._chosen.get(name)
        return chosen is None or peer_id in chosen

    def hides_from(self, peer_id: str) -> bool:
        """Whether some dataset is hidden from this peer (if not, nothing need be checked)."""
        return any(peer_id not in chosen for chosen in self._chosen.values())

    def withheld(self, peer_id: str, ids: list[bytes]) -> set[bytes]:
        """The ids among `ids` this peer may not have: reachable only from datasets hidden from it.

        Blocks on the index; call it from a worker thread.
        """
        names = self._index.dataset_names()
        hidden = [name for name in names if not self.may_see(peer_id, name)]
        suspects = set(ids)
        found: set[bytes] = set()
        for name in hidden:
            found |= suspects & self._reachable(name)
        if not found:
            return found
        for name in names:
            if found and self.may_see(peer_id, name):
                found -= self._reachable(name)
        return found

    def _reachable(self, name: str) -> frozenset[bytes]:
        """Every version, tree, file, page and chunk id of the versions of `name` held here."""
        versions = tuple(row.id for row in self._index.versions(name))
        with self._lock:
            cached = self._reach.get(name)
        if cached is not None and cached[0] == versions:
            return cached[1]
        reach = frozenset(_walk_versions(self._index, versions))
        with self._lock:
            self._reach[name] = (versions, reach)
        return reach


def _walk_versions(index: Index, versions: tuple[bytes, ...]) -> set[bytes]:
    ids: set[bytes] = set()
    stored = index_loader(index)

    def load(kind: Kind, object_id: bytes) -> bytes:
        ids.add(object_id)
        return stored(kind, object_id)

    def visit(tree_id: bytes) -> None:
        # A subtree every version shares is walked once.
        if tree_id in ids:
            return
        for entry in tree_entries(load, tree_id):
            if entry.type == EntryType.DIR:
                visit(entry.ref)  # type: ignore[arg-type]
            elif entry.type == EntryType.FILE and entry.ref not in ids:
                file = decode(Kind.FILE, load(Kind.FILE, entry.ref), entry.ref)  # type: ignore[arg-type]
                assert isinstance(file, FileObject)
                ids.update(ref.id for ref in file_chunks(load, file))

    for version_id in versions:
        try:
            record = decode(Kind.VERSION, load(Kind.VERSION, version_id), version_id)
            assert isinstance(record, VersionRecord)
            visit(record.root)
        except ProtocolError:
            # A version whose manifest is only partly here (a fetch of a subset):
            # what is missing is not served either.
            continue
    return ids
