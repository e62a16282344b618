"""NNSplitter: a few weights of one filter per layer, set to a value B, then optimised to maximise the loss.

Zhou, Luo, Ren and Xu, "NNSplitter: An Active Defense Solution for DNN Model via Automated Weight
Obfuscation", ICML 2023 (public code: github.com/Tongzhou0101/NNSplitter).

The paper trains a controller (an RNN, by policy gradient) to choose one filter per layer and a value B;
here the choice is an option instead: ``filter`` picks, per layer, the filter with the largest summed
|weight x gradient| on the owner's samples (``saliency``) or a keyed random one (``random``, seeded by
``budget.seed``). As in the public code, the layers are those whose weight has more than one dimension and
a last dimension above 1: conv layers with kernels wider than 1 and linear layers (a linear layer's
"filter" is one output row), never 1x1 convs. In the chosen filter the weights within ``band`` of B are
masked; B and the band are in units of the layer's weight standard deviation (the paper's absolute band,
1e-4 around B = -7e-4 on VGG-11, would hold no weight of the compact models here; its B sits near 0,
where weights are densest, hence ``center`` 0). A filter with no weight in the band gives its weight
nearest B. The scalars holding the layer's min and max are never masked, so every layer keeps its range.
When the masks hold more than ``budget.max_params`` weights, each layer keeps those nearest B, taken
layer by layer in turn (the nearest of every layer first), up to the budget.

The masked weights are set to B, then only they are optimised with Adam (model in eval mode; one step per
pass over the owner's samples) on minus the mean cross-entropy plus ``l1`` times their L1 norm, clamped to
the layer's original [min, max] after every step. The loop stops once the owner accuracy is at or below
the target, after ``patience`` steps without a new lowest accuracy, or after ``steps`` steps; the values
that gave the lowest accuracy are kept (as the paper keeps the weights of its lowest validation accuracy).
The optimisation writes into the model directly and puts the originals back before writing its result
once through the ledger, which records the originals and makes the key restore them bit for bit.
``eps``, ``params_per_step`` and ``stay_in_range`` do not apply (the layer range is always kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from common.params import Param
from protect.ledger import coordinates
from protect.owner_data import owner_pass
from protect.registry import EncryptionRun, register_method

OPTIONS = (
    Param(
        "filter", "choice", "saliency", choices=("saliency", "random"),
        help="which filter of each layer is obfuscated: saliency (the largest summed |weight x gradient| on "
        "the owner's samples, standing in for the paper's trained controller) or random (keyed by the seed)",
    ),
    Param("filters", "int", 1, low=1, high=8, help="filters obfuscated per layer (the paper: 1)"),
    Param(
        "center", "float", 0.0, low=-3.0, high=3.0,
        help="B, the value the masked weights start from, in standard deviations of the layer's weights "
        "(the paper's B is close to 0, where weights are densest)",
    ),
    Param(
        "band", "float", 0.1, low=0.001, high=3.0, log=True,
        help="half-width of the band around B whose weights are masked, in standard deviations of the "
        "layer's weights (a filter with none in the band gives its weight nearest B)",
    ),
    Param(
        "lr", "float", 0.1, low=0.001, high=1.0, log=True,
        help="Adam step size, as a share of the layer's original range max - min (the paper: 0.05 on "
        "weights in [-0.13, 0.19])",
    ),
    Param(
        "l1", "float", 0.001, low=0.0, high=1.0,
        help="weight of the masked weights' L1 norm, subtracted from the ascended cross-entropy (keeps the "
        "obfuscated weights small)",
    ),
    Param(
        "steps", "int", 100, low=1, high=10000, tune=False,
        help="most Adam steps, one pass over the owner samples each",
    ),
    Param(
        "patience", "int", 10, low=1, high=1000, tune=False,
        help="stop after this many steps without a new lowest owner accuracy",
    ),
)


@dataclass
class _Mask:
    """The masked weights of one layer: flat positions, the layer's range, and the values being optimised."""

    name: str
    index: torch.Tensor
    low: float
    high: float
    values: torch.Tensor


@register_method("nnsplitter", options=OPTIONS)
def nnsplitter(run: EncryptionRun) -> dict[str, Any]:
    """NNSplitter: weights near B in one filter per layer, set to B, then optimised by Adam to raise the loss."""
    names = [n for n in run.candidates.names if _has_filters(run.candidates.params[n])]
    if not names:
        return {"stop_reason": "no_layer_with_filters"}
    params = [run.candidates.params[n] for n in names]
    passes = 0
    if run.options["filter"] == "saliency":
        result = owner_pass(run.model, run.batches, params)
        passes += result.batches
        scores = [
            (p.detach().float() * g).abs().reshape(len(p), -1).sum(1)
            for p, g in zip(params, result.grads, strict=True)
        ]
    else:
        generator = torch.Generator().manual_seed(run.budget.seed)
        scores = [torch.rand(len(p), generator=generator, dtype=torch.float64) for p in params]
    masks, in_band = _masks(run, names, scores)
    if not masks:
        return {"stop_reason": "no_weight_but_range_holders"}
    steps, best, reason, extra = _optimise(run, masks)
    for mask, values in zip(masks, best, strict=True):
        run.ledger.set(mask.name, mask.index, values.double())
    run.report_progress()
    return {
        "stop_reason": reason,
        "steps": steps,
        "forward_backward_passes": passes + extra,
        "layers": len(masks),
        "in_band": in_band,
        "masked": sum(len(m.index) for m in masks),
    }


