"""Encrypt then decrypt restores every state entry bit for bit through key files, on CUDA, and in any mode.

The per-method round trip over every architecture and dtype is in ``test_protect_contract.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from protect_helpers import (
    ARCHITECTURES,
    batches,
    changed_scalars,
    states_equal,
    with_bn_stats,
)
from torch import nn

from protect import Budget, SecretKey, decrypt, encrypt

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# target 0: run to max_params, so the round trip covers a full budget even on untrained models.
BUDGET = Budget(max_params=24, eps=0.5, params_per_step=3, target_accuracy=0.0)


def encrypted_model(arch: str, dtype: torch.dtype) -> tuple[nn.Module, dict, SecretKey]:
    data = batches(arch)
    model = with_bn_stats(ARCHITECTURES[arch]().to(dtype), data)
    before = copy.deepcopy(model.state_dict())
    key = encrypt(model, data, BUDGET)
    return model, before, key


@pytest.mark.parametrize("passphrase", [None, "correct horse battery staple"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_through_key_file(tmp_path: Path, dtype: torch.dtype, passphrase: str | None) -> None:
    model, before, key = encrypted_model("bn_cnn", dtype)
    path = tmp_path / "model.key"
    key.save(path, passphrase=passphrase)
    loaded = SecretKey.load(path, passphrase=passphrase)
    assert loaded == key and loaded.fingerprint == key.fingerprint
    assert loaded.stats == key.stats and loaded.budget == key.budget
    decrypt(model, loaded)
    assert states_equal(model.state_dict(), before)


def test_mode_is_restored_and_frozen_weights_work() -> None:
    data = batches("mlp")
    model = ARCHITECTURES["mlp"]().requires_grad_(False).train()
    before = copy.deepcopy(model.state_dict())
    key = encrypt(model, data, BUDGET)
    assert model.training and not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    decrypt(model, key)
    assert model.training and states_equal(model.state_dict(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_on_cuda(dtype: torch.dtype) -> None:
    data = batches("bn_cnn")  # CPU batches: encrypt moves them to the model's device
    model = with_bn_stats(ARCHITECTURES["bn_cnn"]().to(dtype), data).cuda()
    before = {k: v.cpu() for k, v in model.state_dict().items()}
    key = encrypt(model, data, BUDGET)
    assert len(changed_scalars({k: v.cuda() for k, v in before.items()}, model)) == key.num_changed
    decrypt(model, key)
    assert states_equal({k: v.cpu() for k, v in model.state_dict().items()}, before)
