"""SPEC.md's subset vectors, checked against shoal's code and against the spec's text alone."""

import re
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import blake3
import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.protocol.errors import ObjectFormatError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import check_version_signature, sign_version
from shoal.protocol.format.objects import DRAW_EXACT, Subset, VersionRecord, decode, encode, encode_with_id
from shoal.protocol.format.subsets import (
    draw_count,
    draw_key,
    format_share,
    in_draw,
    in_sample,
    parse_fraction,
    sample_key,
)

SPEC = (Path(__file__).resolve().parents[2] / "SPEC.md").read_text(encoding="utf-8")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SUBSETS = (Subset("small", ("data/*",), 1_000_000, 0), Subset("tenth", (), 100_000, 7))
EXACT = (Subset("half", (), 500_000, 7, DRAW_EXACT), SUBSETS[0], Subset("tenth", (), 100_000, 7, DRAW_EXACT))
#: The files and links of the vector tree's version 2, and of version 1 (with many/).
VERSION_2_PATHS = ("README.txt", "data/big.bin", "data/random.bin", "data/up", "données.csv", "empty", "link", "run.sh")
VERSION_1_PATHS = VERSION_2_PATHS + tuple(f"many/{i:04d}" for i in range(1025))


def labelled(info: str) -> dict[str, str]:
    text = "".join(re.findall(rf"```{info}\n(.*?)```", SPEC, re.S))
    out: dict[str, str] = {}
    label = None
    for line in text.splitlines():
        if line.startswith("    ") and label:
            out[label] += line.strip()
        else:
            label, _, value = line.partition(" = ")
            out[label] = value.strip()
    return out


VECTORS = labelled("shoal-subset-vectors")
BASE = labelled("shoal-vectors")


def version_2() -> tuple[bytes, VersionRecord]:
    version_id = bytes.fromhex(BASE["version 2 id"])
    record = decode(Kind.VERSION, bytes.fromhex(BASE["version 2 object"]), version_id)
    assert isinstance(record, VersionRecord)
    return version_id, record


#: The subset versions of the vectors: message, subsets, and the subsets as SPEC writes them.
RECORDS = {
    3: ("third version: subsets", SUBSETS, [["small", ["data/*"], 1000000, 0], ["tenth", [], 100000, 7]]),
    4: ("fourth version: exact draws", EXACT,
        [["half", [], 500000, 7, 1], ["small", ["data/*"], 1000000, 0], ["tenth", [], 100000, 7, 1]]),
}


def parent_of(seq: int) -> bytes:
    return bytes.fromhex(BASE["version 2 id"] if seq == 3 else VECTORS["version 3 id"])


@pytest.mark.parametrize("seq", [3, 4])
def test_code_reproduces_the_subset_versions(seq: int) -> None:
    _, v2 = version_2()
    message, subsets, _ = RECORDS[seq]
    record = sign_version(
        replace(v2, seq=seq, parents=(parent_of(seq),), message=message, signature=b"", subsets=subsets), KEY
    )
    version_id, data = encode_with_id(record)
    assert record.signed_bytes().hex() == VECTORS[f"version {seq} signed bytes"]
    assert data.hex() == VECTORS[f"version {seq} object"]
    assert version_id.hex() == VECTORS[f"version {seq} id"]
    decoded = decode(Kind.VERSION, data, version_id)
    assert decoded == record
    check_version_signature(decoded)  # type: ignore[arg-type]


@pytest.mark.parametrize("seq", [3, 4])
def test_spec_alone_reproduces_the_subset_versions(seq: int) -> None:
    """msgpack and BLAKE3 used directly, following the spec's words."""
    _, v2 = version_2()
    message, _, written = RECORDS[seq]
    fields = [4, v2.name, seq, v2.root, [parent_of(seq)], v2.size, v2.files, v2.author, v2.time, message, written]
    signed = b"shoal 2026-11 version signature v1\x00" + msgpack.packb(fields, use_bin_type=True)
    assert signed.hex() == VECTORS[f"version {seq} signed bytes"]
    whole = msgpack.packb(fields + [KEY.sign(signed)], use_bin_type=True)
    assert whole.hex() == VECTORS[f"version {seq} object"]
    version_id = blake3.blake3(whole, derive_key_context="shoal 2026-11 version v1").digest()
    assert version_id.hex() == VECTORS[f"version {seq} id"]


