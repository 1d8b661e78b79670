"""`shoal pin` and `shoal sync`: data pinned next to code, switched by rewriting only what differs."""

import os
import tomllib
from pathlib import Path

import pytest
from linked import files_of, inodes_of, linked_daemons, ok, write_files

pytestmark = pytest.mark.slow


FILES = {f"img/{i:02}.jpg": 4000 + i for i in range(30)} | {"weights.bin": 600_000}


def test_pin_and_sync_switch_versions_rewriting_only_changed_files(tmp_path: Path) -> None:
    with linked_daemons(3) as (a, keeper, b):
        data = tmp_path / "ds"
        write_files(data, FILES)
        v1 = a.json("share", str(data))["version"]
        ok(keeper("fetch", "ds", str(tmp_path / "kept"), "--timeout", "20"))  # keeps serving v1
        write_files(data, {"img/03.jpg": 4100, "weights.bin": 600_000})
        v2 = a.json("share", str(data))["version"]
        snapshot_v2 = files_of(data)

        repo = tmp_path / "repo"
        (repo / ".git").mkdir(parents=True)
        (repo / "src").mkdir()
        pinned = b.json("pin", f"ds@{v1['id'][:8]}", "--path", "../data", cwd=repo / "src")
        lock = repo / "shoal.lock"
        assert pinned["lock"] == str(lock)
        assert tomllib.loads(lock.read_text()) == {
            "dataset": [{"name": "ds", "version": v1["id"], "root": v1["root"], "path": "data"}]
        }
        # The pinned folder is left out of git, once, beside the lock.
        assert pinned["gitignore"] == str(repo / ".gitignore")
        assert (repo / ".gitignore").read_text() == "/data/\n"
        synced = b.json("sync", "--timeout", "20", cwd=repo / "src")
        assert [s["path"] for s in synced["synced"]] == ["data"]
        assert files_of(repo / "data") == files_of(tmp_path / "kept")
        (repo / "data" / "mine.txt").write_text("not the dataset's")
        at_v1 = inodes_of(repo / "data")

        (repo / ".gitignore").write_text("/data/\n*.pyc")  # the user's own lines, the last one unterminated
        ok(b("pin", "ds", cwd=repo))  # the newest, at the path already pinned
        assert tomllib.loads(lock.read_text())["dataset"][0]["version"] == v2["id"]
        assert (repo / ".gitignore").read_text() == "/data/\n*.pyc", "a folder already ignored is not added twice"
        forward = b.json("sync", "--timeout", "20", cwd=repo)["synced"][0]["fetch"]
        assert forward["files_written"] == 2
        assert files_of(repo / "data") == snapshot_v2 | {"mine.txt": b"not the dataset's"}
        at_v2 = inodes_of(repo / "data")
        changed = {p for p in at_v1 if at_v1[p] != at_v2[p]}
        assert changed == {"img/03.jpg", "weights.bin"}

        ok(b("pin", f"ds@{v1['seq']}", cwd=repo))
        back = b.json("sync", "--timeout", "20", cwd=repo)["synced"][0]["fetch"]
        assert back["files_written"] == 2
        assert files_of(repo / "data") == files_of(tmp_path / "kept") | {"mine.txt": b"not the dataset's"}
        assert {p for p in at_v2 if inodes_of(repo / "data")[p] != at_v2[p]} == {"img/03.jpg", "weights.bin"}

        # Pin a subset of the newest: sync removes the dataset's other files, keeps the user's.
        ok(a("subset", "ds", "imgs", "--include", "img/0*"))
        ok(b("pin", "ds:imgs", cwd=repo))
        assert tomllib.loads(lock.read_text())["dataset"][0]["subset"] == "imgs"
        ok(b("sync", "--timeout", "20", cwd=repo))
        expected = {p for p in snapshot_v2 if p.startswith("img/0")} | {"mine.txt"}
        assert set(files_of(repo / "data")) == expected
        # Again: nothing to do, nothing touched.
        before = inodes_of(repo / "data")
        again = b.json("sync", "--timeout", "20", cwd=repo)["synced"][0]["fetch"]
        assert again["files_written"] == 0 and inodes_of(repo / "data") == before


