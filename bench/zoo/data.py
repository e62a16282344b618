"""Image-classification data sets by name: a registry of loaders, each split decoded once, cached, normalised.

A data set is one function registered with :func:`register_dataset`, in a module of ``bench/zoo/datasets/``
(found without an import list) or in an outside package that declares it as an entry point in the
``advparams.datasets`` group (``NAME = "module:function"``). Asked for one split (a :class:`SplitRequest`),
the function returns it as :class:`Images`: ``uint8`` images [N,C,H,W], labels, class names and the pixel
value that means full scale. Everything else is done here, once for every data set:

- each decoded split is cached as a safetensors file, so later calls, other processes and other jobs skip
  decoding (60,000 CIFAR-10 JPEGs take seconds, not minutes, but every sweep job would pay them);
- both splits are normalised to ``float32`` with the training split's per-channel mean and standard
  deviation (which the cache also stores), and memoised per process.

A whole data set, for example (``advparams list`` shows its docstring's first line)::

    @register_dataset("stripes")
    def stripes(request: SplitRequest) -> Images:
        \"\"\"Horizontal or vertical stripes, 6x6 grey.\"\"\"
        labels = torch.arange(40 if request.split == "train" else 20) % 2
        rows = (torch.arange(6) % 2 * 255).view(6, 1).expand(6, 6)
        images = torch.stack([rows if y == 0 else rows.T for y in labels]).unsqueeze(1)
        return Images(images.to(torch.uint8), labels, ("horizontal", "vertical"))
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from bench.errors import BenchError
from common import files
from common.registry import Registry, summary

SPLITS: tuple[str, ...] = ("train", "test")
DATA_ROOT_ENV = "ADVPARAMS_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("~/.cache/advparams/data")
CACHE_SUBDIR = "advparams-cache"
CACHE_FORMAT = 1  # bump when the cached layout or decoding changes; old cache files are then ignored
STD_FLOOR = 1e-6  # a constant channel would otherwise divide by zero when normalising

Progress = Callable[[str, int, int], None]
"""Decoding progress: called with (what is being decoded, images done, images in total)."""


@dataclass(frozen=True)
class SplitRequest:
    """What a data set's loader is asked for: one split, and where to find it."""

    split: str  # "train", or "test": the official test split every accuracy uses
    root: Path  # the data root
    download: bool  # whether a loader may fetch missing files
    path: Path | None  # the data set's own folder, for a data set that needs one (else None)
    image_size: tuple[int, int]  # (height, width), for a data set whose images have no fixed size
    progress: Progress | None  # where to report decoding progress, if anywhere


@dataclass(frozen=True)
class Images:
    """One split as a loader returns it: ``uint8`` images [N,C,H,W] whose full scale is ``max_value``,
    labels 0..K-1 and the K class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: Sequence[str]
    max_value: float = 255.0


Loader = Callable[[SplitRequest], Images]
CacheKey = Callable[[SplitRequest], str]


@dataclass(frozen=True)
class DataSetSource:
    """A registered data set: its loader, and whether it needs a path and how its splits are cached.

    ``path`` says what the required path names (None: the data set takes no path). ``cache`` is True to
    cache each split as ``<name>-<split>-v<CACHE_FORMAT>``, False never to cache (a data set quicker to
    decode than to read), or a function giving the key of a request (one that depends on its files).
    """

    name: str
    load: Loader
    summary: str  # the first line of the loader's docstring
    path: str | None = None
    cache: bool | CacheKey = True

    @property
    def needs_path(self) -> bool:
        return self.path is not None

    def cache_key(self, request: SplitRequest) -> str | None:
        """The name of the request's cache file (without suffix), or None when it is not cached."""
        if self.cache is True:
            return f"{self.name}-{request.split}-v{CACHE_FORMAT}"
        return self.cache(request) if self.cache else None


def register_dataset(
    name: str, *, path: str | None = None, cache: bool | CacheKey = True
) -> Callable[[Loader], Loader]:
    """Decorator registering a loader as data set ``name`` (see :class:`DataSetSource` for the options)."""

    def register(load: Loader) -> Loader:
        DATASETS.add(name, DataSetSource(name, load, summary(load), path, cache))
        return load

    return register


def _as_source(name: str, thing: object) -> DataSetSource:
    """What is registered, as a DataSetSource: an entry point may name a plain loader function, or one whose
    module's decorator registered it already (that registration, with its options, is then kept)."""
    if isinstance(thing, DataSetSource):
        if thing.name != name:
            raise BenchError(f"data set {thing.name!r} cannot be registered as {name!r}")
        return thing
    if not callable(thing):
        raise BenchError(f"data set {name!r}: {thing!r} is not a loader function")
    registered = next((s for _, s in DATASETS.items() if s.load is thing), None)
    if registered is not None and registered.name != name:
        raise BenchError(f"data set {name!r} names the loader registered as {registered.name!r}")
    return registered or DataSetSource(name, thing, summary(thing))


