"""Peer ids, their checked text form, signatures, and the identity key file."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given
from hypothesis import strategies as st

from shoal.daemon.keys import (
    KEY_FILE_NAME,
    InsecureKeyFile,
    InvalidKeyFile,
    KeyFileError,
    load_or_create_private_key,
)
from shoal.errors import ShoalError
from shoal.protocol.format.identity import (
    ALPHABET,
    BadPeerId,
    PeerId,
    luhn32,
    peer_id_of,
    public_key_bytes,
    sign,
    verify,
)
from tests.protocol.spec_vectors import spec_vectors

EXAMPLE = "JG7OBAN-ARFHWDN-XEDGFKD-EJ52CND-ZB7ZUKR-DU3MX2T-DRPNOXJ-LJCQ6Q2"


@pytest.mark.parametrize("vector", spec_vectors("peer-id"))
def test_spec_peer_id_vectors(vector: dict[str, str]) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["private-key"]))
    public = public_key_bytes(key)
    assert public.hex() == vector["public-key"]
    peer = PeerId.from_public_key(public)
    assert peer.raw.hex() == vector["peer-id-bytes"]
    assert str(peer) == vector["peer-id"]
    assert peer_id_of(key) == peer
    assert PeerId.parse(vector["peer-id"]) == peer


@pytest.mark.parametrize("vector", spec_vectors("peer-id-typo"))
def test_spec_typo_vectors_name_the_bad_groups(vector: dict[str, str]) -> None:
    with pytest.raises(BadPeerId, match=f"groups {vector['bad-groups']} "):
        PeerId.parse(vector["text"])


@pytest.mark.parametrize("vector", spec_vectors("peer-id-input"))
def test_spec_input_vectors(vector: dict[str, str]) -> None:
    assert str(PeerId.parse(vector["text"])) == vector["peer-id"]


def test_spec_has_every_identity_vector_kind() -> None:
    assert len(spec_vectors("peer-id")) >= 2
    assert spec_vectors("peer-id-typo") and spec_vectors("peer-id-input")


def test_text_form_layout_and_short_form() -> None:
    peer = PeerId.parse(EXAMPLE)
    text = str(peer)
    assert re.fullmatch(r"([A-Z2-7]{7}-){7}[A-Z2-7]{7}", text)
    assert peer.short() == "JG7OBAN"
    assert repr(peer) == f"PeerId('{EXAMPLE}')"


@given(st.binary(min_size=32, max_size=32))
def test_text_form_round_trips(raw: bytes) -> None:
    peer = PeerId(raw)
    assert PeerId.parse(str(peer)) == peer
    assert PeerId.parse(str(peer).lower().replace("-", " ")) == peer


def test_every_single_character_typo_is_caught() -> None:
    compact = EXAMPLE.replace("-", "")
    for position, original in enumerate(compact):
        for char in ALPHABET.replace(original, ""):
            typo = compact[:position] + char + compact[position + 1 :]
            with pytest.raises(BadPeerId):
                PeerId.parse(typo)


def test_luhn32_matches_the_standard_algorithm_on_a_worked_example() -> None:
    # Rightmost "B" (1) doubled = 2, then "A" (0) = 0: sum 2, check = (32 - 2) % 32 = 30 -> "6".
    assert luhn32("AB") == "6"
    assert luhn32("A" * 13) == "A"


def test_parse_refuses_wrong_length_and_foreign_characters() -> None:
    with pytest.raises(BadPeerId, match="56"):
        PeerId.parse(EXAMPLE[:-1])
    with pytest.raises(BadPeerId, match="'0' at position 2"):
        PeerId.parse("J0" + EXAMPLE.replace("-", "")[2:])
    assert issubclass(BadPeerId, ShoalError)


def test_parse_refuses_a_non_canonical_last_character() -> None:
    compact = EXAMPLE.replace("-", "")
    # "Q" carries the final data bit 1 and four zero bits; "R" sets an unused bit.
    assert compact[54] == "Q"
    group = compact[42:54] + "R"
    forged = compact[:42] + group + luhn32(group)
    with pytest.raises(BadPeerId, match="canonical"):
        PeerId.parse(forged)


def test_peer_id_needs_exactly_32_bytes() -> None:
    with pytest.raises(ValueError):
        PeerId(bytes(31))
    with pytest.raises(ValueError):
        PeerId.from_public_key(bytes(33))


def test_sign_and_verify() -> None:
    key = Ed25519PrivateKey.generate()
    public = public_key_bytes(key)
    signature = sign(key, b"message")
    assert len(signature) == 64
    assert verify(public, b"message", signature)
    assert not verify(public, b"messagf", signature)
    assert not verify(public_key_bytes(Ed25519PrivateKey.generate()), b"message", signature)
    assert not verify(public[:31], b"message", signature)
    assert not verify(public, b"message", signature[:63])
    assert not verify(public, b"message", bytes(64))


def test_key_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    home = tmp_path / "home" / "shoal"
    key = load_or_create_private_key(home)
    path = home / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert os.listdir(home) == [KEY_FILE_NAME]
    again = load_or_create_private_key(home)
    assert public_key_bytes(again) == public_key_bytes(key)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_private_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    path.chmod(0o640)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        load_or_create_private_key(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_unparsable_key_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(InvalidKeyFile):
        load_or_create_private_key(tmp_path)
    assert path.read_bytes() == b"not a key"


def test_key_file_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    other = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(InvalidKeyFile, match="not an Ed25519 key"):
        load_or_create_private_key(tmp_path)


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_or_create_private_key(tmp_path)


def test_racing_daemons_end_up_with_one_identity(tmp_path: Path) -> None:
    program = (
        "import sys, pathlib\n"
        "from shoal.daemon.keys import load_or_create_private_key\n"
        "from shoal.protocol.format.identity import peer_id_of\n"
        "print(peer_id_of(load_or_create_private_key(pathlib.Path(sys.argv[1]))))\n"
    )
    home = tmp_path / "shared"
    processes = [
        subprocess.Popen([sys.executable, "-c", program, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=30)[0].strip() for p in processes}
    assert all(p.returncode == 0 for p in processes)
    assert outputs == {str(peer_id_of(load_or_create_private_key(home)))}
    assert os.listdir(home) == [KEY_FILE_NAME]
