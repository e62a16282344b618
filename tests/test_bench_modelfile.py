"""Model files: round trips for every built-in model, pruned models, dtypes, ties, and bad files."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from model_shapes import NATURAL, importable_module
from safetensors.torch import save_file
from torch import nn

from bench.errors import BenchError
from bench.zoo.modelfile import (
    ModelSpec,
    load_model,
    read_pruning,
    read_spec,
    save_model,
)
from bench.zoo.models import build_model, classifier_name


def spec_for(model: str, shape: tuple[int, int, int], num_classes: int = 10, **model_args: object) -> ModelSpec:
    channels = shape[0]
    return ModelSpec(
        model=model,
        model_args=dict(model_args),
        dataset="digits",
        num_classes=num_classes,
        input_shape=shape,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        classes=tuple(f"c{i}" for i in range(num_classes)),
        extra={"state": "clean", "seed": 3, "train": {"epochs": 2, "lr": 0.1}},
    )


def trained_looking(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """A model whose weights and BN statistics differ from any fresh build's."""
    torch.manual_seed(seed)
    model = build_model(spec.model, num_classes=spec.num_classes, input_shape=spec.input_shape, **spec.model_args)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        model.train()(torch.randn(4, *spec.input_shape))  # moves batch-norm running statistics
    return model.eval()


def assert_same(a: nn.Module, b: nn.Module, shape: tuple[int, int, int]) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    x = torch.randn(3, *shape).to(next(a.parameters()).dtype)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("name", sorted(NATURAL))
def test_round_trip_every_built_in_model(tmp_path: Path, name: str) -> None:
    spec = spec_for(name, NATURAL[name])
    model = trained_looking(spec)
    file = tmp_path / "m.safetensors"
    save_model(file, model, spec)
    loaded, loaded_spec = load_model(file)
    assert loaded_spec == spec and read_spec(file) == spec
    assert not loaded.training and read_pruning(file) == {}
    assert_same(model, loaded, spec.input_shape)


def test_model_args_travel_with_the_file(tmp_path: Path) -> None:
    spec = spec_for("vgg_compact", (3, 32, 32), num_classes=4, width=8)
    save_model(tmp_path / "m.safetensors", trained_looking(spec), spec)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert loaded[3].in_features == 32 and loaded[3].out_features == 4


def prune(model: nn.Module, shape: tuple[int, int, int]) -> nn.Module:
    """Structured pruning of half the channels, the classifier kept whole."""
    head = model.get_submodule(classifier_name(model))
    example = torch.randn(2, *shape)
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(), pruning_ratio=0.5, ignored_layers=[head]
    )
    pruner.step()
    return model.eval()


