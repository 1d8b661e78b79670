"""Reading manifest objects back out of the index, as the protocol's walkers load them."""

from shoal.daemon.store.index import Index
from shoal.protocol.errors import ProtocolError
from shoal.protocol.format.hashing import Kind


def index_loader(index: Index):
    """An ObjectLoader over the index's stored objects."""

    def load(kind: Kind, object_id: bytes) -> bytes:
        found = index.get_object(object_id)
        if found is None or found[0] != kind:
            raise ProtocolError(f"{kind.name.lower()} object {object_id.hex()[:16]} is not in the index")
        return found[1]

    return load
