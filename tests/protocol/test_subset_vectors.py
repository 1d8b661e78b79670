"""SPEC.md's subset vectors, checked against shoal's code and against the spec's text alone."""

import re
from dataclasses import replace
from pathlib import Path

import blake3
import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.protocol.errors import ObjectFormatError
from shoal.protocol.format.hashing import Kind
from shoal.protocol.format.manifest import check_version_signature, sign_version
from shoal.protocol.format.objects import Subset, VersionRecord, decode, encode, encode_with_id
from shoal.protocol.format.subsets import in_sample, parse_fraction, sample_key

SPEC = (Path(__file__).resolve().parents[2] / "SPEC.md").read_text(encoding="utf-8")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SUBSETS = (Subset("small", ("data/*",), 1_000_000, 0), Subset("tenth", (), 100_000, 7))


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


def test_code_reproduces_version_3() -> None:
    v2_id, v2 = version_2()
    v3 = sign_version(
        replace(v2, seq=3, parents=(v2_id,), message="third version: subsets", signature=b"", subsets=SUBSETS), KEY
    )
    version_id, data = encode_with_id(v3)
    assert v3.signed_bytes().hex() == VECTORS["version 3 signed bytes"]
    assert data.hex() == VECTORS["version 3 object"]
    assert version_id.hex() == VECTORS["version 3 id"]
    decoded = decode(Kind.VERSION, data, version_id)
    assert decoded == v3
    check_version_signature(decoded)  # type: ignore[arg-type]


def test_spec_alone_reproduces_version_3() -> None:
    """msgpack and BLAKE3 used directly, following the spec's words."""
    v2_id, v2 = version_2()
    fields = [4, v2.name, 3, v2.root, [v2_id], v2.size, v2.files, v2.author, v2.time, "third version: subsets",
              [["small", ["data/*"], 1000000, 0], ["tenth", [], 100000, 7]]]
    signed = b"shoal 2026-11 version signature v1\x00" + msgpack.packb(fields, use_bin_type=True)
    assert signed.hex() == VECTORS["version 3 signed bytes"]
    whole = msgpack.packb(fields + [KEY.sign(signed)], use_bin_type=True)
    assert whole.hex() == VECTORS["version 3 object"]
    version_id = blake3.blake3(whole, derive_key_context="shoal 2026-11 version v1").digest()
    assert version_id.hex() == VECTORS["version 3 id"]


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


@pytest.mark.parametrize("text", ["0%", "101%", "abc", "0.00000001", "-1%"])
def test_bad_sample_fractions(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fraction(text)


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
