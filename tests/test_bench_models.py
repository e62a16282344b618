"""Models by name: the registry, built-ins at their natural input sizes, torchvision, user factories, bad names."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from model_shapes import NATURAL, importable_module
from torch import nn

from bench.errors import BenchError
from bench.zoo.models import (
    MODELS,
    build_model,
    classifier_name,
    model_arguments,
    register_model,
)


def test_every_registered_model_has_a_natural_size_here() -> None:
    assert set(MODELS) == set(NATURAL)


@pytest.mark.parametrize("name", MODELS.names())
def test_builds_and_classifies_at_natural_size(name: str) -> None:
    shape = NATURAL[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, input_shape=shape)
    x = torch.randn(3, *shape)
    model.train()
    assert model(x).shape == (3, 7)
    head = model.get_submodule(classifier_name(model))
    assert isinstance(head, nn.Linear) and head.out_features == 7
    with torch.no_grad():
        assert model.eval()(x).shape == (3, 7)


def test_init_is_deterministic_given_the_seed() -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model("vgg_compact", num_classes=10, input_shape=(3, 32, 32), width=8).state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_lenet5_is_the_classic_one() -> None:
    mnist = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    cifar = build_model("lenet5", num_classes=10, input_shape=(3, 32, 32))
    # 156 + 2,416 + 48,120 + 10,164 + 850 parameters: LeNet-5 with a padded first convolution on 28x28
    assert sum(p.numel() for p in mnist.parameters()) == 61706
    assert mnist[0][0].padding == (2, 2) and cifar[0][0].padding == (0, 0)
    assert cifar[1][0].in_features == 16 * 5 * 5


def test_model_arguments() -> None:
    assert build_model("mlp", num_classes=3, input_shape=(1, 8, 8), hidden=5)[1].out_features == 5
    wide = build_model("vgg_compact", num_classes=3, input_shape=(3, 32, 32), width=8)
    assert classifier_name(wide) == "3" and wide[3].in_features == 32
    with pytest.raises(BenchError, match=r"'mlp'.*\['width'\].*hidden"):
        build_model("mlp", num_classes=3, input_shape=(1, 8, 8), width=5)


def test_cnn_sizes_its_head_for_any_input() -> None:
    for shape in [(1, 8, 8), (3, 32, 32), (2, 9, 13)]:
        model = build_model("cnn", num_classes=4, input_shape=shape)
        assert model(torch.zeros(2, *shape)).shape == (2, 4)


def test_resnet18_has_the_cifar_stem() -> None:
    model = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity) and classifier_name(model) == "fc"


def test_torchvision_models_by_name() -> None:
    model = build_model("torchvision:mobilenet_v3_small", num_classes=5, input_shape=(3, 32, 32))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert classifier_name(model) == "classifier.3"


@pytest.mark.parametrize(
    ("name", "shape", "fragment"),
    [
        ("resnet", (3, 32, 32), "unknown model 'resnet'; registered: cnn, lenet5, mlp"),
        ("torchvision:resnet1", (3, 32, 32), "unknown torchvision model 'resnet1'"),
        ("vgg11_bn", (1, 28, 28), "'vgg11_bn' cannot take inputs of shape (1, 28, 28)"),
        ("lenet5", (1, 8, 8), "'lenet5' cannot take inputs of shape (1, 8, 8)"),
        ("torchvision:vit_b_16", (3, 32, 32), "'torchvision:vit_b_16' cannot take inputs"),
        ("no_such_module_xyz:build", (3, 32, 32), "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_names_and_shapes_are_one_line(name: str, shape: tuple[int, int, int], fragment: str) -> None:
    with pytest.raises(BenchError) as e:
        build_model(name, num_classes=10, input_shape=shape)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_bad_class_count_and_shape() -> None:
    with pytest.raises(BenchError, match="at least 2 classes"):
        build_model("mlp", num_classes=1, input_shape=(1, 8, 8))
    with pytest.raises(BenchError, match="input_shape"):
        build_model("mlp", num_classes=2, input_shape=(8, 8))  # type: ignore[arg-type]


USER_MODULE = """
from torch import nn

def build(num_classes, input_shape, hidden=4):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.Linear(hidden, num_classes))

def not_a_model(num_classes, input_shape):
    return "a string"

def wrong_output(num_classes, input_shape):
    return nn.Flatten()
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's model module written to tmp_path and importable under a unique name."""
    yield from importable_module(USER_MODULE, tmp_path, monkeypatch, "user_models")


