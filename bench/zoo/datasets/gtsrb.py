"""GTSRB, the German traffic-sign benchmark: 51,839 colour images of 43 signs, resized to 32x32."""

from __future__ import annotations

from bench.zoo.data import Images, SplitRequest, register_dataset
from bench.zoo.decoding import decode_images, require_files, torchvision_dataset

SIZE = (32, 32)
CLASSES = tuple(f"{i:05d}" for i in range(43))  # named by their folder numbers


@register_dataset("gtsrb")
def gtsrb(request: SplitRequest) -> Images:
    """GTSRB traffic signs (43 classes) from torchvision's files under <root>/gtsrb, resized to 32x32."""
    from torchvision.datasets import GTSRB

    root, split = request.root, request.split
    base = root / "gtsrb"
    needed = (
        [base / "GTSRB" / "Training"]
        if split == "train"
        else [base / "GTSRB" / "Final_Test" / "Images", base / "GT-final_test.csv"]
    )
    if not request.download:
        require_files("gtsrb", root, needed)
    ds = torchvision_dataset("gtsrb", root, lambda: GTSRB(str(root), split=split, download=request.download))
    return decode_images((ds[i] for i in range(len(ds))), len(ds), CLASSES, SIZE, f"gtsrb {split}", request.progress)
