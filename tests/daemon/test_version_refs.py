"""How a version reference is read: a sequence number, or an id prefix."""

import pytest

from shoal.daemon.fetch.resolve import is_seq


@pytest.mark.parametrize(("ref", "seq"), [
    ("3", True), ("123456", True),
    # An id prefix can be all decimal digits (one 8-digit prefix in 23 is); 7+ digits are never a seq.
    ("1234567", False), ("31415926", False),
    ("latest", False), ("ab12", False), ("", False),
])
def test_short_numbers_are_sequence_numbers_and_long_ones_id_prefixes(ref: str, seq: bool) -> None:
    assert is_seq(ref) is seq
