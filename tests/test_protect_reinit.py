"""The positive control ``reinit`` and the ledger's ``set`` it writes through."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from protect_helpers import (
    ARCHITECTURES,
    batches,
    changed_scalars,
    states_equal,
    with_bn_stats,
)

from protect import Budget, decrypt, encrypt
from protect.candidates import Candidates
from protect.errors import ProtectError
from protect.ledger import Ledger

# Far below the number of candidate weights, and stay_in_range on: reinit ignores the one, is not clamped by the other.
BUDGET = Budget(max_params=4, stay_in_range=True, seed=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_candidate_changes_and_the_key_restores_every_bit(arch: str, dtype: torch.dtype) -> None:
    data = batches(arch)
    model = with_bn_stats(ARCHITECTURES[arch]().to(dtype), data)
    before = copy.deepcopy(model.state_dict())
    candidates = Candidates(model)
    key = encrypt(model, data, BUDGET, method="reinit")
    everything = {(name, i) for name in candidates.names for i in range(candidates.params[name].numel())}
    assert changed_scalars(before, model) == set(key.positions) == everything
    assert key.num_changed == key.stats["candidate_params"] > BUDGET.max_params
    assert key.stats["stop_reason"] == "all_candidates"
    decrypt(model, key)
    assert states_equal(model.state_dict(), before)


def test_draws_follow_the_layers_default_init_unclamped_and_keyed_by_the_seed() -> None:
    data = batches("mlp")
    model = ARCHITECTURES["mlp"]()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.01)  # a range far narrower than the init's: a clamped draw would stay inside it
    key = encrypt(model, data, BUDGET, method="reinit")
    for name, p in Candidates(model).params.items():
        bound = 1 / math.sqrt(p.shape[1])
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.5 * bound  # spread over the init's range, not the old one
    again = encrypt(ARCHITECTURES["mlp"](), data, BUDGET, method="reinit")
    other = encrypt(ARCHITECTURES["mlp"](), data, Budget(seed=4), method="reinit")
    assert torch.equal(again.encrypted, key.encrypted)  # the seed, not the old weights, decides the draws
    assert not torch.equal(other.encrypted, key.encrypted)


def test_ledger_set_records_exact_values_once_and_reverts() -> None:
    model = ARCHITECTURES["mlp"]()
    before = copy.deepcopy(model.state_dict())
    candidates = Candidates(model)
    ledger = Ledger(candidates, eps=1.0, stay_in_range=True)
    name = candidates.names[0]
    param = candidates.params[name]
    first = param.detach().reshape(-1)[0].item()
    assert ledger.set(name, torch.tensor([0, 1, 2]), torch.tensor([first, 5.0, -7.0], dtype=torch.float64)) == 2
    assert param.reshape(-1)[1].item() == 5.0 and param.reshape(-1)[2].item() == -7.0  # outside the range: kept
    assert ledger.set(name, torch.tensor([1, 3]), torch.tensor([9.0, 9.0], dtype=torch.float64)) == 1  # 1 once only
    positions, original, encrypted = ledger.entries()
    assert positions == [(name, 1), (name, 2), (name, 3)]
    assert encrypted.tolist() == [5.0, -7.0, 9.0]
    assert original.tolist() == [before[name].reshape(-1)[i].double().item() for i in (1, 2, 3)]
    with pytest.raises(ProtectError, match="must be finite"):
        ledger.set(name, torch.tensor([4]), torch.tensor([math.inf], dtype=torch.float64))
    ledger.revert()
    assert states_equal(model.state_dict(), before)
