"""What a partial fetch selects, counted: the files and bytes its summary and progress report."""

from shoal.daemon.fetch.job import Matcher
from shoal.daemon.store.index import Index
from shoal.daemon.store.loader import index_loader
from shoal.protocol.format.manifest import tree_entries
from shoal.protocol.format.objects import EntryType


def selected_totals(index: Index, root: bytes, matcher: Matcher) -> tuple[int, int]:
    """(bytes, files) of the files `matcher` selects below `root`, whose manifest is stored here.

    Only selected folders are entered, depth first, so memory follows the tree's depth.
    """
    load = index_loader(index)

    def below(prefix: tuple[str, ...], tree_id: bytes) -> tuple[int, int]:
        size = files = 0
        for entry in tree_entries(load, tree_id):
            parts = prefix + (entry.name,)
            if entry.type == EntryType.DIR and matcher(parts, True):
                more = below(parts, entry.id)
                size, files = size + more[0], files + more[1]
            elif entry.type == EntryType.FILE and matcher(parts, False):
                size, files = size + entry.size, files + 1
        return size, files

    return below((), root)