@pytest.mark.parametrize(
    ("name", "shape"),
    [("cnn", (1, 8, 8)), ("lenet5", (1, 28, 28)), ("vgg_compact", (3, 32, 32)), ("resnet18", (3, 32, 32))],
)
def test_pruned_round_trip(tmp_path: Path, name: str, shape: tuple[int, int, int]) -> None:
    spec = spec_for(name, shape)
    model = prune(trained_looking(spec), shape)
    fresh_params = sum(p.numel() for p in build_model(name, num_classes=10, input_shape=shape).parameters())
    assert sum(p.numel() for p in model.parameters()) < fresh_params
    file = tmp_path / "pruned.safetensors"
    save_model(file, model, spec)
    loaded, _ = load_model(file)
    assert_same(model, loaded, shape)
    shapes = read_pruning(file)
    assert shapes and all(list(model.state_dict()[k].shape) == v for k, v in shapes.items())
    first_conv = next(m for m in loaded.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.out_channels == first_conv.weight.shape[0] < 64
    head = loaded.get_submodule(classifier_name(loaded))
    assert head.out_features == 10 and head.in_features == head.weight.shape[1]


def test_depthwise_pruned_round_trip(tmp_path: Path, user_module: str) -> None:
    spec = spec_for(f"{user_module}:depthwise", (3, 8, 8), num_classes=4)
    model = prune(trained_looking(spec), spec.input_shape)
    assert model[1].groups == model[1].in_channels < 16
    save_model(tmp_path / "dw.safetensors", model, spec)
    loaded, _ = load_model(tmp_path / "dw.safetensors")
    assert loaded[1].groups == model[1].groups
    assert_same(model, loaded, spec.input_shape)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_round_trip_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    spec = spec_for("cnn", (1, 8, 8))
    model = trained_looking(spec).to(dtype)
    save_model(tmp_path / "m.safetensors", model, spec)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert all(p.dtype == dtype for p in loaded.parameters())
    assert_same(model, loaded, spec.input_shape)


USER_MODULE = """
from torch import nn

def tied(num_classes, input_shape):
    c, h, w = input_shape
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, num_classes))
    model[3].weight = model[1].weight if c * h * w == 8 else model[3].weight
    model[4].bias = model[1].bias if num_classes == 8 else model[4].bias
    return model

def shared(num_classes, input_shape):
    c, h, w = input_shape
    layer = nn.Linear(c * h * w, c * h * w)
    return nn.Sequential(nn.Flatten(), layer, nn.ReLU(), layer, nn.Linear(c * h * w, num_classes))

def depthwise(num_classes, input_shape):
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's model module written to tmp_path and importable under a unique name."""
    yield from importable_module(USER_MODULE, tmp_path, monkeypatch, "user_file_models")


def test_shared_layers_stay_shared(tmp_path: Path, user_module: str) -> None:
    spec = spec_for(f"{user_module}:shared", (1, 2, 2), num_classes=3)
    model = trained_looking(spec)
    assert model[1] is model[3]
    save_model(tmp_path / "s.safetensors", model, spec)
    loaded, _ = load_model(tmp_path / "s.safetensors")
    assert loaded[1].weight is loaded[3].weight
    assert_same(model, loaded, spec.input_shape)


def test_tied_parameters_stay_tied_through_a_dtype_change(tmp_path: Path, user_module: str) -> None:
    spec = spec_for(f"{user_module}:tied", (2, 2, 2), num_classes=8)
    model = trained_looking(spec).to(torch.float16)
    assert model[3].weight is model[1].weight and model[4].bias is model[1].bias
    save_model(tmp_path / "t.safetensors", model, spec)
    loaded, _ = load_model(tmp_path / "t.safetensors")
    assert loaded[3].weight is loaded[1].weight and loaded[4].bias is loaded[1].bias
    assert loaded[1].weight.dtype == torch.float16
    assert_same(model, loaded, spec.input_shape)


def test_saving_and_loading_leave_the_random_state_alone(tmp_path: Path) -> None:
    spec = spec_for("cnn", (1, 8, 8))
    model = trained_looking(spec)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    save_model(tmp_path / "m.safetensors", model, spec)
    load_model(tmp_path / "m.safetensors")
    assert torch.equal(before, torch.get_rng_state())


def test_file_is_self_describing(tmp_path: Path) -> None:
    spec = spec_for("mlp", (1, 8, 8), hidden=5)
    save_model(tmp_path / "m.safetensors", trained_looking(spec), spec)
    raw = (tmp_path / "m.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = header["__metadata__"]
    assert meta["advparams.format"] == "advparams.model/1" and meta["advparams.pruned"] == "false"
    assert json.loads(meta["advparams.spec"])["model_args"] == {"hidden": 5}
    assert list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]  # no temporary file left behind


def test_save_refuses_a_model_that_is_not_the_spec_and_keeps_the_old_file(tmp_path: Path) -> None:
    spec = spec_for("cnn", (1, 8, 8))
    file = tmp_path / "m.safetensors"
    save_model(file, trained_looking(spec), spec)
    before = file.read_bytes()
    with pytest.raises(BenchError, match="not those of model 'cnn'") as e:
        save_model(file, build_model("mlp", num_classes=10, input_shape=(1, 8, 8)), spec)
    assert "\n" not in str(e.value)
    bad_extra = ModelSpec(**{**spec.__dict__, "extra": {"when": object()}})
    with pytest.raises(BenchError, match="not JSON-serialisable"):
        save_model(file, trained_looking(spec), bad_extra)
    with pytest.raises(BenchError, match="unknown model 'nope'"):
        save_model(file, trained_looking(spec), ModelSpec(**{**spec.__dict__, "model": "nope"}))
    assert file.read_bytes() == before
    assert list(tmp_path.iterdir()) == [file]


def test_bad_files_are_one_line_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 this is no safetensors file")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    malformed = tmp_path / "malformed.safetensors"
    save_file(
        {"w": torch.zeros(2)},
        str(malformed),
        metadata={"advparams.format": "advparams.model/1", "advparams.spec": "{}", "advparams.shapes": "{}"},
    )
    for file, fragment in [
        (missing, "does not exist"),
        (garbage, "is not a safetensors model file"),
        (plain, "has no advparams metadata"),
        (malformed, "malformed advparams metadata"),
        (tmp_path, "does not exist"),
    ]:
        for read in (read_spec, load_model):
            with pytest.raises(BenchError) as e:
                read(file)
            assert str(file) in str(e.value) and fragment in str(e.value) and "\n" not in str(e.value)


def test_tensors_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    spec = spec_for("mlp", (1, 8, 8))
    file = tmp_path / "m.safetensors"
    save_model(file, trained_looking(spec), spec)
    # the header is intact but one tensor is gone: the file no longer describes its model
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    del tensors["3.bias"]
    save_file(tensors, str(file), metadata=meta)
    with pytest.raises(BenchError) as e:
        load_model(file)
    assert str(file) in str(e.value) and "3.bias" in str(e.value) and "\n" not in str(e.value)


def test_load_needs_the_users_module(tmp_path: Path, user_module: str) -> None:
    spec = spec_for(f"{user_module}:shared", (1, 2, 2), num_classes=3)
    file = tmp_path / "s.safetensors"
    save_model(file, trained_looking(spec), spec)
    sys.modules.pop(user_module)
    sys.path.remove(str(tmp_path))
    with pytest.raises(BenchError) as e:
        load_model(file)
    assert str(file) in str(e.value) and "cannot import module" in str(e.value)
