"""Models by name: a registry of built-in architectures, any torchvision model, or a user's factory.

Names resolve in this order: a registered name (``MODELS``), ``torchvision:NAME`` (any torchvision
classification model, untrained), then ``MODULE:FACTORY`` (a user's function, called with
``num_classes=``, ``input_shape=`` and the keyword arguments). Every model is tried once on a dummy
input of ``input_shape`` at construction, so an architecture that cannot take the data set's images
is refused with one line instead of failing mid-training. Initialisation draws from torch's global
generator, so ``torch.manual_seed`` before ``build_model`` makes it deterministic.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bench.errors import BenchError

Factory = Callable[..., nn.Module]
"""Builds a model: ``factory(num_classes=..., input_shape=(C, H, W), **kwargs) -> nn.Module``."""

MODELS: dict[str, Factory] = {}
TORCHVISION_PREFIX = "torchvision:"


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator adding a factory to ``MODELS`` under ``name``."""

    def register(factory: Factory) -> Factory:
        if name in MODELS or ":" in name:
            raise ValueError(f"model name {name!r} is taken or contains ':'")
        MODELS[name] = factory
        return factory

    return register


def build_model(name: str, *, num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    """Build an untrained model by name for ``num_classes`` classes and inputs of ``input_shape``."""
    if num_classes < 2:
        raise BenchError(f"model {name!r} needs at least 2 classes, got num_classes={num_classes}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise BenchError(f"model {name!r} needs input_shape (C, H, W) of positive sizes, got {input_shape!r}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    if name in MODELS:
        factory = MODELS[name]
        _check_arguments(name, factory, kwargs)
        try:
            model = factory(num_classes=num_classes, input_shape=shape, **kwargs)
        except (TypeError, ValueError, RuntimeError) as e:
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise BenchError(f"model {name!r} cannot be built with {args or 'no arguments'}: {_first_line(e)}") from None
    elif name.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(name, num_classes, kwargs)
    elif ":" in name:
        model = _user_model(name, num_classes, shape, kwargs)
    else:
        raise BenchError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}, "
            f"{TORCHVISION_PREFIX}NAME or MODULE:FACTORY"
        )
    _check_forward(name, model, shape, num_classes)
    return model


def classifier_name(model: nn.Module) -> str:
    """The qualified name of the model's final classifier: its last ``nn.Linear`` module.

    Pruning keeps this layer whole (its outputs are the classes).
    """
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise BenchError(f"model {type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def _check_arguments(name: str, factory: Factory, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments the factory does not take, naming them and the ones it does."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: its call will say what is wrong
        return
    try:
        signature.bind(num_classes=2, input_shape=(1, 1, 1), **kwargs)
    except TypeError as e:
        accepted = [p for p in signature.parameters if p not in ("num_classes", "input_shape")]
        raise BenchError(
            f"model {name!r} cannot take num_classes, input_shape and arguments {sorted(kwargs)} ({e}); "
            f"its own arguments: {', '.join(accepted) or 'none'}"
        ) from e


def _check_forward(name: str, model: nn.Module, shape: tuple[int, int, int], num_classes: int) -> None:
    """Run one dummy input through the model (eval mode, no gradients) and check the output's shape."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except Exception as e:  # any architecture's shape check (RuntimeError, AssertionError, ...)
        raise BenchError(f"model {name!r} cannot take inputs of shape {shape}: {_first_line(e)}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BenchError(f"model {name!r} gives output {got} for one input, expected (1, {num_classes})")


def _first_line(e: BaseException) -> str:
    """An exception's message, first line only (error messages here are one line)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _flat_features(features: nn.Module, input_shape: tuple[int, int, int], name: str) -> int:
    """How many features ``features`` gives for one input of ``input_shape`` (sizes a linear head)."""
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *input_shape)).numel())
    except RuntimeError as e:
        raise BenchError(f"model {name!r} cannot take inputs of shape {input_shape}: {_first_line(e)}") from e


def _torchvision_model(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """Any torchvision classification model, untrained."""
    import torchvision

    arch = name[len(TORCHVISION_PREFIX) :]
    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise BenchError(f"unknown torchvision model {arch!r}; see torchvision.models.list_models() (e.g. resnet18)")
    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise BenchError(f"cannot build model {name!r}: {_first_line(e)}") from e


def _user_model(name: str, num_classes: int, shape: tuple[int, int, int], kwargs: dict[str, Any]) -> nn.Module:
    """A user's model from ``MODULE:FACTORY``."""
    module_name, _, factory_name = name.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user's module may fail on import in any way
        raise BenchError(f"model {name!r}: cannot import module {module_name!r}: {_first_line(e)}") from e
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise BenchError(f"model {name!r}: module {module_name!r} has no callable {factory_name!r}")
    _check_arguments(name, factory, kwargs)
    try:
        model = factory(num_classes=num_classes, input_shape=shape, **kwargs)
    except Exception as e:  # a user's code may fail in any way
        raise BenchError(f"model {name!r}: {factory_name}() failed: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise BenchError(f"model {name!r}: {factory_name}() returned {type(model).__name__}, not a torch nn.Module")
    return model


# --- built-in architectures --------------------------------------------------------------------


@register_model("mlp")
def mlp(*, num_classes: int, input_shape: tuple[int, int, int], hidden: int = 64) -> nn.Module:
    """One hidden layer on flattened pixels: the smallest model, for ``digits``."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@register_model("cnn")
def cnn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Two 3x3 convolutions (16, 32 channels), one max-pool and a linear head: small, for ``digits``."""
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(_flat_features(features, input_shape, "cnn"), num_classes))


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
        nn.Linear(_flat_features(features, input_shape, "lenet5"), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return nn.Sequential(features, head)


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
    """A compact VGG with batch norm (``width``, 2x, 4x channels in three stages) for 32x32 images."""
    w = width
    return vgg([w, w, "M", 2 * w, 2 * w, "M", 4 * w, 4 * w, "M"], input_shape[0], num_classes)


VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@register_model("vgg11_bn")
def vgg11_bn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """CIFAR-style VGG-11 with batch norm (five pools take 32x32 to 1x1; a 512-to-classes head)."""
    return vgg(VGG11, input_shape[0], num_classes)


@register_model("vgg16_bn")
def vgg16_bn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """CIFAR-style VGG-16 with batch norm (five pools take 32x32 to 1x1; a 512-to-classes head)."""
    return vgg(VGG16, input_shape[0], num_classes)


@register_model("resnet18")
def resnet18(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """ResNet-18 for 32x32 images: torchvision's, with a 3x3 stride-1 stem and no max-pool."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
