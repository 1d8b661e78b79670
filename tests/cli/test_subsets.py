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


def drawn(paths: set[str], ppm: int, seed: int) -> set[str]:
    """SPEC.md's exact draw, written out again from its text: the round(share × N) smallest draw keys."""
    def key(path: str) -> bytes:
        data = msgpack.packb([seed, path], use_bin_type=True)
        return blake3.blake3(data, derive_key_context="shoal 2026-11 sample v1").digest(length=8) + path.encode()

    k = max(1, (ppm * len(paths) + 500_000) // 1_000_000)
    return set(sorted(paths, key=key)[:k])


def test_subset_by_include_then_full_set_then_back(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, TRAIN | OTHER)
        first = a.json("share", str(data))["version"]
        made = a.json("subset", "ds", "small", "--include", "train/n01*")
        assert made["version"]["seq"] == 2 and made["version"]["root"] == first["root"]
        assert made["version"]["parents"] == [first["id"]]
        assert made["subsets"] == {"small": {"include": ["train/n01*"], "sample": 1.0, "seed": 0, "draw": "all"}}
        assert made["version"]["message"] == "subset small defined: 10 files matching train/n01*"
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


def test_a_sample_draws_exactly_its_share_and_log_shows_it_as_a_subset_change(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "run"
        # A training run's folder: checkpoints, event files, metrics and a log; 333 files.
        run = {f"ckpt/step{i:03}.pt": 3000 + i for i in range(11)}
        run |= {f"events/ev{i:03}.tfevents": 100 + i for i in range(200)}
        run |= {f"metrics/m{i:03}.csv": 50 + i for i in range(121)} | {"train.log": 400}
        write_files(data, run)
        ok(a("share", str(data)))
        made = a.json("subset", "run", "tenth", "--sample", "10%")
        assert made["subsets"]["tenth"] == {"include": [], "sample": 0.1, "seed": 0, "draw": "exact"}
        assert made["version"]["message"] == "subset tenth defined: 10% of 333 files, 33 drawn"
        ok(a("subset", "run", "quarter", "--sample", "25%", "--seed", "7", "--include", "ckpt/", "--include", "events/"))

        one = b.json("fetch", "run:tenth", str(tmp_path / "one"), "--timeout", "20")
        assert one["files_written"] == 33
        assert set(files_of(tmp_path / "one")) == drawn(set(run), 100_000, 0)
        two = b.json("fetch", "run@3:tenth", str(tmp_path / "two"), "--timeout", "20")
        assert one["version"]["id"] == two["version"]["id"]
        assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
        assert files_of(tmp_path / "one") == {p: (data / p).read_bytes() for p in drawn(set(run), 100_000, 0)}
        ok(b("fetch", "run:quarter", str(tmp_path / "quarter"), "--timeout", "20"))
        included = {p for p in run if p.startswith(("ckpt/", "events/"))}
        assert set(files_of(tmp_path / "quarter")) == drawn(included, 250_000, 7)
        assert len(drawn(included, 250_000, 7)) == 53  # 25% of 211, rounded

        # Log: two subset changes on top of one data version, in text and JSON.
        log = a.json("log", "run")["versions"]
        assert [v["kind"] for v in log] == ["subsets", "subsets", "data"]
        assert log[0]["subsets_changed"] == {"quarter": "defined"} and log[1]["subsets_changed"] == {"tenth": "defined"}
        assert "subsets_changed" not in log[2]
        text = ok(a("log", "run")).splitlines()
        tenth_row = next(line for line in text if line.startswith("@2 "))
        assert "subsets" in tenth_row and "subset tenth defined: 10% of 333 files, 33 drawn" in tenth_row
        # Whole columns, not substrings: the version id's hex may hold "333" by chance.
        columns = tenth_row.split("subset tenth")[0].split()
        assert "333" not in columns and "subsets" in columns, "a subset change shows no data columns"
        assert text[-1] == "1 data version, 2 subset changes"

        # A later version with more files: the carried-forward subset draws 10% of them, and the
        # folder that held the old draw is brought to exactly the new one.
        more = {f"events/late{i:02}.tfevents": 70 + i for i in range(17)}
        write_files(data, more)
        ok(a("share", str(data)))
        updated = b.json("fetch", "run@4:tenth", str(tmp_path / "one"), "--timeout", "20")
        assert updated["version"]["seq"] == 4
        assert set(files_of(tmp_path / "one")) == drawn(set(run) | set(more), 100_000, 0)
        assert len(files_of(tmp_path / "one")) == 35
        assert [v["kind"] for v in a.json("log", "run")["versions"]][:2] == ["data", "subsets"]

        # Checkpoints by suffix, wherever they sit (gitignore: no slash, any depth).
        made = a.json("subset", "run", "ckpts", "--include", "*.pt")
        assert made["version"]["message"] == "subset ckpts defined: 11 files matching *.pt"
        ok(b("fetch", "run@5:ckpts", str(tmp_path / "ckpts"), "--timeout", "20"))
        assert set(files_of(tmp_path / "ckpts")) == {p for p in run if p.endswith(".pt")}


def test_bad_subsets_get_one_line_errors(tmp_path: Path) -> None:
    with linked_daemons(2) as (a, b):
        data = tmp_path / "ds"
        write_files(data, OTHER)
        ok(a("share", str(data)))
        cases = [
            (a("subset", "ds", "x"), 2, "--include"),
            (a("subset", "ds", "x", "--sample", "0%"), 2, "0% draws no file; give a share above 0"),
            (a("subset", "ds", "x", "--sample", "150%"), 2, "150% is more than every file; give at most 100%"),
            (a("subset", "ds", "x", "--sample", "ten"), 2, "write a percentage such as 10%"),
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
