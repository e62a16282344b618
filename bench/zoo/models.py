"""Models by name: a registry of architectures, any torchvision model, or a user's factory.

A model is a factory, ``factory(num_classes=..., input_shape=(C, H, W), **own arguments) -> nn.Module``,
registered with :func:`register_model` in a module of ``bench/zoo/architectures/`` (found without an import
list) or in an outside package that declares it as an entry point in the ``advparams.models`` group
(``NAME = "module:factory"``). A registered factory gives each of its own arguments a default, so every
model can be built from its name alone. Names resolve as: ``torchvision:NAME`` (any torchvision
classification model, untrained), ``MODULE:FACTORY`` (a user's function, imported on use), else a
registered name. Every model is tried once on a dummy input of ``input_shape`` at construction, so an
architecture that cannot take the data set's images is refused with one line instead of failing
mid-training. Initialisation draws from torch's global generator, so ``torch.manual_seed`` before
``build_model`` makes it deterministic.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.errors import BenchError
from common.errors import first_line
from common.registry import Registry

Factory = Callable[..., nn.Module]
"""Builds a model: ``factory(num_classes=..., input_shape=(C, H, W), **kwargs) -> nn.Module``."""

TORCHVISION_PREFIX = "torchvision:"
_GIVEN = ("num_classes", "input_shape")  # what build_model passes to every factory


def _check_factory(name: str, factory: Factory) -> Factory:
    """A factory that takes ``num_classes`` and ``input_shape`` and has a default for every other argument."""
    if not callable(factory):
        raise BenchError(f"model {name!r}: {factory!r} is not a factory function")
    try:
        inspect.signature(factory).bind(num_classes=2, input_shape=(1, 1, 1))
    except TypeError as e:
        raise BenchError(
            f"model {name!r}: its factory must take num_classes and input_shape and give its own arguments "
            f"defaults ({e})"
        ) from None
    except ValueError:  # a builtin or C callable has no signature: its call will say what is wrong
        pass
    return factory


MODELS: Registry[Factory] = Registry(
    "model", builtins="bench.zoo.architectures", group="advparams.models", error=BenchError, check=_check_factory
)


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering a factory as model ``name``."""
    return MODELS.register(name)


def model_arguments(factory: Factory) -> dict[str, Any]:
    """A factory's own keyword arguments (all but ``num_classes`` and ``input_shape``) and their defaults."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {p.name: p.default for p in parameters if p.name not in _GIVEN and p.kind not in variadic}


def build_model(name: str, *, num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    """Build an untrained model by name for ``num_classes`` classes and inputs of ``input_shape``."""
    if num_classes < 2:
        raise BenchError(f"model {name!r} needs at least 2 classes, got num_classes={num_classes}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise BenchError(f"model {name!r} needs input_shape (C, H, W) of positive sizes, got {input_shape!r}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    if name.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(name, num_classes, kwargs)
    elif ":" in name:
        model = _user_model(name, num_classes, shape, kwargs)
    else:
        model = _registered_model(name, num_classes, shape, kwargs)
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


def _registered_model(name: str, num_classes: int, shape: tuple[int, int, int], kwargs: dict[str, Any]) -> nn.Module:
    try:
        factory = MODELS.get(name)
    except BenchError as e:
        raise BenchError(f"{e}; or {TORCHVISION_PREFIX}NAME, or MODULE:FACTORY") from None
    _check_arguments(name, factory, kwargs)
    try:
        return factory(num_classes=num_classes, input_shape=shape, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise BenchError(f"model {name!r} cannot be built with {args or 'no arguments'}: {first_line(e)}") from None


def _check_arguments(name: str, factory: Factory, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments the factory does not take, naming them and the ones it does."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: its call will say what is wrong
        return
    try:
        signature.bind(num_classes=2, input_shape=(1, 1, 1), **kwargs)
    except TypeError as e:
        accepted = [p for p in signature.parameters if p not in _GIVEN]
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
        raise BenchError(f"model {name!r} cannot take inputs of shape {shape}: {first_line(e)}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BenchError(f"model {name!r} gives output {got} for one input, expected (1, {num_classes})")


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
        raise BenchError(f"cannot build model {name!r}: {first_line(e)}") from e


def _user_model(name: str, num_classes: int, shape: tuple[int, int, int], kwargs: dict[str, Any]) -> nn.Module:
    """A user's model from ``MODULE:FACTORY``."""
    module_name, _, factory_name = name.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user's module may fail on import in any way
        raise BenchError(f"model {name!r}: cannot import module {module_name!r}: {first_line(e)}") from e
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise BenchError(f"model {name!r}: module {module_name!r} has no callable {factory_name!r}")
    _check_arguments(name, factory, kwargs)
    try:
        model = factory(num_classes=num_classes, input_shape=shape, **kwargs)
    except Exception as e:  # a user's code may fail in any way
        raise BenchError(f"model {name!r}: {factory_name}() failed: {first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise BenchError(f"model {name!r}: {factory_name}() returned {type(model).__name__}, not a torch nn.Module")
    return model
