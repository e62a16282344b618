"""The weights an AdvParams attacker inspects, the robust statistics that expose outliers, and the loss gradient.

AdvParams perturbs a few scalars of convolution and linear weights, pushing them towards their
tensor's extremes along the loss gradient. A tensor's median and median absolute deviation (MAD)
barely move when a handful of its values do, so a MAD-based z-score is the natural outlier score for
such scalars; the gradient of the attacker's loss points back along the perturbation.
"""

from __future__ import annotations

import torch
from torch import nn

from attacks.base import AttackerData, AttackError, ComputeMeter
from common.training import batches, model_device

WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
MAD_TO_SIGMA = 1.4826  # makes the MAD a consistent estimate of a normal distribution's sigma


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every convolution and linear layer, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def weight_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors of convolution and linear layers, by parameter name (``conv1.weight``)."""
    return {f"{name}.weight" if name else "weight": m.weight for name, m in weight_layers(model)}


def classifier(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear``: the classification head."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AttackError(f"model {type(model).__name__} has no nn.Linear classifier")
    return linears[-1]


def robust_scale(w: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """A tensor's median and its MAD scaled to a standard deviation (at least ``eps``)."""
    flat = w.detach().flatten()
    median = flat.median()
    mad = (flat - median).abs().median()
    return median, (MAD_TO_SIGMA * mad).clamp_min(eps)


def robust_z(w: torch.Tensor) -> torch.Tensor:
    """``|w - median| / (1.4826 * MAD)`` element-wise, the same shape as ``w``."""
    median, scale = robust_scale(w)
    return (w.detach() - median).abs() / scale


GRAD_BATCH = 256


def loss_gradients(
    model: nn.Module,
    weights: dict[str, nn.Parameter],
    data: AttackerData,
    meter: ComputeMeter,
    *,
    samples: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor] | None:
    """Gradient of the mean cross-entropy w.r.t. ``weights``, in eval mode, paid for on ``meter``.

    Estimated on ``samples`` of the attacker's train split (a draw from ``generator``; the whole split, in
    order, if it holds no more); None, with nothing spent, if the meter has not that much left.
    """
    size = len(data.train)
    count = min(samples, size)
    if count <= 0 or count > meter.remaining:
        return None
    meter.charge(count)
    rows = torch.arange(size) if count == size else torch.randperm(size, generator=generator)[:count]
    subset = torch.utils.data.TensorDataset(*(t[rows] for t in data.train.tensors))
    device = model_device(model)
    model.eval()  # batch-norm statistics must not drift while we only measure
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.enable_grad():
        for x, y in batches(subset, GRAD_BATCH):
            (loss_fn(model(x.to(device)), y.to(device)) / count).backward()
    grads = {n: torch.zeros_like(w) if w.grad is None else w.grad.detach().clone() for n, w in weights.items()}
    model.zero_grad(set_to_none=True)
    return grads


def reset_values(weights: dict[str, nn.Parameter], rule: str) -> dict[str, torch.Tensor]:
    """Per tensor, the value a reset scalar takes: the tensor's median (where its bulk sits) or zero."""
    return {n: robust_scale(w)[0] if rule == "median" else torch.zeros((), dtype=w.dtype, device=w.device)
            for n, w in weights.items()}
