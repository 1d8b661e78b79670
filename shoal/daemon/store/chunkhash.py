"""Chunk ids of many buffers in one call, with one GIL hand-off a batch where _chunkhash is built.

The `blake3` module gives the GIL up and takes it back for every chunk; beside a
thread running Python each hand-off can cost a switch interval, many times the
hash itself (bench/JOURNAL.md, "What a small file waits for"). _chunkhash (built by `pip
install` where cargo is found, see setup.py) hashes a whole batch in one call.
"""

from collections.abc import Callable, Sequence

from shoal.protocol.format.hashing import CONTEXTS, ID_SIZE, Kind, chunk_id

Buffer = bytes | bytearray | memoryview

derive_many: Callable[[str, Sequence[Buffer]], bytes] | None
try:
    from shoal.daemon.store._chunkhash import derive_many
except ImportError:
    derive_many = None

#: Whether batches are hashed in one call (else one `blake3` call a chunk, same ids).
BATCHED = derive_many is not None

_CONTEXT = CONTEXTS[Kind.CHUNK]


def chunk_ids(buffers: Sequence[Buffer]) -> list[bytes]:
    """The chunk id of each of `buffers`, as `chunk_id` gives it."""
    if derive_many is None:
        return [chunk_id(data) for data in buffers]
    ids = derive_many(_CONTEXT, buffers)
    return [ids[at : at + ID_SIZE] for at in range(0, len(ids), ID_SIZE)]
