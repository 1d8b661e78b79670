"""Large buffers kept for reuse: one is handed out again only when nothing refers to it."""

from shoal.protocol.wire.spares import SpareBuffers


def test_a_buffer_comes_back_only_once_no_view_or_name_refers_to_it() -> None:
    spares = SpareBuffers(2, 100)
    first = spares.take(10)
    first_id = id(first)  # the list keeps it alive: an id cannot be another object's
    view = memoryview(first)[5:]
    del first
    second = spares.take(100)
    assert id(second) != first_id  # the view still holds the first
    third = spares.take(1)
    assert len({first_id, id(second), id(third)}) == 3 and len(spares) == 2  # the third is not kept
    view.release()
    assert id(spares.take(50)) == first_id
    del second
    assert id(spares.take(50)) == first_id  # the first free one, in the order they were kept


def test_larger_than_size_is_a_buffer_of_its_own_and_clear_keeps_none() -> None:
    spares = SpareBuffers(2, 100)
    assert len(spares.take(101)) == 101 and len(spares) == 0
    spares.take(1)
    assert len(spares) == 1
    spares.clear()
    assert len(spares) == 0
