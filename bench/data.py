"""Image-classification data sets by name, decoded once and held as normalised tensors.

Every data set is decoded to ``uint8`` images once and cached as a safetensors file, so later calls,
other processes and other jobs skip image decoding (60,000 CIFAR-10 JPEGs take seconds, not
minutes, but every sweep job would pay them). Loading then only normalises to ``float32`` with the
training set's per-channel mean and standard deviation, which the cache also stores.

Data sets:

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images). It has no official test
  split, so a fixed stratified 70/30 split is made with seed ``DIGITS_SPLIT_SEED`` (independent of
  any job's seed: every job sees the same test set). Small enough to skip the cache.
- ``fashion_mnist``: torchvision's ``FashionMNIST`` files under the data root.
- ``cifar10``: torchvision's original ``CIFAR10`` files; when they are missing and downloading is
  off, the ImageFolder layout ``<root>/cifar10-jpeg/{train,test}/<class>/*.jpg`` (class folders in
  alphabetical order are CIFAR-10's label order).
- ``gtsrb``: torchvision's ``GTSRB`` files (43 classes), resized to 32x32 where they are not already.
- ``imagefolder``: a user's own folder with ``train/`` and ``test/`` subfolders in ImageFolder
  layout, decoded as RGB and resized to ``image_size``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from bench.errors import BenchError

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "cifar10", "gtsrb", "imagefolder")
SPLITS: tuple[str, ...] = ("train", "test")
DATA_ROOT_ENV = "ADVPARAMS_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("~/.cache/advparams/data")
CACHE_SUBDIR = "advparams-cache"
CACHE_FORMAT = 1  # bump when the cached layout or decoding changes; old cache files are then ignored
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.3
GTSRB_SIZE = (32, 32)
STD_FLOOR = 1e-6  # a constant channel would otherwise divide by zero when normalising
_FIX = f"pass --download or set {DATA_ROOT_ENV} to the folder that holds it"

Progress = Callable[[str, int, int], None]
"""Decoding progress: called with (what is being decoded, images done, images in total)."""


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
    """One split as decoded: ``uint8`` images [N,C,H,W] whose full scale is ``max_value``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    max_value: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


_Decoder = Callable[[Progress | None], _Decoded]
_T = TypeVar("_T")
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
    ``path`` names the folder of ``imagefolder`` (and only of it), whose images are resized to
    ``image_size`` (height, width). The result is memoised per process: treat its tensors as
    read-only.
    """
    if name not in DATASETS:
        raise BenchError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if (name == "imagefolder") != (path is not None):
        raise BenchError(
            "data set 'imagefolder' needs a path to a folder with train/ and test/"
            if path is None
            else f"a path is only for data set 'imagefolder', not {name!r}"
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
            split: _cached(_source(name, split, root_dir, download, folder, size), cache, progress)
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
    if train.classes != test.classes or train.images.shape[1:] != test.images.shape[1:]:
        raise BenchError(
            f"data set {name!r}: train and test splits differ in classes or image shape "
            f"({len(train.classes)} vs {len(test.classes)} classes, "
            f"{tuple(train.images.shape[1:])} vs {tuple(test.images.shape[1:])})"
        )
    c, h, w = (int(d) for d in train.images.shape[1:])
    return DataSet(
        name=name,
        train=TensorDataset(_normalise(train, train.mean, train.std), train.labels),
        test=TensorDataset(_normalise(test, train.mean, train.std), test.labels),
        num_classes=len(train.classes),
        input_shape=(c, h, w),
        mean=train.mean,
        std=train.std,
        classes=train.classes,
    )


def _normalise(d: _Decoded, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
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


def _decoded(images: torch.Tensor, labels: torch.Tensor, classes: Iterable[str], max_value: float) -> _Decoded:
    """Wrap a decoded split, computing its channel statistics."""
    mean, std = _channel_stats(images, max_value)
    return _Decoded(images.contiguous(), labels.to(torch.int64), tuple(classes), float(max_value), mean, std)


# --- the cache ---------------------------------------------------------------------------------


def _cached(source: tuple[str | None, _Decoder], cache_dir: Path, progress: Progress | None) -> _Decoded:
    """Read a split from its cache file, or decode it and write the file (atomically)."""
    key, decode = source
    if key is None:
        return decode(progress)
    file = cache_dir / f"{key}.safetensors"
    hit = _read_cache(file)
    if hit is not None:
        return hit
    decoded = decode(progress)
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
        return _Decoded(
            images, labels, tuple(meta["classes"]), float(meta["max_value"]), tuple(meta["mean"]), tuple(meta["std"])
        )
    except (OSError, SafetensorError, KeyError, TypeError, ValueError):
        return None


def _write_cache(file: Path, d: _Decoded) -> None:
    """Write a split's cache file via a temporary file; a cache that cannot be written only warns."""
    meta = {"classes": list(d.classes), "max_value": d.max_value, "mean": list(d.mean), "std": list(d.std)}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users' jobs
        try:
            save_file({"images": d.images, "labels": d.labels}, tmp, metadata={"advparams.data": json.dumps(meta)})
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"could not write data cache {file}: {e}; it will be decoded again next time", stacklevel=3)


