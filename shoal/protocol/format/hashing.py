"""Object ids: BLAKE3 in derive-key mode, one context string per kind of object.

Domain separation means a chunk's bytes can never be mistaken for a manifest
object with the same bytes, nor one kind of manifest object for another.
"""

from enum import IntEnum

import blake3

ID_SIZE = 32


class Kind(IntEnum):
    """The kinds of object in a dataset's Merkle DAG; the value is the encoded tag."""

    CHUNK = 0
    CHUNKS = 1
    FILE = 2
    TREE = 3
    VERSION = 4


CONTEXTS: dict[Kind, str] = {
    Kind.CHUNK: "shoal 2026-11 chunk v1",
    Kind.CHUNKS: "shoal 2026-11 chunk-list v1",
    Kind.FILE: "shoal 2026-11 file v1",
    Kind.TREE: "shoal 2026-11 tree v1",
    Kind.VERSION: "shoal 2026-11 version v1",
}


def object_id(kind: Kind, data: bytes | bytearray | memoryview) -> bytes:
    """Return the 32-byte id of `data` as an object of `kind`."""
    # max_threads=1: blake3's thread pool only pays off for inputs of a MiB or
    # more and is several times slower on chunk-sized ones.
    return blake3.blake3(data, derive_key_context=CONTEXTS[kind], max_threads=1).digest()


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """Return the id of a chunk's raw bytes."""
    return object_id(Kind.CHUNK, data)
