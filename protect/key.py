"""The secret key: which scalars were perturbed, their original and encrypted values, and the model it fits.

Values are float64, which holds every float16, bfloat16 and float32 value exactly, so casting the
originals back restores the weights bit for bit (``(w + d) - d`` is not always ``w``, so nothing is
restored by subtraction). The key also carries SHA-256 fingerprints of the original and encrypted
model states and non-secret stats. Its ``fingerprint`` and ``repr`` are safe to log; positions and
values never appear in either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from protect import keyfile
from protect.budget import Budget
from protect.errors import ProtectError

FORMAT = 1
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def dtype_name(dtype: torch.dtype) -> str:
    """The short name a key records for a dtype (``float16``, not ``torch.float16``)."""
    return str(dtype).removeprefix("torch.")


DTYPES = {dtype_name(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


@dataclass(eq=False, repr=False)
class SecretKey:
    """Everything needed to decrypt one encrypted model, and to check it is that model.

    ``positions`` lists (parameter name, row-major flat index) per perturbed scalar; ``original``
    and ``encrypted`` are float64 vectors aligned with it. ``param_shapes`` and ``param_dtypes``
    describe each parameter named in ``positions``. ``budget`` is ``Budget.to_dict()`` (a key file's
    budget in the form written before methods owned their options is read into this form).
    """

    method: str
    budget: dict[str, Any]
    positions: list[tuple[str, int]]
    original: torch.Tensor
    encrypted: torch.Tensor
    param_shapes: dict[str, tuple[int, ...]]
    param_dtypes: dict[str, str]
    original_fingerprint: str
    encrypted_fingerprint: str
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budget = Budget.from_dict(self.budget).to_dict()
        n = len(self.positions)
        for label, values in (("original", self.original), ("encrypted", self.encrypted)):
            if values.dtype != torch.float64 or values.shape != (n,):
                raise ProtectError(f"key is malformed: {label} values must be {n} float64 numbers")
        if not n:
            raise ProtectError("key is malformed: it lists no perturbed scalar")
        if len(set(self.positions)) != n:
            raise ProtectError("key is malformed: a position is listed twice")
        for name, index in self.positions:
            if name not in self.param_shapes or self.param_dtypes.get(name) not in DTYPES:
                raise ProtectError(
                    f"key is malformed: no shape or floating dtype recorded for parameter {name!r}"
                )
            if not 0 <= index < math.prod(self.param_shapes[name]):
                raise ProtectError(f"key is malformed: a position is outside parameter {name!r}")
        for fp in (self.original_fingerprint, self.encrypted_fingerprint):
            if not isinstance(fp, str) or not _SHA256_HEX.fullmatch(fp):
                raise ProtectError("key is malformed: model fingerprints must be SHA-256 hex digests")

    @property
    def num_changed(self) -> int:
        """How many scalars the encryption changed."""
        return len(self.positions)

    @property
    def perturbations(self) -> torch.Tensor:
        """Encrypted minus original value per scalar (float64), for analysis; secret like the key."""
        return self.encrypted - self.original

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of the key's secret content: equal keys, equal fingerprints. Safe to log."""
        digest = hashlib.sha256()
        public = [self.method, self.positions, self.param_shapes, self.param_dtypes]
        public += [self.original_fingerprint, self.encrypted_fingerprint]
        digest.update(json.dumps(public, sort_keys=True).encode())
        digest.update(self.original.numpy().tobytes())
        digest.update(self.encrypted.numpy().tobytes())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"SecretKey(method={self.method!r}, num_changed={self.num_changed}, "
            f"parameters={len(self.param_shapes)}, fingerprint={self.fingerprint[:16]!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return self.fingerprint == other.fingerprint and self.budget == other.budget

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def save(self, path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> None:
        """Write the key to ``path`` (mode 0600, atomically); AES-GCM encrypted when a passphrase is given."""
        names = list(self.param_shapes)
        metadata = {
            "format": FORMAT,
            "method": self.method,
            "budget": self.budget,
            "param_names": names,
            "param_shapes": {n: list(s) for n, s in self.param_shapes.items()},
            "param_dtypes": self.param_dtypes,
            "original_fingerprint": self.original_fingerprint,
            "encrypted_fingerprint": self.encrypted_fingerprint,
            "stats": self.stats,
        }
        slot = {n: i for i, n in enumerate(names)}
        tensors = {
            "param_index": torch.tensor([slot[n] for n, _ in self.positions], dtype=torch.int64),
            "flat_index": torch.tensor([i for _, i in self.positions], dtype=torch.int64),
            "original": self.original.contiguous(),
            "encrypted": self.encrypted.contiguous(),
        }
        keyfile.write_atomic(path, keyfile.encode(metadata, tensors, passphrase))

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> SecretKey:
        """Read a key written by ``save``; one-line ProtectError if the file is damaged, foreign or locked."""
        metadata, tensors = keyfile.decode(keyfile.read(path), passphrase, str(path))
        try:
            if metadata["format"] != FORMAT:
                raise ProtectError(
                    f"unsupported payload format {metadata['format']!r} (this build reads {FORMAT})"
                )
            names = metadata["param_names"]
            param_index, flat_index = tensors["param_index"].tolist(), tensors["flat_index"].tolist()
            if len(param_index) != len(flat_index) or not all(0 <= p < len(names) for p in param_index):
                raise ProtectError("key is malformed: its position lists do not agree")
            return cls(
                method=metadata["method"],
                budget=metadata["budget"],
                positions=[(names[p], i) for p, i in zip(param_index, flat_index, strict=True)],
                original=tensors["original"],
                encrypted=tensors["encrypted"],
                param_shapes={n: tuple(s) for n, s in metadata["param_shapes"].items()},
                param_dtypes=metadata["param_dtypes"],
                original_fingerprint=metadata["original_fingerprint"],
                encrypted_fingerprint=metadata["encrypted_fingerprint"],
                stats=metadata["stats"],
            )
        except ProtectError as exc:
            raise ProtectError(f"key file {path}: {exc}") from None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProtectError(
                f"key file {path} has malformed metadata ({type(exc).__name__}: {exc})"
            ) from None
