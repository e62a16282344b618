"""Writes perturbations into the model and records each one exactly, so it can be undone bit for bit.

Every method moves scalars through this one place, which enforces the rules a key relies on: a
scalar is moved at most once (so its recorded original is the true original), a move is clamped
into the tensor's original [min, max] when ``stay_in_range`` is set (and the scalars holding that
min and max never move, so the range itself is unchanged), a move never leaves the dtype's finite
range, and only scalars whose stored value really changed are recorded. Values are kept as float64,
which represents every float16, bfloat16 and float32 value exactly.

Most methods move scalars by ``eps`` (``propose``, ``apply``); a method that replaces weights outright
(``reinit``) writes its values with ``set``, under the same once-only and exact-record rules.
"""

from __future__ import annotations

import torch

from protect.candidates import Candidates
from protect.errors import ProtectError


class Ledger:
    """The record of every scalar changed so far, with the means to propose, apply and revert moves."""

    def __init__(self, candidates: Candidates, eps: float, stay_in_range: bool) -> None:
        self.candidates = candidates
        self.eps = eps
        self.stay_in_range = stay_in_range
        self._range = {
            n: (float(p.detach().min()), float(p.detach().max())) for n, p in candidates.params.items()
        }
        self._moved = {
            n: torch.zeros(p.numel(), dtype=torch.bool, device=p.device) for n, p in candidates.params.items()
        }
        self._records: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.count = 0

    def propose(
        self, name: str, sign: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New values (parameter dtype) and move sizes (float64) for moving scalars by ``eps * sign``.

        ``index`` selects flat positions (all scalars when ``None``). The move size is 0 wherever the
        scalar may not move: already moved, a zero sign, a range extreme, or a move lost to rounding.
        """
        param = self.candidates.params[name]
        old = param.detach().reshape(-1)
        moved = self._moved[name]
        if index is not None:
            index = index.to(param.device)
            old, moved = old[index], moved[index]
        old64 = old.double()
        finite = torch.finfo(param.dtype).max
        new64 = (old64 + self.eps * sign.to(old64)).clamp(-finite, finite)
        movable = ~moved & (sign.to(param.device) != 0)
        if self.stay_in_range:
            low, high = self._range[name]
            new64 = new64.clamp(low, high)
            movable &= (old64 != low) & (old64 != high)
        new = new64.to(param.dtype)
        size = torch.where(movable, (new.double() - old64).abs(), torch.zeros_like(old64))
        return new, size

    @torch.no_grad()
    def apply(self, name: str, index: torch.Tensor, sign: torch.Tensor) -> int:
        """Move the distinct flat ``index`` scalars of ``name`` by ``eps * sign``; returns how many moved."""
        param = self.candidates.params[name]
        index = index.to(param.device, torch.int64)
        new, size = self.propose(name, sign, index)
        keep = size > 0
        return self._write(name, index[keep], new[keep])

    @torch.no_grad()
    def set(self, name: str, index: torch.Tensor, values: torch.Tensor) -> int:
        """Write ``values`` (rounded to the parameter's dtype) at the distinct flat ``index`` scalars of
        ``name``; returns how many changed.

        For methods that replace weights rather than move them. No ``eps`` and no clamping: a replaced
        value is a fresh draw, not a perturbation to hide in the tensor's range, so ``stay_in_range``
        governs moves only. Scalars already changed, and those whose stored value would stay the same,
        are skipped; a value outside the dtype's finite range is refused.
        """
        param = self.candidates.params[name]
        index = index.to(param.device, torch.int64)
        new = values.to(param.device, param.dtype)
        if not torch.isfinite(new).all():
            raise ProtectError(f"values set in {name!r} must be finite in its dtype {param.dtype}")
        keep = ~self._moved[name][index] & (new != param.detach().reshape(-1)[index])
        return self._write(name, index[keep], new[keep])

    def _write(self, name: str, index: torch.Tensor, new: torch.Tensor) -> int:
        """Write ``new`` at the flat ``index`` scalars of ``name`` and record the change exactly."""
        if not len(index):
            return 0
        param = self.candidates.params[name]
        position = coordinates(index, param.shape)
        original = param[position].double().cpu()
        param.index_put_(position, new)
        self._moved[name][index] = True
        self._records.append((name, index.cpu(), original, new.double().cpu()))
        self.count += len(index)
        return len(index)

    @torch.no_grad()
    def revert(self) -> None:
        """Put every recorded scalar back to its original value (used when an encryption fails midway)."""
        for name, index, original, _ in reversed(self._records):
            param = self.candidates.params[name]
            index = index.to(param.device)
            value = original.to(param.dtype).to(param.device)
            param.index_put_(coordinates(index, param.shape), value)
            self._moved[name][index] = False
        self._records.clear()
        self.count = 0

    def entries(self) -> tuple[list[tuple[str, int]], torch.Tensor, torch.Tensor]:
        """(positions as (parameter name, flat index), original values, encrypted values), in change order.

        Only called once at least one scalar has changed.
        """
        positions = [(name, int(i)) for name, index, _, _ in self._records for i in index]
        original = torch.cat([r[2] for r in self._records])
        encrypted = torch.cat([r[3] for r in self._records])
        return positions, original, encrypted


def coordinates(index: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, ...]:
    """Flat indices as one index tensor per dimension of ``shape`` (row-major): ``torch.unravel_index``
    without its first call's import of ``torch.fx`` (seconds, once per process, as long as a small encryption)."""
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index = index // size
    return tuple(reversed(out))
