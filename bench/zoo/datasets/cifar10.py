"""CIFAR-10: 60,000 32x32 colour images in 10 classes, from the original files or a JPEG copy."""

from __future__ import annotations

import torch

from bench.errors import BenchError
from bench.zoo.data import CACHE_FORMAT, Images, SplitRequest, register_dataset
from bench.zoo.decoding import (
    FETCH_HINT,
    decode_files,
    folder_samples,
    torchvision_dataset,
)


def _original(request: SplitRequest) -> bool:
    """Whether to read the original files (present, or to be downloaded) rather than the JPEG layout."""
    original = request.root / "cifar-10-batches-py"
    jpeg = request.root / "cifar10-jpeg" / request.split
    if original.is_dir() or request.download:
        return True
    if jpeg.is_dir():
        return False
    raise BenchError(
        f"data set 'cifar10' not found: neither {original} (original files) nor {jpeg} (JPEG layout) "
        f"exists under data root {request.root}; {FETCH_HINT}"
    )


def _cache_key(request: SplitRequest) -> str:
    layout = "cifar10" if _original(request) else "cifar10-jpeg"
    return f"{layout}-{request.split}-v{CACHE_FORMAT}"


@register_dataset("cifar10", cache=_cache_key)
def cifar10(request: SplitRequest) -> Images:
    """CIFAR-10 (32x32 colour, 10 classes): torchvision's original files, else a JPEG copy in <root>/cifar10-jpeg.

    The JPEG copy is in ImageFolder layout, ``<root>/cifar10-jpeg/{train,test}/<class>/*.jpg``; its class
    folders in alphabetical order are CIFAR-10's label order.
    """
    root, split = request.root, request.split
    if not _original(request):
        samples, classes = folder_samples(root / "cifar10-jpeg" / split, "cifar10")
        return decode_files(samples, classes, (32, 32), f"cifar10 {split}", request.progress)
    from torchvision.datasets import CIFAR10

    train = split == "train"
    ds = torchvision_dataset("cifar10", root, lambda: CIFAR10(str(root), train=train, download=request.download))
    return Images(torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets), tuple(ds.classes), 255.0)
