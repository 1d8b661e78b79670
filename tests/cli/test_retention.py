"""Retention on real daemons: old versions stay fetchable after the folder is rewritten in place."""

import json
import os
import time
from pathlib import Path

import pytest
from conftest import ShoalCli
from test_two_daemons import files_of, ok, pair  # noqa: F401 (pair is a fixture)

pytestmark = pytest.mark.slow


MODEL_SIZE = 3_000_000


def pack_bytes(cli: ShoalCli) -> int:
    return sum(p.stat().st_size for p in (cli.home / "packs").glob("pack-*.dat"))


def wait_settled(cli: ShoalCli, timeout: float = 60) -> dict:
    """The status once the keeper has no version waiting for capture."""
    deadline = time.monotonic() + timeout
    while True:
        retention = cli.json("status")["retention"]
        if not retention["keeping"]:
            return retention
        assert time.monotonic() < deadline, f"still keeping {retention['keeping']}"
        time.sleep(0.2)


def kept_seqs(cli: ShoalCli, name: str) -> list[int]:
    return [v["seq"] for v in cli.json("log", name)["versions"] if v["kept"]]


def rewrite_in_place(path: Path, data: bytes) -> None:
    """What torch.save does: truncate and rewrite the same inode."""
    inode = path.stat().st_ino
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
    assert path.stat().st_ino == inode


def connect(a: ShoalCli, b: ShoalCli) -> None:
    ok(a("trust", b.json("id")["peer_id"]))
    ok(b("trust", a.json("id")["peer_id"], "--addr", a.json("status")["listen"]))


def share_twice(a: ShoalCli, data: Path) -> tuple[bytes, bytes]:
    """Share model.pt, rewrite it in place, share again; return (old bytes, new bytes)."""
    old, new = os.urandom(MODEL_SIZE), os.urandom(MODEL_SIZE)
    data.mkdir()
    (data / "model.pt").write_bytes(old)
    ok(a("share", str(data), "-m", "epoch 1"))
    wait_settled(a)
    rewrite_in_place(data / "model.pt", new)
    ok(a("share", str(data), "-m", "epoch 2"))
    wait_settled(a)
    return old, new


def test_old_version_is_served_from_retention_then_gc_frees_it(pair, tmp_path: Path) -> None:
    a, b = pair
    connect(a, b)
    old, new = share_twice(a, tmp_path / "resnet")
    assert kept_seqs(a, "resnet") == [2, 1]
    # Both versions' chunks are in the store once: 2 × the model, nothing more.
    assert 2 * MODEL_SIZE <= pack_bytes(a) < 2 * MODEL_SIZE + 4096

    remote = b.json("ls", "--remote")["datasets"]
    assert [(d["name"], d["head"]["seq"], d["versions"]) for d in remote] == [("resnet", 2, 2)]
    fetched = b.json("fetch", "resnet@1", str(tmp_path / "old"), "--timeout", "20")
    assert fetched["version"]["seq"] == 1 and fetched["bytes_received"] == MODEL_SIZE
    assert (tmp_path / "old" / "model.pt").read_bytes() == old
    assert b.json("fetch", "resnet@2", str(tmp_path / "old"), "--timeout", "20")["version"]["seq"] == 2
    assert (tmp_path / "old" / "model.pt").read_bytes() == new

    ok(a("config", "set", "retention.max_versions", "1"))
    before = pack_bytes(a)
    report = a.json("gc")
    after = pack_bytes(a)
    assert report["evicted"] == ["resnet@1"] and report["kept"] == 1
    assert report["freed"] == before - after and report["freed"] >= MODEL_SIZE
    assert report["store_bytes"] == after
    assert kept_seqs(a, "resnet") == [2]
    assert "freed 0 B" in ok(a("gc")), "a second gc has nothing left to free"

    gone = b("fetch", "resnet@1", str(tmp_path / "old"), "--timeout", "5")
    last = gone.stderr.splitlines()[-1]
    assert gone.returncode == 6 and last.startswith("shoal: ") and "in full" in last, gone.stderr
    assert (tmp_path / "old" / "model.pt").read_bytes() == new, "a failed fetch loses nothing"


