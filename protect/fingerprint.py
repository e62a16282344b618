"""SHA-256 fingerprints of a model's full state.

A key is bound to one model: decryption checks the model is exactly the encrypted one before any
write, and that the restored state is exactly the original one. The hash covers every state_dict
entry, parameters AND buffers, sorted by name, with name, dtype, shape and raw bytes, each framed by
its length so no two different states hash the same input.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

import torch
from torch import nn

from protect.errors import ProtectError


def state_fingerprint(model: nn.Module, replace: Mapping[int, torch.Tensor] | None = None) -> str:
    """SHA-256 hex of ``model``'s state; ``replace`` maps ``id(parameter)`` to a tensor hashed in its place.

    ``replace`` lets decryption fingerprint the restored state before writing anything; it works by
    identity so tied parameters (one tensor under two names) are replaced under every name.
    """
    replace = replace or {}
    digest = hashlib.sha256()
    state = model.state_dict(keep_vars=True)
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise ProtectError(f"cannot fingerprint the model: state entry {name!r} is not a tensor")
        tensor = replace.get(id(tensor), tensor)
        _frame(digest, name.encode())
        _frame(digest, str(tensor.dtype).encode())
        _frame(digest, struct.pack(f">{tensor.dim()}q", *tensor.shape))
        _frame(digest, _raw_bytes(tensor))
    return digest.hexdigest()


def _frame(digest: hashlib._Hash, data: bytes) -> None:
    digest.update(struct.pack(">Q", len(data)))
    digest.update(data)


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """Row-major bytes of any dtype (bfloat16 included, which numpy lacks) on any device."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()