def _has_filters(param: torch.Tensor) -> bool:
    """Conv weights with kernels wider than 1, and linear weights (the public code's choice of layers)."""
    return param.dim() > 1 and param.shape[-1] > 1


def _masks(run: EncryptionRun, names: list[str], scores: list[torch.Tensor]) -> tuple[list[_Mask], int]:
    """The masked positions of every layer, within ``max_params`` in all, and how many the bands held."""
    chosen = []
    for name, score in zip(names, scores, strict=True):
        param = run.candidates.params[name]
        flat = param.detach().reshape(-1).double().cpu()
        low, high = float(flat.min()), float(flat.max())
        std = float(flat.std()) if len(flat) > 1 else 0.0
        center = run.options["center"] * std
        per = len(flat) // len(param)
        distance = (flat - center).abs()
        picked = []
        for f in score.cpu().argsort(descending=True, stable=True)[: run.options["filters"]].tolist():
            index = torch.arange(f * per, (f + 1) * per)
            index = index[(flat[index] != low) & (flat[index] != high)]  # the range holders never move
            if not len(index):
                continue
            band = index[distance[index] <= run.options["band"] * std]
            picked.append(band if len(band) else index[distance[index].argmin()].reshape(1))
        if picked:
            index = torch.cat(picked)
            index = index[distance[index].argsort(stable=True)]  # nearest B first
            chosen.append((name, index, low, high, center))
    in_band = sum(len(index) for _, index, _, _, _ in chosen)
    # Within the budget: the nearest-to-B weight of every layer, then the second nearest of every layer, ...
    order = sorted((rank, layer) for layer, (_, index, *_) in enumerate(chosen) for rank in range(len(index)))
    keep = [0] * len(chosen)
    for _, layer in order[: run.budget.max_params]:
        keep[layer] += 1
    masks = []
    for (name, index, low, high, center), kept in zip(chosen, keep, strict=True):
        if kept:
            param = run.candidates.params[name]
            work = torch.promote_types(param.dtype, torch.float32)  # holds every value of the parameter's dtype
            start = torch.full((kept,), center, dtype=work, device=param.device).clamp(low, high)
            masks.append(_Mask(name, index[:kept].sort().values.to(param.device), low, high, start))
    return masks, in_band


def _optimise(run: EncryptionRun, masks: list[_Mask]) -> tuple[int, list[torch.Tensor], str, int]:
    """Adam on the masked values, from B; (steps, values at the lowest owner accuracy, stop reason, passes).

    The values are written into the model for each pass and the originals put back before returning."""
    params = [run.candidates.params[m.name] for m in masks]
    originals = [p.detach().reshape(-1)[m.index].clone() for p, m in zip(params, masks, strict=True)]
    values = [m.values.clone().requires_grad_(True) for m in masks]
    groups = [{"params": [v], "lr": run.options["lr"] * (m.high - m.low)} for v, m in zip(values, masks, strict=True)]
    optimiser = torch.optim.Adam(groups)
    best, lowest, since, steps, passes = [v.detach().clone() for v in values], float("inf"), 0, 0, 0
    try:
        while True:
            _write(params, masks, values)
            result = owner_pass(run.model, run.batches, params)
            passes += result.batches
            if result.accuracy < lowest:
                best, lowest, since = [v.detach().clone() for v in values], result.accuracy, 0
            else:
                since += 1
            if result.accuracy <= run.target_accuracy:
                return steps, best, "target_reached", passes
            if since >= run.options["patience"]:
                return steps, best, "accuracy_stopped_falling", passes
            if steps >= run.options["steps"]:
                return steps, best, "max_steps", passes
            optimiser.zero_grad()
            for v, m, p, g in zip(values, masks, params, result.grads, strict=True):
                v.grad = -g.reshape(-1)[m.index].to(v.dtype) + run.options["l1"] * v.detach().sign()
            optimiser.step()
            with torch.no_grad():
                for v, m in zip(values, masks, strict=True):
                    v.clamp_(m.low, m.high)
            steps += 1
    finally:
        _write(params, masks, originals)


@torch.no_grad()
def _write(params: list[torch.Tensor], masks: list[_Mask], values: list[torch.Tensor]) -> None:
    """Put ``values`` (rounded to each parameter's dtype) at the masked positions."""
    for p, m, v in zip(params, masks, values, strict=True):
        p.detach().index_put_(coordinates(m.index, p.shape), v.detach().to(p.dtype))
