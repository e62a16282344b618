"""The key file container: versioned, checksummed or passphrase-encrypted, and free of pickle.

Layout: ``b"ADVPKEY"``, a version byte (1), a mode byte, then

* mode ``P`` (plain): SHA-256 of the payload, then the payload;
* mode ``E`` (encrypted): scrypt cost as three bytes (log2 n, r, p), a 16-byte salt, a 12-byte nonce,
  then the AES-256-GCM ciphertext of the payload. Everything before the ciphertext is authenticated
  as associated data, so neither the header nor the payload can be changed without detection.

scrypt uses n = 2**15, r = 8, p = 1 (about 32 MiB and a tenth of a second per try); the cost is
stored in the file so it can be raised later, and loading refuses costs outside sane bounds rather
than let a crafted file exhaust memory. A passphrase given for a plain file is refused, so nobody
believes a key is protected when it is not. The payload is a safetensors blob whose metadata holds
one JSON document (see ``protect.key``). Files are written atomically with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Any

import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from common import files
from protect.errors import ProtectError

MAGIC = b"ADVPKEY"
VERSION = 1
PLAIN = b"P"
ENCRYPTED = b"E"
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
SCRYPT_BOUNDS = {"log2 n": (10, 20), "r": (1, 16), "p": (1, 4)}
SALT_BYTES, NONCE_BYTES = 16, 12
METADATA_KEY = "advparams_key"

Passphrase = str | bytes


def encode(
    metadata: dict[str, Any], tensors: dict[str, torch.Tensor], passphrase: Passphrase | None
) -> bytes:
    """The full file contents for a key's metadata and tensors, encrypted when a passphrase is given."""
    payload = safetensors_save(tensors, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    prefix = MAGIC + bytes([VERSION])
    if passphrase is None:
        return prefix + PLAIN + hashlib.sha256(payload).digest() + payload
    header = prefix + ENCRYPTED + bytes([SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P]) + secrets.token_bytes(SALT_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    aead = AESGCM(_derive(passphrase, header))
    return header + nonce + aead.encrypt(nonce, payload, header + nonce)


def decode(
    blob: bytes, passphrase: Passphrase | None, source: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors from file contents; one-line ProtectError naming ``source`` on any defect."""
    if len(blob) < len(MAGIC) + 2 or not blob.startswith(MAGIC):
        raise ProtectError(f"{source} is not an AdvParams key file")
    version, mode = blob[len(MAGIC)], blob[len(MAGIC) + 1 : len(MAGIC) + 2]
    if version != VERSION:
        raise ProtectError(
            f"{source} has unsupported key file version {version} (this build reads version {VERSION})"
        )
    body = blob[len(MAGIC) + 2 :]
    if mode == PLAIN:
        if passphrase is not None:
            raise ProtectError(f"key file {source} is not passphrase-protected; load it without a passphrase")
        checksum, payload = body[:32], body[32:]
        if len(checksum) < 32 or hashlib.sha256(payload).digest() != checksum:
            raise ProtectError(f"key file {source} is truncated or tampered (checksum mismatch)")
    elif mode == ENCRYPTED:
        if passphrase is None:
            raise ProtectError(f"key file {source} is passphrase-protected; give its passphrase")
        payload = _decrypt(blob, passphrase, source)
    else:
        raise ProtectError(f"{source} has unknown key file mode {mode!r}")
    try:
        tensors = safetensors_load(payload)
        metadata = json.loads(_safetensors_metadata(payload)[METADATA_KEY])
    except Exception as exc:  # safetensors and json raise several types; all mean the same here
        raise ProtectError(f"key file {source} has a malformed payload ({type(exc).__name__})") from None
    if not isinstance(metadata, dict):
        raise ProtectError(f"key file {source} has malformed metadata (not a JSON object)")
    return metadata, tensors


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600: never a partial or world-readable key file."""
    try:
        files.write_atomic(path, data, mode=0o600)
    except OSError as exc:
        raise ProtectError(f"cannot write key file {path}: {exc.strerror or exc}") from None


def read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a key file; one-line ProtectError if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProtectError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def is_key_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a key file, known by its magic bytes whatever its name (damaged ones too)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def shared_mode(path: str | os.PathLike[str]) -> int | None:
    """The permission bits of ``path`` when group or others have any access to it, else None (also when
    it cannot be read): a key file is written 0600, and wider bits mean someone loosened them."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None


def _decrypt(blob: bytes, passphrase: Passphrase, source: str) -> bytes:
    cost_end = len(MAGIC) + 2 + 3
    salt_end = cost_end + SALT_BYTES
    nonce_end = salt_end + NONCE_BYTES
    if len(blob) < nonce_end + 16:  # 16: the GCM tag, present even for an empty payload
        raise ProtectError(f"key file {source} is truncated")
    for (name, (low, high)), value in zip(SCRYPT_BOUNDS.items(), blob[cost_end - 3 : cost_end], strict=True):
        if not low <= value <= high:
            raise ProtectError(
                f"key file {source} has unsupported scrypt {name} = {value} (allowed {low}..{high})"
            )
    header, nonce = blob[:salt_end], blob[salt_end:nonce_end]
    try:
        return AESGCM(_derive(passphrase, header)).decrypt(nonce, blob[nonce_end:], header + nonce)
    except InvalidTag:
        raise ProtectError(f"wrong passphrase for key file {source}, or the file is tampered") from None


def _derive(passphrase: Passphrase, header: bytes) -> bytes:
    """The 256-bit AES key from the passphrase, with the scrypt cost and salt read from ``header``."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    if not isinstance(passphrase, bytes) or not passphrase:
        raise ProtectError("passphrase must be a non-empty string")
    log2_n, r, p = header[len(MAGIC) + 2 : len(MAGIC) + 5]
    salt = header[len(MAGIC) + 5 : len(MAGIC) + 5 + SALT_BYTES]
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase)


def _safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its header is an 8-byte length, then JSON)."""
    (length,) = struct.unpack("<Q", payload[:8])
    metadata: dict[str, str] = json.loads(payload[8 : 8 + length])["__metadata__"]
    return metadata