def test_no_keep_sticks_until_keep(shoal: ShoalCli, tmp_path: Path) -> None:
    data = tmp_path / "huge"
    data.mkdir()
    (data / "shard0").write_bytes(os.urandom(200_000))
    ok(shoal("share", str(data), "--no-keep"))
    (data / "shard1").write_bytes(os.urandom(200_000))
    ok(shoal("share", str(data)))
    retention = wait_settled(shoal)
    assert kept_seqs(shoal, "huge") == [] and pack_bytes(shoal) == 0
    assert [s["version"] for s in retention["not_kept"]] == ["huge@2", "huge@1"]
    assert all(s["reason"] == "shared with --no-keep" for s in retention["not_kept"])

    ok(shoal("share", str(data), "--keep"))
    wait_settled(shoal)
    assert kept_seqs(shoal, "huge") == [2]
    assert pack_bytes(shoal) == 400_000


def test_capture_skipped_when_over_budget(shoal: ShoalCli, tmp_path: Path) -> None:
    ok(shoal("config", "set", "retention.min_bytes", "0"))
    ok(shoal("config", "set", "retention.max_fraction", "0.01"))
    data = tmp_path / "ds"
    data.mkdir()
    (data / "a.bin").write_bytes(os.urandom(500_000))
    ok(shoal("share", str(data)))
    retention = wait_settled(shoal)
    assert retention["kept"] == 0 and pack_bytes(shoal) == 0
    [skipped] = retention["not_kept"]
    assert skipped["version"] == "ds@1" and "over the dataset's budget of 5,000" in skipped["reason"]
    assert "not kept: ds@1" in ok(shoal("status"))


def test_corrupt_pack_chunk_is_never_served(pair, tmp_path: Path) -> None:
    a, b = pair
    connect(a, b)
    share_twice(a, tmp_path / "ckpt")
    [pack] = (a.home / "packs").glob("pack-*.dat")
    with open(pack, "r+b") as f:  # the first bytes belong to a chunk only @1 needs
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))

    failed = b("fetch", "ckpt@1", str(tmp_path / "old"), "--timeout", "5")
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1
    assert not (tmp_path / "old" / "model.pt").exists()
    assert "does not match its id" in (a.home / "daemon.log").read_text()
    assert kept_seqs(a, "ckpt") == [2]
    log = {v["seq"]: v for v in a.json("log", "ckpt")["versions"]}
    assert log[1]["kept"] is False
    # A no longer offers @1 in full, and still serves its head.
    deadline = time.monotonic() + 10
    while [d["versions"] for d in b.json("ls", "--remote")["datasets"]] != [1]:
        assert time.monotonic() < deadline, json.dumps(b.json("ls", "--remote"))
        time.sleep(0.2)
    assert b.json("fetch", "ckpt", str(tmp_path / "head"), "--timeout", "20")["version"]["seq"] == 2


def test_a_new_version_evicts_the_oldest_beyond_max_versions(shoal: ShoalCli, tmp_path: Path) -> None:
    ok(shoal("config", "set", "retention.max_versions", "1"))
    _, new = share_twice(shoal, tmp_path / "run")
    assert kept_seqs(shoal, "run") == [2]
    # The evicted version's pack was wholly dead and is gone; only @2's bytes remain.
    assert pack_bytes(shoal) == len(new)


def test_a_dataset_too_big_to_keep_keeps_its_changes_while_the_folder_holds_the_rest(pair, tmp_path: Path) -> None:
    a, b = pair
    connect(a, b)
    # A 2 MB budget: the 4.6 MB project cannot be kept whole, a 600 kB checkpoint can.
    ok(a("config", "set", "retention.min_bytes", "2MB"))
    ok(a("config", "set", "retention.max_fraction", "0.01"))
    data = tmp_path / "project"
    data.mkdir()
    raw = os.urandom(4_000_000)
    (data / "raw.bin").write_bytes(raw)
    models = [os.urandom(600_000) for _ in range(3)]
    (data / "model.pt").write_bytes(models[0])
    ok(a("share", str(data)))
    for model in models[1:]:
        wait_settled(a)
        rewrite_in_place(data / "model.pt", model)
        ok(a("share", str(data)))
    wait_settled(a)
    assert kept_seqs(a, "project") == [3, 2], "@1 is too big; @2 and @3 keep what they changed"
    assert pack_bytes(a) < 2 * 600_000 + 4096

    b.json("fetch", "project@2", str(tmp_path / "old"), "--timeout", "20")
    assert files_of(tmp_path / "old") == {"raw.bin": raw, "model.pt": models[1]}

    # Once the rest of the folder changes as well, those versions cannot be served whole any more.
    rewrite_in_place(data / "raw.bin", os.urandom(4_000_000))
    ok(a("share", str(data)))
    wait_settled(a)
    assert kept_seqs(a, "project") == []
    status = a.json("status")["retention"]
    assert any(n["version"] == "project@2" and "changed" in n["reason"] for n in status["not_kept"]), status
