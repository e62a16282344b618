"""Building blocks for data-set loaders: image files and torchvision data sets decoded to ``Images``,
and the one-line refusals for files that are missing or unreadable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError
from bench.zoo.data import DATA_ROOT_ENV, Images, Progress
from common.errors import first_line

FETCH_HINT = f"pass --download or set {DATA_ROOT_ENV} to the folder that holds it"
"""How a user gets a missing data set: the end of every not-found message."""

_T = TypeVar("_T")


def require_files(name: str, root: Path, paths: list[Path]) -> None:
    """Refuse, in one line, when files a data set needs are missing."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BenchError(
            f"data set {name!r} not found: missing {', '.join(missing)} (looked under data root {root}); {FETCH_HINT}"
        )


def torchvision_dataset(name: str, root: Path, make: Callable[[], _T]) -> _T:
    """Construct a torchvision data set, turning its failures (download, corrupt files) into one line."""
    try:
        return make()
    except (RuntimeError, OSError, ValueError) as e:
        raise BenchError(f"cannot read data set {name!r} under {root}: {first_line(e)}; {FETCH_HINT}") from e


def folder_samples(folder: Path, name: str) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """The (file, class index) pairs of an ImageFolder-layout folder, classes in alphabetical order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise BenchError(f"data set {name!r}: folder {folder} does not exist; it needs <class>/<image> subfolders")
    try:
        classes, to_index = find_classes(str(folder))
        samples = make_dataset(str(folder), to_index, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise BenchError(f"data set {name!r}: no usable images in {folder}: {first_line(e)}") from e
    return samples, tuple(classes)


def decode_files(
    samples: list[tuple[str, int]],
    classes: tuple[str, ...],
    size: tuple[int, int],
    what: str,
    progress: Progress | None,
) -> Images:
    """Decode image files listed as (path, class index)."""
    try:
        return decode_images(((_open_rgb(p), c) for p, c in samples), len(samples), classes, size, what, progress)
    except OSError as e:
        raise BenchError(f"{what}: cannot decode an image: {first_line(e)}") from e


def decode_images(
    pairs: Iterable[tuple[Image.Image, int]],
    count: int,
    classes: tuple[str, ...],
    size: tuple[int, int],
    what: str,
    progress: Progress | None,
) -> Images:
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
    return Images(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels), classes, 255.0)


def _open_rgb(path: str) -> Image.Image:
    """An image file decoded to RGB, its file closed."""
    with Image.open(path) as img:
        return img.convert("RGB")