# --- the sources -------------------------------------------------------------------------------


def _source(
    name: str, split: str, root: Path, download: bool, folder: Path | None, size: tuple[int, int]
) -> tuple[str | None, _Decoder]:
    """The cache key of one split and how to decode it (key None: not worth caching)."""
    train = split == "train"
    version = f"v{CACHE_FORMAT}"
    if name == "digits":
        return None, lambda progress: _digits(train)
    if name == "fashion_mnist":
        return f"fashion_mnist-{split}-{version}", lambda progress: _fashion_mnist(root, train, download)
    if name == "gtsrb":
        return f"gtsrb-{split}-{version}", lambda progress: _gtsrb(root, split, download, progress)
    if name == "cifar10":
        return _cifar10_source(root, split, download)
    assert folder is not None  # load_dataset checked it
    samples, classes = _folder_samples(folder / split, "imagefolder")
    stamp = _fingerprint(folder / split, size, [p for p, _ in samples])
    key = f"imagefolder-{split}-{version}-{size[0]}x{size[1]}-{stamp}"
    return key, lambda progress: _decode_files(samples, classes, size, f"imagefolder {split}", progress)


def _digits(train: bool) -> _Decoded:
    """scikit-learn's 8x8 digits (values 0..16), in the fixed stratified 70/30 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=bunch.target
    )
    idx = torch.from_numpy(np.sort(train_idx if train else test_idx))
    return _decoded(images[idx], labels[idx], (str(c) for c in bunch.target_names), 16.0)


def _fashion_mnist(root: Path, train: bool, download: bool) -> _Decoded:
    """Fashion-MNIST from its IDX files under ``root/FashionMNIST/raw``."""
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if not download:
        _require("fashion_mnist", root, [raw / n for n in names])
    ds = _torchvision("fashion_mnist", root, lambda: FashionMNIST(str(root), train=train, download=download))
    return _decoded(ds.data.unsqueeze(1), ds.targets, ds.classes, 255.0)


def _gtsrb(root: Path, split: str, download: bool, progress: Progress | None) -> _Decoded:
    """GTSRB through torchvision, its 43 classes named by their folder numbers."""
    from torchvision.datasets import GTSRB

    base = root / "gtsrb"
    needed = (
        [base / "GTSRB" / "Training"]
        if split == "train"
        else [base / "GTSRB" / "Final_Test" / "Images", base / "GT-final_test.csv"]
    )
    if not download:
        _require("gtsrb", root, needed)
    ds = _torchvision("gtsrb", root, lambda: GTSRB(str(root), split=split, download=download))
    classes = tuple(f"{i:05d}" for i in range(43))
    return _decode_images((ds[i] for i in range(len(ds))), len(ds), classes, GTSRB_SIZE, f"gtsrb {split}", progress)


def _cifar10_source(root: Path, split: str, download: bool) -> tuple[str, _Decoder]:
    """CIFAR-10's original files if present or downloadable, else its JPEG ImageFolder copy."""
    train = split == "train"
    version = f"v{CACHE_FORMAT}"
    original = root / "cifar-10-batches-py"
    jpeg = root / "cifar10-jpeg" / split
    if original.is_dir() or download:
        return f"cifar10-{split}-{version}", lambda progress: _cifar10_original(root, train, download)
    if jpeg.is_dir():
        return f"cifar10-jpeg-{split}-{version}", lambda progress: _decode_files(
            *_folder_samples(jpeg, "cifar10"), (32, 32), f"cifar10 {split}", progress
        )
    raise BenchError(
        f"data set 'cifar10' not found: neither {original} (original files) nor {jpeg} (JPEG layout) "
        f"exists under data root {root}; {_FIX}"
    )


