"""Model files: safetensors weights with a header that says how to rebuild the model.

The file alone is enough to rebuild: its metadata holds a :class:`ModelSpec` (architecture name and
arguments, data set, normalisation, classes, and free-form ``extra`` such as training settings and
the model's state). A structurally pruned model has fewer channels than its architecture builds;
loading resizes the freshly built model's layers to the stored tensor shapes before copying the
weights, so pruned models round-trip without pickling their module tree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bench.errors import BenchError
from bench.zoo.models import build_model
from common import files
from common.errors import first_line

FORMAT = "advparams.model/1"
_KEY_FORMAT = "advparams.format"
_KEY_SPEC = "advparams.spec"
_KEY_PRUNED = "advparams.pruned"
_KEY_SHAPES = "advparams.shapes"

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class ModelSpec:
    """What a model file needs to rebuild its model and feed it data.

    ``extra`` is free-form JSON: training settings, seed, ``"state"`` (``clean``, ``encrypted``,
    ``decrypted`` or ``attacked``), the data set's path for ``imagefolder``.
    """

    model: str
    model_args: dict[str, Any]
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The spec as JSON; BenchError when ``model_args`` or ``extra`` hold non-JSON values."""
        try:
            return json.dumps(asdict(self), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise BenchError(f"model spec for {self.model!r} is not JSON-serialisable: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse a spec written by :meth:`to_json` (ValueError, KeyError or TypeError when malformed)."""
        d = json.loads(text)
        shape = tuple(int(v) for v in d["input_shape"])
        if len(shape) != 3:
            raise ValueError(f"input_shape must have 3 sizes, got {shape}")
        return cls(
            model=str(d["model"]),
            model_args=dict(d["model_args"]),
            dataset=str(d["dataset"]),
            num_classes=int(d["num_classes"]),
            input_shape=(shape[0], shape[1], shape[2]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            classes=tuple(str(v) for v in d["classes"]),
            extra=dict(d.get("extra", {})),
        )


def save_model(path: str | Path, model: nn.Module, spec: ModelSpec) -> None:
    """Write ``model``'s weights and ``spec`` to ``path`` atomically (an old file stays whole on failure).

    Refuses a model whose tensors are not those of ``spec``'s architecture, since that file could
    not be loaded; tensors whose shapes differ (pruning) are recorded in the metadata.
    """
    target = Path(path)
    spec_json = spec.to_json()
    fresh = _fresh_model(spec, str(target)).state_dict()
    state = model.state_dict()
    if state.keys() != fresh.keys():
        missing, unexpected = sorted(fresh.keys() - state.keys()), sorted(state.keys() - fresh.keys())
        raise BenchError(
            f"cannot save {target}: the model's tensors are not those of model {spec.model!r} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    shapes = {k: list(v.shape) for k, v in state.items() if v.shape != fresh[k].shape}
    metadata = {
        _KEY_FORMAT: FORMAT,
        _KEY_SPEC: spec_json,
        _KEY_PRUNED: json.dumps(bool(shapes)),
        _KEY_SHAPES: json.dumps(shapes),
    }
    # Cloning gives every tensor its own storage: safetensors refuses tied (shared) tensors.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    _atomic_save(target, tensors, metadata)


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a model file, read from its header without loading weights."""
    return _read_header(Path(path))[0]


def read_pruning(path: str | Path) -> dict[str, list[int]]:
    """The stored shapes of tensors that differ from the architecture's (empty: not pruned)."""
    return _read_header(Path(path))[1]


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model from its file alone, in eval mode on ``device``, with its spec."""
    file = Path(path)
    spec, _ = _read_header(file)
    try:
        target = torch.device(device)
    except RuntimeError as e:
        raise BenchError(f"bad device {device!r} for loading {file}: {e}") from e
    try:
        tensors = load_file(file)
    except (OSError, SafetensorError) as e:
        raise BenchError(f"cannot read tensors from model file {file}: {e}") from e
    model = _fresh_model(spec, str(file))
    fit_to_tensors(model, tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise BenchError(f"model file {file} does not fit model {spec.model!r}: {' '.join(lines[1:3])}") from e
    return model.to(target).eval(), spec


def fit_to_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Resize ``model`` in place so each parameter and buffer has the shape and dtype in ``tensors``.

    Conv, Linear, BatchNorm, LayerNorm and GroupNorm layers get their size attributes from the
    stored weights (so a structurally pruned model can be rebuilt); tensors are replaced by empty
    ones of the stored shape and dtype, ready for ``load_state_dict``. Tied parameters stay tied.
    """
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        stored = {k: tensors[prefix + k] for k in own if prefix + k in tensors}
        if any(stored[k].shape != own[k].shape for k in stored):
            _resize_layer(module, {k: tuple(v.shape) for k, v in stored.items()})
    replaced: dict[int, torch.Tensor] = {}
    entries = [(n, t, True) for n, t in model.named_parameters(remove_duplicate=False)]
    entries += [(n, t, False) for n, t in model.named_buffers(remove_duplicate=False)]
    for name, current, is_param in entries:
        stored = tensors.get(name)
        if stored is None or (stored.shape == current.shape and stored.dtype == current.dtype):
            continue
        if id(current) not in replaced:
            empty = torch.empty(stored.shape, dtype=stored.dtype, device=current.device)
            replaced[id(current)] = nn.Parameter(empty, requires_grad=current.requires_grad) if is_param else empty
        owner_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner_name), attr, replaced[id(current)])


def _resize_layer(module: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    """Set a layer's size attributes from its stored tensor shapes, respecting convolution groups."""
    weight = shapes.get("weight")
    if isinstance(module, _CONV) and weight is not None:
        multiplier = module.out_channels // module.groups
        depthwise = module.groups > 1 and module.groups == module.in_channels
        module.out_channels = weight[0]
        if depthwise:
            module.groups = weight[0] // multiplier
        module.in_channels = weight[1] * module.groups
    elif isinstance(module, _CONV_TRANSPOSE) and weight is not None:
        if module.groups > 1 and module.groups == module.in_channels:
            module.groups = weight[0]
        module.in_channels = weight[0]
        module.out_channels = weight[1] * module.groups
    elif isinstance(module, nn.Linear) and weight is not None:
        module.out_features, module.in_features = weight[0], weight[1]
    elif isinstance(module, _BATCH_NORM):
        module.num_features = (shapes.get("running_mean") or weight or (module.num_features,))[0]
    elif isinstance(module, nn.LayerNorm) and weight is not None:
        module.normalized_shape = weight
    elif isinstance(module, nn.GroupNorm) and weight is not None:
        module.num_channels = weight[0]


def _fresh_model(spec: ModelSpec, where: str) -> nn.Module:
    """Build the spec's architecture without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        try:
            return build_model(
                spec.model, num_classes=spec.num_classes, input_shape=spec.input_shape, **spec.model_args
            )
        except BenchError as e:
            raise BenchError(f"{where}: {e}") from e


def _read_header(file: Path) -> tuple[ModelSpec, dict[str, list[int]]]:
    """The spec and pruned shapes of a model file; BenchError naming the file when it is not one."""
    if not file.is_file():
        raise BenchError(f"model file {file} does not exist")
    try:
        with safe_open(file, framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise BenchError(f"{file} is not a safetensors model file ({first_line(e)})") from e
    if meta.get(_KEY_FORMAT) != FORMAT or _KEY_SPEC not in meta:
        raise BenchError(f"{file} has no advparams metadata (format {FORMAT}); was it saved by advparams?")
    try:
        spec = ModelSpec.from_json(meta[_KEY_SPEC])
        shapes = {str(k): [int(d) for d in v] for k, v in json.loads(meta[_KEY_SHAPES]).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BenchError(f"{file} has malformed advparams metadata: {e}") from e
    return spec, shapes


def _atomic_save(target: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the file atomically (readable by other users' jobs: 0644)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(target, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    except OSError as e:
        raise BenchError(f"cannot write model file {target}: {e}") from e
