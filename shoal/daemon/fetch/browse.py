"""Listing one directory of a version, here or on a peer, before fetching it."""

from collections.abc import Sequence

import trio

from shoal.daemon.fetch.objects import Objects
from shoal.daemon.fetch.resolve import Resolver
from shoal.daemon.fetch.source import Source
from shoal.daemon.fetch.walk import check_entries
from shoal.daemon.model import VersionInfo, VersionQuery
from shoal.errors import UsageError
from shoal.protocol.format.objects import EntryType, TreeEntry


async def browse(resolver: Resolver, query: VersionQuery, path: tuple[str, ...], limit: int) -> dict:
    """List one directory of a version, fetching only the manifest objects on the way to it.

    A version held here is read from the index; another is resolved from the
    peers' catalogs as a fetch would, and only its VERSION and the TREE objects
    along `path` are downloaded (and checked), so a user can look before fetching.
    """
    local = await trio.to_thread.run_sync(resolver.local_version, query)
    if local is not None:
        version_id, record = local
        sources: list[Source] = []
    else:
        found = await resolver.find(query)
        version_id, record = found.id, found.record
        sources = resolver.sources(query, version_id)
    tree_id = record.root
    for depth, name in enumerate(path):
        entries = await _directory(resolver.objects, tree_id, path[:depth], sources)
        entry = next((e for e in entries if e.name == name), None)
        if entry is None or entry.type != EntryType.DIR:
            raise UsageError(f"{'/'.join(path[: depth + 1])} is not a directory of {query.name}@{record.seq}")
        tree_id = entry.id
    entries = await _directory(resolver.objects, tree_id, path, sources)
    return {
        "version": VersionInfo.from_record(version_id, record).to_json(),
        "path": "/".join(path),
        "total": len(entries),
        "entries": [_entry_json(e) for e in entries[:limit]],
    }


async def _directory(
    objects: Objects, tree_id: bytes, prefix: tuple[str, ...], sources: Sequence[Source]
) -> list[TreeEntry]:
    entries = await objects.tree(tree_id, sources)
    check_entries(prefix, entries)
    return entries


def _entry_json(entry: TreeEntry) -> dict:
    return {
        "name": entry.name,
        "type": entry.type.name.lower(),
        "size": entry.size,
        "executable": entry.type == EntryType.FILE and entry.executable,
        "target": entry.target if entry.type == EntryType.SYMLINK else None,
    }
