"""Which scalars may be perturbed: the weights of Conv and Linear modules.

Biases and normalisation parameters are left alone (they are few, and moving them is easy to spot).
``budget.layers`` narrows the set with fnmatch patterns over parameter names. The candidates are
also addressed as one flat vector (tensor after tensor, row-major) so a method can rank or draw
over all of them at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn

from protect.errors import ProtectError

CANDIDATE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class Candidates:
    """The candidate parameters of a model, by name, with a flat global index over their scalars."""

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        weight_ids = {
            id(m.weight)
            for m in model.modules()
            if isinstance(m, CANDIDATE_MODULES) and isinstance(m.weight, nn.Parameter)
        }
        # named_parameters() gives each tied tensor once, under its first name.
        found = [(n, p) for n, p in model.named_parameters() if id(p) in weight_ids]
        if not found:
            raise ProtectError("model has no Conv or Linear weights to encrypt")
        if layers is not None:
            for pattern in layers:
                if not any(fnmatchcase(n, pattern) for n, _ in found):
                    names = ", ".join(n for n, _ in found[:8]) + (", ..." if len(found) > 8 else "")
                    raise ProtectError(
                        f"budget layers pattern {pattern!r} matches no candidate parameter ({names})"
                    )
            found = [(n, p) for n, p in found if any(fnmatchcase(n, pat) for pat in layers)]
        self.names = [n for n, _ in found]
        self.params = dict(found)
        sizes = torch.tensor([p.numel() for _, p in found], dtype=torch.int64)
        self.starts = torch.cumsum(sizes, 0) - sizes
        self.total = int(sizes.sum())

    def split(self, flat: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Group global indices by tensor: yields (name, local indices, positions within ``flat``)."""
        flat = flat.to("cpu", torch.int64)
        owner = torch.searchsorted(self.starts, flat, right=True) - 1
        for i, name in enumerate(self.names):
            where = (owner == i).nonzero().reshape(-1)
            if len(where):
                yield name, flat[where] - self.starts[i], where
