"""The table rows the TUI builds from the control API's answers."""

from shoal.tui.rows import version_row


def test_a_version_that_only_changes_subsets_shows_no_data_of_its_own() -> None:
    data = {"seq": 3, "id": "ab" * 32, "time": 1_700_000_000, "size": 2_000_000, "files": 333, "message": "more data"}
    subsets = {**data, "seq": 4, "kind": "subsets", "message": "subset tenth defined: 10% of 333 files, 33 drawn"}
    assert version_row(data)[3:5] == ("2.0 MB", "333")
    row = version_row(subsets)
    assert row[3] == "" and str(row[4]) == "subsets"
    assert str(row[5]) == "subset tenth defined: 10% of 333 files, 33 drawn"
