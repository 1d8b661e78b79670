"""`shoal log` fields and `shoal diff`, against real daemons."""

import os
import sqlite3
from pathlib import Path

import pytest
from linked import files_of, linked_daemons, ok, write_files

pytestmark = pytest.mark.slow


def test_log_fields_and_diff_local_and_from_a_peer(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, {"keep.bin": 300_000, "change.bin": 200_000, "gone.bin": 50_000, "sub/x.bin": 70_000})
        ok(a("share", str(data)))
        (data / "change.bin").write_bytes(os.urandom(210_000))
        (data / "gone.bin").unlink()
        write_files(data, {"sub/new.bin": 40_000})
        (data / "link").symlink_to("keep.bin")
        ok(a("share", str(data)))

        log = a.json("log", "ds")["versions"]
        me = a.json("id")["short"]
        assert [v["author_peer"] for v in log] == [me, me]
        assert [v["author_name"] for v in log] == ["this daemon", "this daemon"]
        # v2 against v1: change.bin modified, gone.bin removed, sub/new.bin and link added.
        assert log[0]["files_changed"] == 4
        assert log[0]["bytes_new"] == 210_000 + 40_000
        assert log[1]["files_changed"] == 4 and log[1]["bytes_new"] == 300_000 + 200_000 + 50_000 + 70_000

        local = a.json("diff", "ds@1", "ds@2")
        expected = [
            {"path": "change.bin", "change": "modified", "size": 210_000},
            {"path": "gone.bin", "change": "removed", "size": 0},
            {"path": "link", "change": "added", "size": len("keep.bin")},
            {"path": "sub/new.bin", "change": "added", "size": 40_000},
        ]
        assert local["changes"] == expected and local["total"] == 4
        assert local["counts"] == {"added": 2, "removed": 1, "modified": 1, "type": 0}
        assert local["bytes_to_fetch"] == 250_000 and local["bytes_changed"] == 250_000

        # B holds neither version: it reads both manifests from A, data stays put.
        remote = b.json("diff", "ds@1", "ds@latest", "--timeout", "20")
        assert remote["changes"] == expected and remote["bytes_to_fetch"] == 250_000
        assert remote["to"]["seq"] == 2
        backwards = b.json("diff", "ds@2", "ds@1", "--limit", "1", "--timeout", "20")
        assert backwards["total"] == 4 and len(backwards["changes"]) == 1
        assert backwards["bytes_to_fetch"] == 200_000 + 50_000
        text = ok(b("diff", "ds@1", "ds@2", "--timeout", "20"))
        assert "M change.bin" in text and "- gone.bin" in text and "250.0 kB to fetch" in text

        # The fetched copy on B: log shows A as author, by its trusted name.
        ok(b("fetch", "ds", str(tmp_path / "copy"), "--timeout", "20"))
        assert files_of(tmp_path / "copy") == files_of(data)
        fetched = b.json("log", "ds")["versions"]
        assert fetched[0]["author_peer"] == me and fetched[0]["author_name"] == "peer0"
        assert fetched[0]["files_changed"] == 4 and fetched[0]["bytes_new"] == 250_000


def test_bad_version_references_get_one_line_errors(tmp_path: Path) -> None:
    with linked_daemons(1) as (a,):
        data = tmp_path / "ds"
        write_files(data, {"one.bin": 1000})
        ok(a("share", str(data)))
        bad = a("diff", "ds@1", "ds@zz")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'zz'" in bad.stderr
        other = a("diff", "ds@1", "other@2")
        assert other.returncode == 2 and "one dataset" in other.stderr
        missing = a("diff", "ds@1", "ds@99", "--timeout", "1")
        assert missing.returncode == 6 and missing.stderr.count("\n") == 1 and "ds@99" in missing.stderr


def test_ambiguous_version_prefix_is_refused(home: Path, shoal, tmp_path: Path) -> None:
    """Two recorded versions whose ids share a prefix: the prefix names neither."""
    ok(shoal("daemon", "start"))
    ok(shoal("daemon", "stop"))
    db = sqlite3.connect(home / "index.sqlite")
    for seq in (1, 2):
        version_id = bytes.fromhex("abcd") + bytes([seq]) * 30
        db.execute("INSERT INTO versions VALUES (?, 'ds', ?, 0, 0, 0, ?)", (version_id, seq, bytes(32)))
    db.commit()
    db.close()
    ok(shoal("daemon", "start"))
    bad = shoal("diff", "ds@abcd", "ds@abcd01", "--timeout", "1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "ambiguous" in bad.stderr, bad.stderr
