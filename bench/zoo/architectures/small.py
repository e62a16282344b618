"""Small networks for small images (8x8 digits, 28x28 MNIST-sized): an MLP, a two-layer CNN and LeNet-5."""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import BenchError
from bench.zoo.models import register_model
from common.errors import first_line


def flat_features(features: nn.Module, input_shape: tuple[int, int, int], name: str) -> int:
    """How many features ``features`` gives for one input of ``input_shape`` (sizes a linear head)."""
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *input_shape)).numel())
    except RuntimeError as e:
        raise BenchError(f"model {name!r} cannot take inputs of shape {input_shape}: {first_line(e)}") from e


@register_model("mlp")
def mlp(*, num_classes: int, input_shape: tuple[int, int, int], hidden: int = 64) -> nn.Module:
    """One hidden layer on flattened pixels: the smallest model, for digits."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@register_model("cnn")
def cnn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Two 3x3 convolutions (16, 32 channels), one max-pool and a linear head: small, for digits."""
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(flat_features(features, input_shape, "cnn"), num_classes))


@register_model("lenet5")
def lenet5(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-5 with ReLU and max-pooling; padded first convolution for MNIST-sized (<=28x28) inputs."""
    pad = 2 if max(input_shape[1:]) <= 28 else 0
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 6, 5, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    head = nn.Sequential(
        nn.Linear(flat_features(features, input_shape, "lenet5"), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return nn.Sequential(features, head)