def test_bad_pins_and_locks_get_one_line_errors(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, {"x.bin": 1000})
        ok(a("share", str(data)))
        repo = tmp_path / "repo"
        repo.mkdir()
        lock = repo / "shoal.lock"
        no_lock = b("sync", cwd=repo)
        assert no_lock.returncode == 2 and "shoal pin" in no_lock.stderr
        unknown = b("pin", "ds:nope", "--timeout", "20", cwd=repo)
        assert unknown.returncode == 4 and unknown.stderr.count("\n") == 1 and "no subset 'nope'" in unknown.stderr
        outside = b("pin", "ds", "--path", str(tmp_path / "elsewhere"), "--timeout", "20", cwd=repo)
        assert outside.returncode == 2 and "outside" in outside.stderr
        assert not lock.exists(), "a refused pin writes nothing"
        for text, words in [
            ("[[dataset]\nname =", "not valid TOML"),
            ('[[dataset]]\nname = "ds"\n', "missing"),
            ('[[dataset]]\nname = "ds"\nversion = "abc"\nroot = "abc"\npath = "d"\n', "64-digit"),
            ('[[dataset]]\nname = "ds"\nversion = "' + "a" * 64 + '"\nroot = "' + "a" * 64 + '"\npath = "../d"\n', ".."),
        ]:
            lock.write_text(text)
            for command in (("sync",), ("pin", "ds")):
                bad = b(*command, "--timeout", "20", cwd=repo)
                assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and words in bad.stderr, bad.stderr
            assert lock.read_text() == text, "a malformed lock is left for the user to fix"
        assert not os.path.exists(repo / "d")


def test_sync_to_a_version_no_peer_serves_uses_local_data_or_says_what_is_missing(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, FILES)
        # Without retention on A, once A moves on nobody serves version 2 in full.
        ok(a("share", "--no-keep", str(data)))
        ok(a("subset", "ds", "first", "--include", "img/0*"))
        v1s = a.json("log", "ds")["versions"][0]
        repo = tmp_path / "repo"
        (repo / ".git").mkdir(parents=True)
        ok(b("pin", f"ds@{v1s['id']}", "--path", "data", cwd=repo))
        ok(b("sync", "--timeout", "20", cwd=repo))
        write_files(data, {"weights.bin": 600_000})
        ok(a("share", str(data)))  # A now serves only version 3

        # Version 2's subset: every chunk is already in the folder.
        ok(b("pin", f"ds@{v1s['seq']}:first", cwd=repo))
        switched = b.json("sync", "--timeout", "20", cwd=repo)["synced"][0]["fetch"]
        assert switched["bytes_received"] == 0 and switched["files_written"] == 0
        assert set(files_of(repo / "data")) == {p for p in FILES if p.startswith("img/0")}

        # Back to the whole of version 2: its other files are gone and nobody serves them.
        ok(b("pin", f"ds@{v1s['seq']}", cwd=repo))
        stuck = b("sync", "--timeout", "2", cwd=repo)
        last = stuck.stderr.splitlines()[-1]
        assert stuck.returncode == 6 and last.startswith("shoal: ") and "ds" in last, stuck.stderr
        assert set(files_of(repo / "data")) >= {p for p in FILES if p.startswith("img/0")}, "a failed sync loses nothing"


def test_sync_repairs_a_file_both_versions_share_edited_here(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, FILES)
        ok(a("share", str(data)))
        repo = tmp_path / "repo"
        (repo / ".git").mkdir(parents=True)
        ok(b("pin", "ds", "--path", "data", cwd=repo))
        ok(b("sync", "--timeout", "20", cwd=repo))
        # A file both versions share, edited here; img/ changes elsewhere in the next version.
        edited = repo / "data" / "img" / "07.jpg"
        edited.write_bytes(b"x" * edited.stat().st_size)
        write_files(data, {"img/03.jpg": 4100})
        ok(a("share", str(data)))

        checked = b("verify", "ds", "--json")
        assert checked.returncode == 5, checked.stderr
        assert "img/07.jpg" in checked.stdout

        ok(b("pin", "ds", cwd=repo))
        forward = b.json("sync", "--timeout", "20", cwd=repo)["synced"][0]["fetch"]
        # The changed file, and the shared one edited here (its stat no longer matches).
        assert forward["files_written"] == 2
        assert files_of(repo / "data") == files_of(data)


def test_two_repositories_pin_one_dataset_at_different_versions(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, FILES)
        v1 = a.json("share", str(data))["version"]
        at_v1 = files_of(data)
        write_files(data, {"img/03.jpg": 4100})
        a.json("share", str(data))
        at_v2 = files_of(data)

        old, new = tmp_path / "old-checkout", tmp_path / "new-checkout"
        for repo in (old, new):
            (repo / ".git").mkdir(parents=True)
        ok(b("pin", f"ds@{v1['id'][:8]}", "--path", "data", cwd=old))
        ok(b("pin", "ds", "--path", "vendor/ds", cwd=new))
        ok(b("sync", "--timeout", "20", cwd=old))
        ok(b("sync", "--timeout", "20", cwd=new))
        assert files_of(old / "data") == at_v1 and files_of(new / "vendor" / "ds") == at_v2
        # Each sync again leaves both as pinned: neither folder takes the other's version.
        assert b.json("sync", "--timeout", "20", cwd=old)["synced"][0]["fetch"]["files_written"] == 0
        assert files_of(old / "data") == at_v1 and files_of(new / "vendor" / "ds") == at_v2
