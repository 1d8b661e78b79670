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
through either. Reachable ids are recorded in the index once per set of versions.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Iterator

from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import file_chunks, tree_entries
from shoal.protocol.format.objects import EntryType, decode_version, stored_file

#: Reachable ids recorded per transaction.
REACH_BATCH = 10_000


class Audiences:
    """The audience of every dataset, kept in the index and mirrored in memory."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._chosen: dict[str, frozenset[str]] = index.audiences()
        #: Held while a dataset's reachable ids are recorded, so that two requests do not both record them.
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
        self._index.drop_reach(name)

    def may_see(self, peer_id: str, name: str) -> bool:
        chosen = self._chosen.get(name)
        return chosen is None or peer_id in chosen

    def hides_from(self, peer_id: str) -> bool:
        """Whether some dataset is hidden from this peer (if not, nothing need be checked)."""
        return any(peer_id not in chosen for chosen in self._chosen.values())

    def withheld(self, peer_id: str, ids: list[bytes]) -> builtins.set[bytes]:  # `set` alone names the method above
        """The ids among `ids` this peer may not have: reachable only from datasets hidden from it.

        Blocks on the index; call it from a worker thread.
        """
        names = self._index.dataset_names()
        hidden = [name for name in names if not self.may_see(peer_id, name)]
        for name in hidden:
            self._ensure_reach(name)
        found = self._index.reach_hits(ids, hidden)
        if not found:
            return found
        visible = [name for name in names if self.may_see(peer_id, name)]
        for name in visible:
            self._ensure_reach(name)
        return found - self._index.reach_hits(list(found), visible)

    def _ensure_reach(self, name: str) -> None:
        """Record in the index every version, tree, file, page and chunk id of the versions
        of `name` held here, unless recorded for exactly these versions. In the index, not in
        memory: a dataset of a million files reaches millions of ids."""
        versions = b"".join(row.id for row in self._index.versions(name))
        with self._lock:
            if self._index.reach_versions(name) == versions:
                return
            self._index.drop_reach(name)
            batch: list[bytes] = []
            for object_id in _walk_versions(self._index, versions):
                batch.append(object_id)
                if len(batch) >= REACH_BATCH:
                    self._index.add_reach(name, batch)
                    batch = []
            self._index.add_reach(name, batch)
            self._index.finish_reach(name, versions)


def _walk_versions(index: Index, versions: bytes) -> Iterator[bytes]:
    """Every id reachable from the versions whose ids are concatenated in `versions`; an id
    may come more than once (a file in two places), a subtree met again is not walked again."""
    stored = index_loader(index)
    loaded: list[bytes] = []

    def load(kind: Kind, object_id: bytes) -> bytes:
        loaded.append(object_id)
        return stored(kind, object_id)

    def drain() -> list[bytes]:
        out = loaded[:]
        loaded.clear()
        return out

    trees: set[bytes] = set()

    def visit(tree_id: bytes) -> Iterator[bytes]:
        # Trees only, one id a directory: a version's folders, not its files.
        if tree_id in trees:
            return
        trees.add(tree_id)
        for entry in tree_entries(load, tree_id):
            if entry.type == EntryType.DIR:
                yield from drain()
                yield from visit(entry.id)
            elif entry.type == EntryType.FILE:
                file = stored_file(load(Kind.FILE, entry.id), entry.id)
                yield from (ref.id for ref in file_chunks(load, file))
                yield from drain()
        yield from drain()

    for start in range(0, len(versions), 32):
        version_id = versions[start : start + 32]
        try:
            record = decode_version(load(Kind.VERSION, version_id), version_id)
            yield from visit(record.root)
        except ProtocolError:
            # A version whose manifest is only partly here (a fetch of a subset):
            # what is missing is not served either.
            pass
        yield from drain()