def _cifar10_original(root: Path, train: bool, download: bool) -> _Decoded:
    """CIFAR-10 from torchvision's original python batches."""
    from torchvision.datasets import CIFAR10

    ds = _torchvision("cifar10", root, lambda: CIFAR10(str(root), train=train, download=download))
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
    return _decoded(images, torch.tensor(ds.targets), ds.classes, 255.0)


def _require(name: str, root: Path, paths: list[Path]) -> None:
    """Refuse, in one line, when files a data set needs are missing."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BenchError(
            f"data set {name!r} not found: missing {', '.join(missing)} (looked under data root {root}); {_FIX}"
        )


def _torchvision(name: str, root: Path, make: Callable[[], _T]) -> _T:
    """Construct a torchvision data set, turning its failures (download, corrupt files) into one line."""
    try:
        return make()
    except (RuntimeError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"cannot read data set {name!r} under {root}: {first}; {_FIX}") from e


def _folder_samples(folder: Path, name: str) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """The (file, class index) pairs of an ImageFolder-layout folder, classes in alphabetical order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise BenchError(f"data set {name!r}: folder {folder} does not exist; it needs <class>/<image> subfolders")
    try:
        classes, to_index = find_classes(str(folder))
        samples = make_dataset(str(folder), to_index, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise BenchError(f"data set {name!r}: no usable images in {folder}: {str(e).splitlines()[0]}") from e
    return samples, tuple(classes)


def _fingerprint(folder: Path, size: tuple[int, int], files: list[str]) -> str:
    """A short hash of a folder's absolute path, file count, total size and latest change, and the size."""
    stats = [os.stat(f) for f in files]
    latest = max((s.st_mtime_ns for s in stats), default=0)
    facts = [str(folder), len(stats), sum(s.st_size for s in stats), latest, size]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def _open_rgb(path: str) -> Image.Image:
    """An image file decoded to RGB, its file closed."""
    with Image.open(path) as img:
        return img.convert("RGB")


def _decode_files(
    samples: list[tuple[str, int]],
    classes: tuple[str, ...],
    size: tuple[int, int],
    what: str,
    progress: Progress | None,
) -> _Decoded:
    """Decode image files listed as (path, class index)."""
    try:
        return _decode_images(((_open_rgb(p), c) for p, c in samples), len(samples), classes, size, what, progress)
    except OSError as e:
        raise BenchError(f"{what}: cannot decode an image: {str(e).splitlines()[0]}") from e


def _decode_images(
    pairs: Iterable[tuple[Image.Image, int]],
    count: int,
    classes: tuple[str, ...],
    size: tuple[int, int],
    what: str,
    progress: Progress | None,
) -> _Decoded:
    """Stack (RGB image, label) pairs into ``uint8`` [N,3,H,W], resizing images not already ``size``."""
    if count == 0:
        raise BenchError(f"{what}: no images found")
    height, width = size
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for i, (img, label) in enumerate(pairs):
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        images[i] = np.asarray(img.convert("RGB"))
        labels[i] = label
        if progress is not None and ((i + 1) % 1024 == 0 or i + 1 == count):
            progress(what, i + 1, count)
    return _decoded(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels), classes, 255.0)