DATASETS: Registry[DataSetSource] = Registry(
    "data set", builtins="bench.zoo.datasets", group="advparams.datasets", error=BenchError, check=_as_source
)


@dataclass(frozen=True)
class DataSet:
    """A data set decoded and normalised; ``test`` is the official test split every accuracy uses."""

    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    """Disjoint shares of a training set: the owner's samples and the attacker's train/val parts."""

    owner: TensorDataset
    attacker_train: TensorDataset
    attacker_val: TensorDataset


@dataclass(frozen=True)
class _Decoded:
    """One split as decoded, with its per-channel statistics on the [0, 1] scale (what the cache holds)."""

    data: Images
    mean: tuple[float, ...]
    std: tuple[float, ...]


_MEMO: dict[tuple[object, ...], DataSet] = {}


def default_data_root() -> Path:
    """The folder data sets are read from: ``$ADVPARAMS_DATA_ROOT``, else ``~/.cache/advparams/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env if env else DEFAULT_DATA_ROOT).expanduser().resolve()


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    cache_dir: str | Path | None = None,
    path: str | Path | None = None,
    image_size: tuple[int, int] = (32, 32),
    progress: Progress | None = None,
) -> DataSet:
    """Load a data set by name, decoding it only if no cache file holds it yet.

    ``root`` defaults to :func:`default_data_root`; ``cache_dir`` to ``<root>/advparams-cache``;
    ``path`` names the folder of a data set that needs one (``imagefolder``), and only of such a data
    set; ``image_size`` (height, width) is for data sets whose images have no fixed size. The result is
    memoised per process: treat its tensors as read-only.
    """
    source = DATASETS.get(name)
    if source.needs_path != (path is not None):
        raise BenchError(
            f"data set {name!r} needs a path: {source.path}"
            if path is None
            else f"a path is only for a data set that needs one "
            f"({', '.join(n for n, s in DATASETS.items() if s.needs_path)}), not {name!r}"
        )
    size = (int(image_size[0]), int(image_size[1]))
    if min(size) < 1:
        raise BenchError(f"image_size must be positive, got {image_size!r}")
    root_dir = Path(root).expanduser().resolve() if root is not None else default_data_root()
    cache = Path(cache_dir).expanduser().resolve() if cache_dir is not None else root_dir / CACHE_SUBDIR
    folder = Path(path).expanduser().resolve() if path is not None else None
    key = (name, root_dir, download, cache, folder, size)
    if key not in _MEMO:
        splits = {
            split: _cached(source, SplitRequest(split, root_dir, download, folder, size, progress), cache)
            for split in SPLITS
        }
        _MEMO[key] = _assemble(name, splits["train"], splits["test"])
    return _MEMO[key]


def make_splits(
    ds: DataSet,
    *,
    seed: int,
    owner_samples: int = 512,
    attacker_fraction: float = 0.1,
    attacker_val_fraction: float = 0.2,
) -> Splits:
    """Draw the owner's and the attacker's disjoint shares from the training set, by seed.

    One seeded permutation of the training set is cut from both ends: the attacker's share from
    the front, the owner's samples from the back. So for one seed the attacker's data does not
    depend on ``owner_samples``, and a smaller ``attacker_fraction`` gives a subset of a larger
    one, which keeps sweeps over either comparable. The attacker's share is cut again into its
    validation part (front) and training part (rest), each at least one sample.
    """
    fractions = {"attacker_fraction": attacker_fraction, "attacker_val_fraction": attacker_val_fraction}
    for label, fraction in fractions.items():
        if not 0.0 < fraction < 1.0:
            raise BenchError(f"{label} must lie strictly between 0 and 1, got {fraction}")
    n = len(ds.train)
    n_attacker = round(attacker_fraction * n)
    if owner_samples < 1 or n_attacker < 2 or owner_samples + n_attacker > n:
        raise BenchError(
            f"training set of {ds.name!r} has {n} samples, too few for {owner_samples} owner samples "
            f"and an attacker share of {attacker_fraction} ({n_attacker} samples, at least 2 needed)"
        )
    n_val = min(max(1, round(attacker_val_fraction * n_attacker)), n_attacker - 1)
    order = _order(n, seed)
    return Splits(
        owner=_subset(ds.train, order[n - owner_samples :]),
        attacker_train=_subset(ds.train, order[n_val:n_attacker]),
        attacker_val=_subset(ds.train, order[:n_val]),
    )


def owner_split(ds: DataSet, *, seed: int, owner_samples: int = 512) -> TensorDataset:
    """The owner's samples alone: the same ones :func:`make_splits` gives for this seed."""
    n = len(ds.train)
    if not 1 <= owner_samples < n:
        raise BenchError(f"training set of {ds.name!r} has {n} samples, too few for {owner_samples} owner samples")
    return _subset(ds.train, _order(n, seed)[n - owner_samples :])


