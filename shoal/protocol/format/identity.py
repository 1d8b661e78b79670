"""Daemon identities: Ed25519 keys, the peer ids derived from them, and their text form.

A peer id is BLAKE3 (derive_key mode) of the raw public key. Its text form is
base32 split into four 13-character groups, each followed by a Luhn mod 32
check character, so a mistyped id is caught instead of silently naming a
stranger.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal.errors import ShoalError

PEER_ID_CONTEXT = "shoal 2026-11 peer id v1"
PEER_ID_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CODEPOINT = {c: i for i, c in enumerate(ALPHABET)}
_DATA_GROUP = 13
_CHECKED_GROUP = _DATA_GROUP + 1
_PRINT_GROUP = 7
_TEXT_LENGTH = 4 * _CHECKED_GROUP


class BadPeerId(ShoalError):
    """Text that is not a valid peer id (wrong length, bad character, failed check)."""


def luhn32(group: str) -> str:
    """The Luhn mod 32 check character of `group` (characters from ALPHABET)."""
    total = 0
    factor = 2
    for char in reversed(group):
        addend = factor * _CODEPOINT[char]
        total += addend // 32 + addend % 32
        factor = 3 - factor
    return ALPHABET[-total % 32]


@dataclass(frozen=True, slots=True)
class PeerId:
    """The 32-byte identity of a daemon; `str()` gives its checked text form."""

    raw: bytes

    def __post_init__(self) -> None:
        if type(self.raw) is not bytes or len(self.raw) != PEER_ID_SIZE:
            raise ValueError(f"a peer id is exactly {PEER_ID_SIZE} bytes")

    @classmethod
    def from_public_key(cls, public_key: bytes) -> PeerId:
        """Derive the peer id of a raw 32-byte Ed25519 public key."""
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"an Ed25519 public key is exactly {PUBLIC_KEY_SIZE} bytes")
        return cls(blake3.blake3(public_key, derive_key_context=PEER_ID_CONTEXT).digest())

    @classmethod
    def parse(cls, text: str) -> PeerId:
        """Read a peer id typed by a person: any case, dashes and spaces optional."""
        compact = "".join(text.split()).replace("-", "").upper()
        if len(compact) != _TEXT_LENGTH:
            raise BadPeerId(f"a peer id has {_TEXT_LENGTH} letters and digits, not {len(compact)}: {text!r}")
        for position, char in enumerate(compact, start=1):
            if char not in _CODEPOINT:
                raise BadPeerId(f"{char!r} at position {position} cannot appear in a peer id (A-Z, 2-7 only)")
        data = "".join(_checked_groups(compact))
        raw = base64.b32decode(data + "====")
        if _encode_data(raw) != data:
            # The last character carries 4 unused bits; only zeros keep the text form unique.
            raise BadPeerId(f"{text!r} is not a canonical peer id (its last data character is impossible)")
        return cls(raw)

    def __str__(self) -> str:
        data = _encode_data(self.raw)
        checked = "".join(
            group + luhn32(group) for group in (data[i : i + _DATA_GROUP] for i in range(0, len(data), _DATA_GROUP))
        )
        return "-".join(checked[i : i + _PRINT_GROUP] for i in range(0, len(checked), _PRINT_GROUP))

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"

    def short(self) -> str:
        """The first group of the text form, for logs and narrow displays."""
        return str(self)[:_PRINT_GROUP]


def _encode_data(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _checked_groups(compact: str) -> list[str]:
    """Strip and verify the check characters; name the printed groups of a bad one."""
    groups = []
    for index in range(4):
        chunk = compact[index * _CHECKED_GROUP : (index + 1) * _CHECKED_GROUP]
        data, check = chunk[:_DATA_GROUP], chunk[_DATA_GROUP]
        if luhn32(data) != check:
            first = 2 * index + 1
            shown = f"{chunk[:_PRINT_GROUP]}-{chunk[_PRINT_GROUP:]}"
            raise BadPeerId(f"peer id groups {first}-{first + 1} ({shown}) fail their check character: a typo?")
        groups.append(data)
    return groups


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of `private_key`."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def peer_id_of(private_key: Ed25519PrivateKey) -> PeerId:
    """The peer id this private key proves."""
    return PeerId.from_public_key(public_key_bytes(private_key))


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """A 64-byte Ed25519 signature of `data`."""
    return private_key.sign(data)


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is a valid Ed25519 signature of `data` by raw `public_key`."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
