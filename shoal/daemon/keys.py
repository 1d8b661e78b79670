"""The daemon's identity key file: PKCS8 PEM at <home>/identity.key, mode 0600.

The key is the daemon's peer id, so it is created exactly once (never
overwritten, even by a second daemon racing on the same home) and refused if
anyone but its owner could read it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from shoal.errors import ShoalError

KEY_FILE_NAME = "identity.key"
_MAX_KEY_FILE_SIZE = 64 * 1024
#: How every key file shoal writes begins (PKCS8 PEM).
_PEM_HEADER = b"-----BEGIN PRIVATE KEY-----"


class KeyFileError(ShoalError):
    """The identity key file cannot be used."""


class InsecureKeyFile(KeyFileError):
    """The key file is not a private regular file of ours."""


class InvalidKeyFile(KeyFileError):
    """The key file does not hold an Ed25519 private key in unencrypted PKCS8 PEM."""


def load_or_create_private_key(home: Path) -> Ed25519PrivateKey:
    """The key at home/identity.key, created on first use."""
    path = home / KEY_FILE_NAME
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    try:
        return _create(path)
    except FileExistsError:
        # Another process created it between our two attempts: its key wins.
        return _load(path)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None


def _load(path: Path) -> Ed25519PrivateKey:
    """Read and check the key file; FileNotFoundError if there is none yet."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            # Checking the opened file, not the path, leaves no window for a swap.
            _check_private(path, os.fstat(file.fileno()))
            data = file.read(_MAX_KEY_FILE_SIZE + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    return _parse(path, data)


def _check_private(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise InsecureKeyFile(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise InsecureKeyFile(f"{path} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}")


def _parse(path: Path, data: bytes) -> Ed25519PrivateKey:
    if len(data) > _MAX_KEY_FILE_SIZE:
        raise InvalidKeyFile(f"{path} is too large to be a key file")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyFile(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKeyFile(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def is_identity_key(data: bytes) -> bool:
    """Whether `data` is what a shoal key file holds: an unencrypted Ed25519 key in PKCS8 PEM.

    Shares leave such a file out wherever it lies and whatever its name.
    """
    if len(data) > _MAX_KEY_FILE_SIZE or not data[:256].lstrip().startswith(_PEM_HEADER):
        return False
    try:
        return isinstance(load_pem_private_key(data, password=None), Ed25519PrivateKey)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _create(path: Path) -> Ed25519PrivateKey:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        _write_private(temp, pem)
        # link() publishes the complete file atomically like rename(), but fails
        # instead of replacing a key another daemon published first.
        os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _sync_directory(path.parent)
    return key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
