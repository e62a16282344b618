"""VGG-style networks with batch norm for 32x32 images: a compact one and CIFAR-style VGG-11 and VGG-16."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bench.zoo.models import register_model

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg(cfg: Sequence[int | str], in_channels: int, num_classes: int) -> nn.Sequential:
    """A VGG-style network: 3x3 conv-BN-ReLU per number in ``cfg``, a 2x2 max-pool per ``"M"``,
    then global average pooling and one linear layer."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out = int(item)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
    return nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
    )


@register_model("vgg_compact")
def vgg_compact(*, num_classes: int, input_shape: tuple[int, int, int], width: int = 32) -> nn.Module:
    """A compact VGG with batch norm (width, 2x and 4x width channels in three stages) for 32x32 images."""
    w = width
    return vgg([w, w, "M", 2 * w, 2 * w, "M", 4 * w, 4 * w, "M"], input_shape[0], num_classes)


@register_model("vgg11_bn")
def vgg11_bn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """CIFAR-style VGG-11 with batch norm (five pools take 32x32 to 1x1; a 512-to-classes head)."""
    return vgg(VGG11, input_shape[0], num_classes)


@register_model("vgg16_bn")
def vgg16_bn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """CIFAR-style VGG-16 with batch norm (five pools take 32x32 to 1x1; a 512-to-classes head)."""
    return vgg(VGG16, input_shape[0], num_classes)
