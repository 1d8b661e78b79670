"""Finding the version a fetch names, and the peers that serve it."""

import math
from dataclasses import dataclass

import trio

from shoal.daemon.fetch.errors import FetchError, NoPeer
from shoal.daemon.fetch.objects import Objects, stored_bytes
from shoal.daemon.fetch.reach import no_peer, settled
from shoal.daemon.fetch.source import Source, SourceDirectory
from shoal.daemon.library.history import has_manifest
from shoal.daemon.model import PeerReach, VersionQuery
from shoal.daemon.store.index import Index, VersionRow
from shoal.errors import UnknownDataset, UsageError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import check_version_signature
from shoal.protocol.format.objects import VersionRecord
from shoal.protocol.wire.messages import CatalogEntry

Offers = list[tuple[Source, CatalogEntry]]

#: How often a fetch that gives up once every peer was tried looks again: a failed dial
#: and the end of discovery's grace change where peers stand without any event.
SETTLE_POLL = 0.25


@dataclass(frozen=True, slots=True)
class Resolved:
    """A version, checked: its id, its record, and the VERSION object's bytes."""

    id: bytes
    record: VersionRecord
    data: bytes


class Resolver:
    """Picks a version from this daemon's index and the connected peers' catalogs."""

    def __init__(self, index: Index, peers: SourceDirectory, objects: Objects) -> None:
        self.index = index
        self.peers = peers
        self.objects = objects

    async def latest_or_named(self, query: VersionQuery) -> tuple[bytes, VersionRecord]:
        """The version `query` names, as a fetch would pick it; "latest" is the newest of this
        daemon's head and the peers' heads."""
        if _wanted(query) == "latest":
            local = await trio.to_thread.run_sync(self.local_version, query)
            if local is not None and all(entry.seq <= local[1].seq for _, entry in self.offers(query)):
                return local
        found = await self.find(query, need_full=False)
        return found.id, found.record

    async def find(self, query: VersionQuery, *, need_full: bool = True) -> Resolved:
        """The version `query` names, waiting up to its timeout for a peer that offers it (with
        `fail_fast`, only until every trusted peer has been tried); with `need_full`, one that
        some peer serves in full or that is stored here."""
        with trio.move_on_after(query.timeout):
            while True:
                offers = self.offers(query)
                if offers:
                    found = await self._pick(query, offers, need_full)
                    if found is not None:
                        return found
                else:
                    stored = await self._stored(query)
                    if stored is not None:
                        return stored
                if query.fail_fast and settled(self.asked(query)):
                    raise NoPeer(no_peer(_what(query), query.name, self.asked(query), None))
                with trio.move_on_after(SETTLE_POLL if query.fail_fast else math.inf):
                    await self.peers.wait_for_change()
        raise NoPeer(no_peer(_what(query), query.name, self.asked(query), query.timeout))

    def asked(self, query: VersionQuery) -> list[PeerReach]:
        """The trusted peers a fetch of `query` looks to: all of them, or the one --from names."""
        peers = self.peers.reach()
        if query.from_peer:
            peers = [p for p in peers if p.peer_id == query.from_peer or p.peer_id.startswith(query.from_peer)]
        return peers

    def offers(self, query: VersionQuery) -> Offers:
        """The peers offering query.name, narrowed to query.from_peer if it names one."""
        offers = list(self.peers.offers(query.name))
        if query.from_peer:
            offers = [(s, e) for s, e in offers if s.peer_id == query.from_peer or s.peer_id.startswith(query.from_peer)]
        return offers

    def sources(self, query: VersionQuery, version_id: bytes) -> list[Source]:
        """The peers serving `version_id` in full."""
        return [s for s, e in self.offers(query) if e.head == version_id or version_id in e.full]

    def stored_version(self, query: VersionQuery) -> tuple[bytes, VersionRecord] | None:
        """The asked-for version among those recorded here, if its whole manifest is stored."""
        wanted = _wanted(query)
        known = self.index.dataset(query.name)
        rows = list(self.index.versions(query.name))
        if wanted == "latest":
            chosen = [r for r in rows if known is not None and r.id == known[1]]
        elif is_seq(wanted):
            chosen = [r for r in rows if r.seq == int(wanted)]
        else:
            check_prefix(wanted)
            chosen = [r for r in rows if r.id.hex().startswith(wanted)]
            if len(chosen) > 1:
                raise UsageError(f"version prefix {wanted!r} is ambiguous; give more digits")
        if len(chosen) != 1 or not has_manifest(self.index, chosen[0].root):
            return None
        return chosen[0].id, self.objects.version(chosen[0].id)

    def local_version(self, query: VersionQuery) -> tuple[bytes, VersionRecord] | None:
        """The asked-for version, if this daemon holds it (shared or fetched here)."""
        known = self.index.dataset(query.name)
        if known is None or known[1] is None:
            return None
        chosen = _matching(_wanted(query), list(self.index.versions(query.name)), known[1])
        # Only the head's files are certain to be here; older versions are browsed like remote ones.
        if len(chosen) != 1 or chosen[0].id != known[1]:
            return None
        return chosen[0].id, self.objects.version(chosen[0].id)

    async def _stored(self, query: VersionQuery) -> Resolved | None:
        """An explicitly named version stored here, which no peer serves in full: the fetch
        then assembles it from local chunks, and waits for peers only for what is missing."""
        if _wanted(query) == "latest":
            return None
        stored = await trio.to_thread.run_sync(self.stored_version, query)
        if stored is None:
            return None
        return Resolved(stored[0], stored[1], stored_bytes(self.index, stored[0]))

    async def _pick(self, query: VersionQuery, offers: Offers, need_full: bool) -> Resolved | None:
        wanted = _wanted(query)
        newest = max(offers, key=lambda o: o[1].seq)
        if wanted == "latest":
            version_id: bytes | None = newest[1].head
        elif is_seq(wanted):
            version_id = await self._find_seq(query.name, int(wanted), offers, newest)
        else:
            version_id = self._find_prefix(query.name, wanted, offers)
        if version_id is None:
            return None
        sources = [s for s, e in offers if e.head == version_id or version_id in e.full]
        if not sources and need_full:
            stored = await self._stored(query)
            if stored is None:
                raise NoPeer(f"no connected peer can serve {query.name}@{query.version} in full")
            return stored
        await self.objects.ensure(Kind.VERSION, [version_id], sources or [s for s, _ in offers])
        data = stored_bytes(self.index, version_id)
        record = self.objects.version(version_id)
        check_version_signature(record)
        if record.name != query.name:
            raise FetchError(f"version {version_id.hex()[:12]} belongs to {record.name!r}, not {query.name!r}")
        return Resolved(version_id, record, data)

    async def _find_seq(
        self, name: str, seq: int, offers: Offers, newest: tuple[Source, CatalogEntry]
    ) -> bytes | None:
        for _, entry in offers:
            if entry.seq == seq:
                return entry.head
        for row in self.index.versions(name):
            if row.seq == seq:
                return row.id
        if seq > newest[1].seq:
            raise UnknownDataset(f"{name}@{seq} does not exist; the newest is {name}@{newest[1].seq}")
        # Walk back the first-parent chain from the newest head.
        current = newest[1].head
        while True:
            await self.objects.ensure(Kind.VERSION, [current], [newest[0]])
            record = self.objects.version(current)
            if record.seq == seq:
                return current
            if record.seq < seq or not record.parents:
                raise UnknownDataset(f"{name}@{seq} is not in the history peers offer")
            current = record.parents[0]

    def _find_prefix(self, name: str, prefix: str, offers: Offers) -> bytes | None:
        check_prefix(prefix)
        ids = {e.head for _, e in offers} | {v for _, e in offers for v in e.full}
        ids |= {row.id for row in self.index.versions(name)}
        matches = [i for i in ids if i.hex().startswith(prefix)]
        if len(matches) > 1:
            raise UsageError(f"version prefix {prefix!r} is ambiguous; give more digits")
        return matches[0] if matches else None


#: Version references of all digits this long or longer are id prefixes, not sequence numbers:
#: no dataset reaches a million versions, and an 8-digit id prefix is all digits one time in 23.
MIN_DIGIT_PREFIX = 7


def is_seq(wanted: str) -> bool:
    """Whether a version reference is a sequence number (`@3`) rather than an id prefix."""
    return wanted.isdigit() and len(wanted) < MIN_DIGIT_PREFIX


def check_prefix(prefix: str) -> None:
    """Refuse a version that is neither a number nor a usable id prefix."""
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"version {prefix!r} is neither a number, 'latest', nor a hex id prefix of 4+ digits")


def _wanted(query: VersionQuery) -> str:
    return (query.version or "latest").lower()


def _what(query: VersionQuery) -> str:
    return f"{query.name}@{query.version}" if query.version else query.name


def _matching(wanted: str, rows: list[VersionRow], head: bytes) -> list[VersionRow]:
    if wanted == "latest":
        return [r for r in rows if r.id == head]
    if is_seq(wanted):
        return [r for r in rows if r.seq == int(wanted)]
    return [r for r in rows if r.id.hex().startswith(wanted)]
