"""Named subsets: defining them, fetching NAME:SUBSET, switching to the full set and back."""

import os
from pathlib import Path

import blake3
import msgpack
import pytest
from linked import files_of, inodes_of, linked_daemons, ok, write_files

pytestmark = pytest.mark.slow


TRAIN = {f"train/n0{k}_{i:02}.jpg": 3000 + i for k in (1, 2) for i in range(10)}
OTHER = {"val/v0.jpg": 5000, "val/v1.jpg": 5001, "README": 100}


def drawn(path: str, ppm: int, seed: int) -> bool:
    """SPEC.md's sampling rule, written out again from its text."""
    key = blake3.blake3(msgpack.packb([seed, path]), derive_key_context="shoal 2026-11 sample v1").digest(length=8)
    return int.from_bytes(key, "big") * 1_000_000 < ppm * 2**64


def test_subset_by_include_then_full_set_then_back(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, TRAIN | OTHER)
        first = a.json("share", str(data))["version"]
        made = a.json("subset", "ds", "small", "--include", "train/n01*")
        assert made["version"]["seq"] == 2 and made["version"]["root"] == first["root"]
        assert made["version"]["parents"] == [first["id"]]
        assert made["subsets"] == {"small": {"include": ["train/n01*"], "sample": 1.0, "seed": 0}}
        assert a.json("subset", "ds")["subsets"] == made["subsets"]
        assert "small" in ok(a("subset", "ds"))

        dest = tmp_path / "copy"
        small = b.json("fetch", "ds:small", str(dest), "--timeout", "20")
        assert small["files_written"] == 10
        expected_small = {p for p in TRAIN if p.startswith("train/n01")}
        assert set(files_of(dest)) == expected_small
        (dest / "notes.txt").write_text("mine")
        before = inodes_of(dest)

        full = b.json("fetch", "ds", str(dest), "--timeout", "20")
        assert full["files_written"] == len(TRAIN) + len(OTHER) - 10
        assert files_of(dest) == files_of(data) | {"notes.txt": b"mine"}
        after = inodes_of(dest)
        assert all(after[p] == before[p] for p in before), "files already in place were rewritten"

        back = b.json("fetch", "ds:small", str(dest), "--timeout", "20")
        assert back["files_written"] == 0
        assert set(files_of(dest)) == expected_small | {"notes.txt"}
        assert not (dest / "val").exists(), "a folder the subset leaves out goes once empty"
        assert all(inodes_of(dest)[p] == before[p] for p in expected_small)

        # Later shares carry the subset forward.
        write_files(data, {"train/n01_99.jpg": 777})
        third = a.json("share", str(data))["version"]
        assert third["seq"] == 3 and third["subsets"] == made["subsets"]
        ok(b("fetch", "ds:small", str(dest), "--timeout", "20"))
        assert set(files_of(dest)) == expected_small | {"notes.txt", "train/n01_99.jpg"}

        deleted = a.json("subset", "ds", "small", "--delete")
        assert deleted["subsets"] == {} and deleted["version"]["seq"] == 4


def test_subset_by_sample_is_deterministic(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        many = {f"d{i % 3}/f{i:03}.bin": 200 + i for i in range(120)}
        write_files(data, many)
        ok(a("share", str(data)))
        ok(a("subset", "ds", "quarter", "--sample", "25%", "--seed", "7", "--include", "d0/", "--include", "d1/"))
        expected = {p for p in many if p[:2] in ("d0", "d1") and drawn(p, 250_000, 7)}
        assert 10 < len(expected) < 70
        one = b.json("fetch", "ds:quarter", str(tmp_path / "one"), "--timeout", "20")
        two = b.json("fetch", "ds@2:quarter", str(tmp_path / "two"), "--timeout", "20")
        assert one["version"]["id"] == two["version"]["id"]
        assert set(files_of(tmp_path / "one")) == expected == set(files_of(tmp_path / "two"))
        assert files_of(tmp_path / "one") == {p: (data / p).read_bytes() for p in expected}


def test_bad_subsets_get_one_line_errors(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, OTHER)
        ok(a("share", str(data)))
        cases = [
            (a("subset", "ds", "x"), 2, "--include"),
            (a("subset", "ds", "x", "--sample", "0%"), 2, "--sample"),
            (a("subset", "ds", "x", "--sample", "150%"), 2, "--sample"),
            (a("subset", "ds", "bad/name", "--include", "*"), 2, "subset name"),
            (a("subset", "ds", "nope", "--delete"), 4, "no subset 'nope'"),
            (a("subset", "ghost", "x", "--include", "*"), 4, "ghost"),
            (b("fetch", "ds:nope", str(tmp_path / "d"), "--timeout", "20"), 4, "no subset 'nope'"),
            (b("fetch", "ds:", str(tmp_path / "d")), 2, "NAME[@VERSION][:SUBSET]"),
        ]
        for process, code, words in cases:
            assert process.returncode == code, (process.args, process.stderr)
            assert process.stderr.count("\n") == 1 and words in process.stderr, process.stderr
        assert not (tmp_path / "d").exists() or not [p for p in os.listdir(tmp_path / "d") if p != ".shoal-partial"]
        assert a.json("log", "ds")["versions"][0]["seq"] == 1, "a refused subset publishes nothing"
