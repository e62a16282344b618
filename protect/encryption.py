"""``encrypt`` and ``decrypt``: the checks, bookkeeping and guarantees shared by every method.

Encryption changes the model in place and returns the key; if the method fails midway every change
is undone, so a model is never left half-encrypted without a key. Decryption checks everything
before writing (parameter names, shapes, dtypes, positions, the encrypted fingerprint, the values
at the key's positions, and the fingerprint the restored state would have), so on any refusal the
model is left bit for bit as it was.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from protect.budget import Budget
from protect.candidates import Candidates
from protect.errors import ProtectError
from protect.fingerprint import state_fingerprint
from protect.key import DTYPES, SecretKey, dtype_name
from protect.ledger import Ledger, coordinates
from protect.owner_data import Batch, num_classes, owner_batches, owner_pass
from protect.registry import METHODS, EncryptionRun, Progress, check_options


def encrypt(
    model: nn.Module,
    data: Iterable[Batch],
    budget: Budget,
    method: str = "advparams",
    progress: Progress | None = None,
) -> SecretKey:
    """Perturb ``model`` in place with ``method`` within ``budget``; returns the key that undoes it.

    ``data`` is the owner's samples, any iterable of ``(inputs, labels)`` batches. ``progress`` is
    called with (scalars changed so far, ``budget.max_params``). ``budget.options`` are checked against
    the options ``method`` declares; the key records them with the defaults filled in.
    """
    if not isinstance(budget, Budget):
        raise ProtectError(f"budget must be a protect.Budget, got {type(budget).__name__}")
    registered = METHODS.get(method)
    budget = dataclasses.replace(budget, options=check_options(method, budget.options))
    was_training = model.training
    model.eval()
    try:
        candidates = Candidates(model, budget.layers)
        batches = owner_batches(data, model)
        classes = num_classes(model, batches)
        target = budget.target_accuracy if budget.target_accuracy is not None else 1.0 / classes
        original_fingerprint = state_fingerprint(model)
        accuracy_before = owner_pass(model, batches).accuracy
        ledger = Ledger(candidates, budget.eps, budget.stay_in_range)
        run = EncryptionRun(model, batches, budget, dict(budget.options), candidates, ledger, target, progress)
        start = time.perf_counter()
        try:
            stats = registered.function(run)
            seconds = time.perf_counter() - start
            if ledger.count > budget.max_params and not registered.changes_all:
                raise ProtectError(f"method {method!r} changed {ledger.count} scalars, more than max_params "
                                   f"{budget.max_params}")
            if not ledger.count:
                raise ProtectError(
                    f"nothing was encrypted (stop reason: {stats.get('stop_reason', 'none')}; owner accuracy "
                    f"{accuracy_before:.4f}, target_accuracy {target:.4f})"
                )
            stats.update(
                owner_samples=sum(len(y) for _, y in batches),
                num_classes=classes,
                target_accuracy=target,
                owner_accuracy_before=accuracy_before,
                owner_accuracy_after=owner_pass(model, batches).accuracy,
                num_changed=ledger.count,
                candidate_tensors=len(candidates.names),
                candidate_params=candidates.total,
                seconds=seconds,
            )
            return _make_key(model, method, budget, ledger, original_fingerprint, stats)
        except BaseException:
            ledger.revert()  # never leave a model changed without the key that undoes it
            raise
    finally:
        model.train(was_training)


def _make_key(
    model: nn.Module,
    method: str,
    budget: Budget,
    ledger: Ledger,
    original_fingerprint: str,
    stats: dict[str, Any],
) -> SecretKey:
    positions, original, encrypted = ledger.entries()
    touched = {name: ledger.candidates.params[name] for name, _ in positions}
    return SecretKey(
        method=method,
        budget=budget.to_dict(),
        positions=positions,
        original=original,
        encrypted=encrypted,
        param_shapes={n: tuple(p.shape) for n, p in touched.items()},
        param_dtypes={n: dtype_name(p.dtype) for n, p in touched.items()},
        original_fingerprint=original_fingerprint,
        encrypted_fingerprint=state_fingerprint(model),
        stats=stats,
    )


def decrypt(model: nn.Module, key: SecretKey) -> None:
    """Restore ``model`` in place to its exact original state; ProtectError and no change on refusal."""
    if not isinstance(key, SecretKey):
        raise ProtectError(f"key must be a protect.SecretKey, got {type(key).__name__}")
    params = dict(model.named_parameters())
    for name, shape in key.param_shapes.items():
        param = params.get(name)
        if param is None:
            raise ProtectError(f"key does not match this model (it has no parameter {name!r})")
        if tuple(param.shape) != shape or param.dtype != DTYPES[key.param_dtypes[name]]:
            found = f"{dtype_name(param.dtype)} {tuple(param.shape)}"
            raise ProtectError(
                f"key does not match this model (parameter {name!r} is {found}, "
                f"the key expects {key.param_dtypes[name]} {shape})"
            )
    current = state_fingerprint(model)
    if current == key.original_fingerprint:
        raise ProtectError("model is already decrypted (it matches the key's original fingerprint)")
    if current != key.encrypted_fingerprint:
        raise ProtectError(
            "key does not match this model (the model is not the encrypted state this key was made for)"
        )
    restored: dict[int, torch.Tensor] = {}
    for name in key.param_shapes:
        param = params[name]
        rows = [i for i, (n, _) in enumerate(key.positions) if n == name]
        index = coordinates(torch.tensor([key.positions[i][1] for i in rows]), param.shape)
        index = tuple(t.to(param.device) for t in index)
        copy = param.detach().clone()
        if not torch.equal(copy[index].double().cpu(), key.encrypted[rows]):
            raise ProtectError(
                f"key is inconsistent: its encrypted values differ from the model's in {name!r}"
            )
        copy.index_put_(index, key.original[rows].to(param.dtype).to(param.device))
        restored[id(param)] = copy
    if state_fingerprint(model, restored) != key.original_fingerprint:
        raise ProtectError("key is inconsistent: restoring it would not reproduce the original model")
    with torch.no_grad():
        for name in key.param_shapes:
            params[name].copy_(restored[id(params[name])])
