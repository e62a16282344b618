"""ResNet-18 adapted to 32x32 images."""

from __future__ import annotations

from torch import nn

from bench.zoo.models import register_model


@register_model("resnet18")
def resnet18(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """ResNet-18 for 32x32 images: torchvision's, with a 3x3 stride-1 stem and no max-pool."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
