"""Mixed precision and channels_last (common.acceleration): what each setting turns on where, and that the
training and evaluation loops really run under it without leaving a trace on the weights."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench.sweep.jobs import JobContext, run_train
from bench.sweep.plan import TrainJob
from bench.zoo.data import load_dataset
from bench.zoo.modelfile import load_model
from bench.zoo.models import build_model
from bench.zoo.workflow import DataOptions
from common import acceleration
from common.acceleration import Acceleration
from common.training import accuracy, train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def _default_setting() -> Iterator[None]:
    yield
    acceleration.use(Acceleration())


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_turns_both_on_for_cuda_only(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    auto = Acceleration()
    assert auto.amp_dtype(CUDA) == (torch.bfloat16 if bf16 else torch.float16) and auto.uses_channels_last(CUDA)
    assert auto.amp_dtype(CPU) is None and not auto.uses_channels_last(CPU)
    on, off = Acceleration("on", "on"), Acceleration("off", "off")
    assert on.amp_dtype(CPU) == torch.bfloat16 and on.uses_channels_last(CPU)
    assert off.amp_dtype(CUDA) is None and not off.uses_channels_last(CUDA)
    acceleration.use(Acceleration("auto", "auto"))
    assert acceleration.grad_scaler(CPU).is_enabled() is False


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="amp must be one of auto, on, off, got 'fast'"):
        Acceleration(amp="fast")  # type: ignore[arg-type]


def _digits_cnn(setting: Acceleration) -> tuple[torch.nn.Module, float]:
    acceleration.use(setting)
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=ds.num_classes, input_shape=ds.input_shape)
    train(model, ds.train, epochs=4, lr=0.05, batch_size=64, seed=0)
    return model, accuracy(model, ds.test)


def test_amp_and_channels_last_train_on_a_cpu_and_leave_plain_float32_weights(tmp_path: Path) -> None:
    plain, plain_acc = _digits_cnn(Acceleration("off", "off"))
    fast, fast_acc = _digits_cnn(Acceleration("on", "on"))
    assert fast_acc > 0.85 and abs(fast_acc - plain_acc) < 0.05
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, fast.state_dict()[k])]
    assert changed, "bfloat16 autocast must change the arithmetic, so the weights"
    for name, value in fast.state_dict().items():
        assert value.dtype == plain.state_dict()[name].dtype and value.is_contiguous(), name
    save_file(fast.state_dict(), str(tmp_path / "fast.safetensors"))  # refuses non-contiguous tensors
    ds = load_dataset("digits")
    train(fast, ds.train, epochs=1, lr=0.01, batch_size=64)  # evaluated weights can still be trained
    assert accuracy(fast, ds.test) > 0.85


def test_the_same_setting_gives_the_same_weights() -> None:
    first, _ = _digits_cnn(Acceleration("on", "on"))
    again, _ = _digits_cnn(Acceleration("on", "on"))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())


def test_a_job_uses_its_setting_and_tags_what_it_used(tmp_path: Path) -> None:
    job = TrainJob("digits", None, "cnn", {}, {"epochs": 1, "lr": 0.05, "batch_size": 64}, seed=0)
    default = run_train(job, JobContext(tmp_path / "a", DataOptions()))
    assert (default.tags["amp"], default.tags["channels_last"]) == ("off", "off")
    forced = run_train(job, JobContext(tmp_path / "b", DataOptions(), acceleration=Acceleration("on", "on")))
    assert (forced.tags["amp"], forced.tags["channels_last"]) == ("bfloat16", "on")
    [a], [b] = ((tmp_path / f / "baselines").glob("*.safetensors") for f in ("a", "b"))
    assert a.name == b.name and a.read_bytes() != b.read_bytes(), "the setting is not part of the job id, but it ran"
    assert [(spec.extra["amp"], spec.extra["channels_last"]) for spec in (load_model(a)[1], load_model(b)[1])] == [
        ("off", "off"), ("bfloat16", "on")], "a baseline file records what it was trained with"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
def test_auto_on_cuda_trains_with_autocast(tmp_path: Path) -> None:
    job = TrainJob("digits", None, "cnn", {}, {"epochs": 2, "lr": 0.05, "batch_size": 64}, seed=0)
    result = run_train(job, JobContext(tmp_path, DataOptions()))
    assert result.tags["device"].startswith("cuda:") and result.tags["amp"] in ("bfloat16", "float16")
    assert result.tags["channels_last"] == "on" and result.metrics["acc_clean"] > 0.8


def test_an_evaluation_during_training_keeps_the_layout() -> None:
    acceleration.use(Acceleration("off", "on"))
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=ds.num_classes, input_shape=ds.input_shape)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # in_channels > 1: layouts differ
    seen = []

    def evaluate(epoch: int, loss: float) -> None:  # as fit() does with its Optuna report
        accuracy(model, ds.test)
        seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous())

    train(model, ds.train, epochs=3, lr=0.05, batch_size=64, on_epoch=evaluate)
    assert seen == [True, True, True] and conv.weight.is_contiguous()


def test_steps_the_float16_scaler_skips_leave_the_schedule_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scale far too large overflows float16 for the first ~25 steps; each is skipped, schedule included."""
    monkeypatch.setattr(Acceleration, "amp_dtype", lambda self, device: torch.float16)
    monkeypatch.setattr(acceleration, "grad_scaler", lambda device: torch.amp.GradScaler(device.type, init_scale=2.0**40))
    acceleration.use(Acceleration("on", "off"))
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=ds.num_classes, input_shape=ds.input_shape)
    losses: list[float] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, ds.train, epochs=4, lr=0.05, batch_size=64, on_epoch=lambda e, loss: losses.append(loss))
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert all(math.isfinite(v) for v in losses) and accuracy(model, ds.test) > 0.8