def draw_by_hand(paths: tuple[str, ...], sample: int, seed: int) -> list[bytes]:
    """SPEC's exact draw from its words: the draw keys of the drawn files, in order."""
    keys = sorted(
        blake3.blake3(msgpack.packb([seed, p], use_bin_type=True), derive_key_context="shoal 2026-11 sample v1")
        .digest(length=8) + p.encode("utf-8")
        for p in paths
    )
    k = max(1, (sample * len(keys) + 500_000) // 1_000_000)
    return keys[:k]


@pytest.mark.parametrize(
    "label, paths, sample",
    [("tenth of version 2", VERSION_2_PATHS, 100_000), ("half of version 2", VERSION_2_PATHS, 500_000),
     ("tenth of version 1", VERSION_1_PATHS, 100_000)],
)
def test_exact_draws(label: str, paths: tuple[str, ...], sample: int) -> None:
    count, _, rest = VECTORS[f"exact {label}"].partition(": ")
    drawn, of = (int(n) for n in count.split(" of "))
    by_hand = draw_by_hand(paths, sample, 7)
    assert (len(by_hand), len(paths)) == (drawn, of) and draw_count(of, sample) == drawn
    if rest.startswith("last "):
        assert by_hand[-1].hex() == rest.removeprefix("last ")
    else:
        assert [key[8:].decode() for key in by_hand] == rest.split()
    last = by_hand[-1]
    assert draw_key(by_hand[0][8:].decode(), 7) == by_hand[0]
    assert {p for p in paths if in_draw(p, 7, last)} == {key[8:].decode() for key in by_hand}


@pytest.mark.parametrize("files", [0, 1, 2, 3, 7, 10, 15, 25, 99, 333, 1000, 10_007])
@pytest.mark.parametrize("sample", [1, 5_000, 100_000, 123_456, 250_000, 500_000, 999_999, 1_000_000])
def test_an_exact_draw_keeps_the_share_rounded_half_up_and_at_least_one(files: int, sample: int) -> None:
    count = draw_count(files, sample)
    exact = Fraction(sample * files, 1_000_000)
    assert count == (0 if files == 0 else max(1, int(exact + Fraction(1, 2))))
    assert abs(count - exact) <= Fraction(1, 2) or count == 1


@pytest.mark.parametrize("seed", [0, 7, 2**64 - 1])
def test_an_exact_draw_of_333_files_at_10_percent_is_33_files_and_depends_only_on_the_seed(seed: int) -> None:
    paths = [f"run/{kind}/{i:03}" for i, kind in zip(range(333), ["ckpt", "events", "metrics"] * 111)]
    last = draw_by_hand(tuple(paths), 100_000, seed)[-1]
    picked = [p for p in paths if in_draw(p, seed, last)]
    assert len(picked) == 33
    assert draw_by_hand(tuple(reversed(paths)), 100_000, seed)[-1] == last, "the listing order does not matter"
    assert {p.split("/")[1] for p in picked} == {"ckpt", "events", "metrics"}
    assert draw_by_hand(tuple(paths), 100_000, seed + 1 if seed < 2**64 - 1 else 0)[-1] != last


def test_nothing_is_drawn_without_a_last_key() -> None:
    assert not in_draw("a", 0, None)


@pytest.mark.parametrize("path", ["README.txt", "data/big.bin", "données.csv", "many/0000"])
def test_sample_keys(path: str) -> None:
    key_hex, verdict = VECTORS[f"sample key {path}"].split()
    by_hand = blake3.blake3(msgpack.packb([7, path], use_bin_type=True), derive_key_context="shoal 2026-11 sample v1")
    assert by_hand.digest(length=8).hex() == key_hex == f"{sample_key(path, 7):016x}"
    assert in_sample(path, 100_000, 7) == (verdict == "in") == (int(key_hex, 16) * 10**6 < 100_000 * 2**64)


def test_a_record_without_subsets_keeps_eleven_fields() -> None:
    _, v2 = version_2()
    assert encode(v2).hex() == BASE["version 2 object"]


@pytest.mark.parametrize(
    "subsets, words",
    [
        ([], "empty subset list"),
        ([["b", [], 1, 0], ["a", [], 1, 0]], "sorted"),
        ([["a", [], 1, 0], ["a", [], 2, 0]], "sorted"),
        ([["a/b", [], 1, 0]], "subset name"),
        ([["a", [""], 1, 0]], "patterns"),
        ([["a", [], 0, 0]], "sample"),
        ([["a", [], 1_000_001, 0]], "sample"),
        ([["a", [], 1]], "subset must be"),
        ([["a", [], 1, 0, 0]], "draw"),
        ([["a", [], 1, 0, 2]], "draw"),
        ([["a", [], 1_000_000, 0, 1]], "draws nothing"),
        ([["a", [], 1, 0, 1, 0]], "subset must be"),
    ],
)
def test_malformed_subsets_are_refused(subsets: list, words: str) -> None:
    _, v2 = version_2()
    fields = [4, v2.name, v2.seq, v2.root, list(v2.parents), v2.size, v2.files, v2.author, v2.time, v2.message,
              subsets, v2.signature]
    with pytest.raises(ObjectFormatError, match=words):
        decode(Kind.VERSION, msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("text, ppm", [("1%", 10_000), ("0.5%", 5_000), ("0.01", 10_000), ("100%", 1_000_000)])
def test_sample_fractions(text: str, ppm: int) -> None:
    assert parse_fraction(text) == ppm


@pytest.mark.parametrize(
    "text, words",
    [("0%", "above 0"), ("-1%", "above 0"), ("101%", "at most 100%"), ("abc", "such as 10%"),
     ("10%%", "such as 10%"), ("0.00000001", "0.0001%")],
)
def test_bad_sample_fractions_say_what_to_write(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_fraction(text)


@pytest.mark.parametrize("ppm, text", [(100_000, "10%"), (5, "0.0005%"), (1_000_000, "100%"), (123_456, "12.3456%")])
def test_shares_are_shown_without_trailing_zeros(ppm: int, text: str) -> None:
    assert format_share(ppm) == text and parse_fraction(text) == ppm


@pytest.mark.parametrize("seed", [2**63 - 1, 2**63, 2**64 - 1])
def test_a_seed_up_to_2_64_minus_1_is_a_uint64_and_round_trips(seed: int) -> None:
    """SPEC "Canonical encoding": `0xcf` + 8 bytes covers 2^32 ... 2^64 - 1, which only a seed reaches."""
    _, v2 = version_2()
    record = sign_version(replace(v2, subsets=(Subset("s", (), 500_000, seed),), signature=b""), KEY)
    version_id, data = encode_with_id(record)
    assert b"\xcf" + seed.to_bytes(8, "big") in data
    assert decode(Kind.VERSION, data, version_id) == record


def test_a_seed_of_2_64_does_not_encode_as_a_uint64() -> None:
    _, v2 = version_2()
    with pytest.raises(OverflowError):  # msgpack has no wider integer
        encode(replace(v2, subsets=(Subset("s", (), 500_000, 2**64),)))