def _order(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _subset(data: TensorDataset, index: torch.Tensor) -> TensorDataset:
    """The rows ``index`` of a tensor data set, copied."""
    return TensorDataset(*(t[index] for t in data.tensors))


def _assemble(name: str, train: _Decoded, test: _Decoded) -> DataSet:
    """Normalise both splits with the training set's statistics."""
    a, b = train.data, test.data
    if a.classes != b.classes or a.images.shape[1:] != b.images.shape[1:]:
        raise BenchError(
            f"data set {name!r}: train and test splits differ in classes or image shape "
            f"({len(a.classes)} vs {len(b.classes)} classes, "
            f"{tuple(a.images.shape[1:])} vs {tuple(b.images.shape[1:])})"
        )
    c, h, w = (int(d) for d in a.images.shape[1:])
    return DataSet(
        name=name,
        train=TensorDataset(_normalise(a, train.mean, train.std), a.labels),
        test=TensorDataset(_normalise(b, train.mean, train.std), b.labels),
        num_classes=len(a.classes),
        input_shape=(c, h, w),
        mean=train.mean,
        std=train.std,
        classes=tuple(a.classes),
    )


def _normalise(d: Images, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``uint8`` images to ``float32``, scaled to [0, 1] then standardised per channel, in one pass."""
    scale = 1.0 / (d.max_value * torch.tensor(std, dtype=torch.float64))
    shift = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
    shape = (1, -1, 1, 1)
    x = d.images.to(torch.float32)
    return x.mul_(scale.to(torch.float32).view(shape)).add_(shift.to(torch.float32).view(shape))


def _channel_stats(images: torch.Tensor, max_value: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation on the [0, 1] scale, accumulated in float64 chunks."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.to(torch.float64) / max_value
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt().clamp_min(STD_FLOOR)
    return tuple(mean.tolist()), tuple(std.tolist())


def _decode(source: DataSetSource, request: SplitRequest) -> _Decoded:
    """Run a data set's loader for one split, check what it returns and compute the split's statistics."""
    got = source.load(request)
    what = f"data set {source.name!r} ({request.split} split)"
    if not isinstance(got, Images):
        raise BenchError(f"{what}: its loader returned {type(got).__name__}, not Images")
    images, labels, classes = got.images, got.labels, tuple(got.classes)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise BenchError(f"{what}: images must be a uint8 tensor [N,C,H,W], got {_describe(images)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        raise BenchError(f"{what}: labels must be a tensor of {images.shape[0]} labels, got {_describe(labels)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        raise BenchError(f"{what}: labels must lie in 0..{len(classes) - 1} for its {len(classes)} classes")
    mean, std = _channel_stats(images, float(got.max_value))  # before contiguous(): the same sums as ever
    return _Decoded(Images(images.contiguous(), labels.to(torch.int64), classes, float(got.max_value)), mean, std)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__


# --- the cache ---------------------------------------------------------------------------------


def _cached(source: DataSetSource, request: SplitRequest, cache_dir: Path) -> _Decoded:
    """Read a split from its cache file, or decode it and write the file (atomically)."""
    key = source.cache_key(request)
    if key is None:
        return _decode(source, request)
    file = cache_dir / f"{key}.safetensors"
    hit = _read_cache(file)
    if hit is not None:
        return hit
    decoded = _decode(source, request)
    _write_cache(file, decoded)
    return decoded


def _read_cache(file: Path) -> _Decoded | None:
    """A cached split, or None when the file is missing or unreadable (it is then rebuilt)."""
    if not file.is_file():
        return None
    try:
        tensors = load_file(file)
        with safe_open(file, framework="pt") as f:
            meta = json.loads(f.metadata()["advparams.data"])
        images, labels = tensors["images"], tensors["labels"]
        if images.dtype != torch.uint8 or images.dim() != 4 or labels.shape != images.shape[:1]:
            return None
        data = Images(images, labels, tuple(meta["classes"]), float(meta["max_value"]))
        return _Decoded(data, tuple(meta["mean"]), tuple(meta["std"]))
    except (OSError, SafetensorError, KeyError, TypeError, ValueError):
        return None


def _write_cache(file: Path, d: _Decoded) -> None:
    """Write a split's cache file via a temporary file; a cache that cannot be written only warns."""
    data = d.data
    meta = {"classes": list(data.classes), "max_value": data.max_value, "mean": list(d.mean), "std": list(d.std)}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(file, lambda tmp: save_file({"images": data.images, "labels": data.labels}, tmp,
                                                       metadata={"advparams.data": json.dumps(meta)}))
    except OSError as e:
        warnings.warn(f"could not write data cache {file}: {e}; it will be decoded again next time", stacklevel=3)