def test_user_factory(user_module: str) -> None:
    model = build_model(f"{user_module}:build", num_classes=3, input_shape=(2, 4, 4), hidden=6)
    assert model(torch.zeros(1, 2, 4, 4)).shape == (1, 3) and model[1].out_features == 6
    assert classifier_name(model) == "2"


@pytest.mark.parametrize(
    ("factory", "kwargs", "fragment"),
    [
        ("not_a_model", {}, "returned str, not a torch nn.Module"),
        ("wrong_output", {}, "gives output (1, 32) for one input, expected (1, 3)"),
        ("missing", {}, "has no callable 'missing'"),
        ("build", {"depth": 2}, "['depth']"),
    ],
)
def test_user_factory_problems(user_module: str, factory: str, kwargs: dict[str, int], fragment: str) -> None:
    with pytest.raises(BenchError) as e:
        build_model(f"{user_module}:{factory}", num_classes=3, input_shape=(2, 4, 4), **kwargs)
    assert fragment in str(e.value) and user_module in str(e.value)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_says_what_it_is(name: str) -> None:
    factory = MODELS.get(name)
    assert len(factory.__doc__ or "") > 20  # its first line is what `advparams list` shows
    json.dumps(model_arguments(factory))  # and its arguments, also as JSON


def test_model_arguments_are_the_factory_defaults() -> None:
    assert model_arguments(MODELS.get("mlp")) == {"hidden": 64}
    assert model_arguments(MODELS.get("vgg_compact")) == {"width": 32}
    assert model_arguments(MODELS.get("cnn")) == {}


@pytest.fixture
def registered() -> Iterator[None]:
    """Models a test registers are removed from the registry afterwards."""
    before = set(MODELS)
    yield
    for name in set(MODELS) - before:
        MODELS.remove(name)


USER_REGISTERED = """
from torch import nn

from bench.zoo.models import register_model


@register_model("linear")
def linear(*, num_classes, input_shape, bias=True):
    \"\"\"One linear layer on flattened pixels.\"\"\"
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes, bias=bias))


def plain(num_classes, input_shape, hidden=3):
    \"\"\"Registered by an entry point alone.\"\"\"
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.Linear(hidden, num_classes))
"""


def test_a_user_model_is_one_decorated_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered: None
) -> None:
    for module in importable_module(USER_REGISTERED, tmp_path, monkeypatch, "user_registered"):
        importlib.import_module(module)
        model = build_model("linear", num_classes=2, input_shape=(1, 2, 2), bias=False)
        assert model[1].in_features == 4 and model[1].bias is None
        assert model_arguments(MODELS.get("linear")) == {"bias": True}

        points = [
            importlib.metadata.EntryPoint("tiny", f"{module}:plain", MODELS.group),
            importlib.metadata.EntryPoint("linear", f"{module}:linear", MODELS.group),  # its decorator's, kept
        ]
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == MODELS.group else [])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a plugin that is not loaded warns
            MODELS.reload_plugins()
        assert build_model("tiny", num_classes=2, input_shape=(1, 2, 2))[1].out_features == 3

    MODELS.remove("linear")
    with pytest.raises(BenchError, match="unknown model 'linear'"):
        build_model("linear", num_classes=2, input_shape=(1, 2, 2))


def flat(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    return nn.Flatten()


def needs_depth(*, num_classes: int, input_shape: tuple[int, int, int], depth: int) -> nn.Module:
    return nn.Flatten()


@pytest.mark.parametrize(
    ("name", "factory", "fragment"),
    [
        ("mlp", flat, "model name 'mlp' is already registered"),
        ("deep", needs_depth, "model 'deep': its factory must take num_classes and input_shape and give its own "
                              "arguments defaults (missing a required argument: 'depth')"),
        ("deep", lambda num_classes: nn.Flatten(), "unexpected keyword argument 'input_shape'"),
        ("deep", "resnet18", "model 'deep': 'resnet18' is not a factory function"),
        ("my:net", flat, "model name 'my:net' must be a non-empty string without ':'"),
    ],
)
def test_registration_refusals(registered: None, name: str, factory: object, fragment: str) -> None:
    with pytest.raises(BenchError) as e:
        register_model(name)(factory)  # type: ignore[arg-type]
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert name == "mlp" or name not in MODELS


def test_classifier_name_needs_a_linear_layer() -> None:
    with pytest.raises(BenchError, match="no nn.Linear"):
        classifier_name(nn.Sequential(nn.Conv2d(1, 2, 1)))
