"""A user's own images in ImageFolder layout, decoded as RGB at any size."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bench.zoo.data import CACHE_FORMAT, Images, SplitRequest, register_dataset
from bench.zoo.decoding import decode_files, folder_samples

PATH = "a folder holding train/ and test/, each with <class>/<image> subfolders"


def _folder(request: SplitRequest) -> Path:
    assert request.path is not None  # load_dataset gives a path to a data set that needs one
    return request.path / request.split


def _cache_key(request: SplitRequest) -> str:
    """Keyed by the folder's contents and the image size, so changed images or another size decode anew."""
    folder = _folder(request)
    samples, _ = folder_samples(folder, "imagefolder")
    stats = [os.stat(f) for f, _ in samples]
    latest = max((s.st_mtime_ns for s in stats), default=0)
    facts = [str(folder), len(stats), sum(s.st_size for s in stats), latest, request.image_size]
    stamp = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]
    height, width = request.image_size
    return f"imagefolder-{request.split}-v{CACHE_FORMAT}-{height}x{width}-{stamp}"


@register_dataset("imagefolder", path=PATH, cache=_cache_key)
def imagefolder(request: SplitRequest) -> Images:
    """Your own images: a folder with train/ and test/ in ImageFolder layout, as RGB resized to image_size."""
    samples, classes = folder_samples(_folder(request), "imagefolder")
    return decode_files(samples, classes, request.image_size, f"imagefolder {request.split}", request.progress)
