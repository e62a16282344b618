"""Fashion-MNIST: 70,000 28x28 grey images of clothing in 10 classes."""

from __future__ import annotations

from bench.zoo.data import Images, SplitRequest, register_dataset
from bench.zoo.decoding import require_files, torchvision_dataset

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@register_dataset("fashion_mnist")
def fashion_mnist(request: SplitRequest) -> Images:
    """Fashion-MNIST (28x28 grey, 10 classes) from torchvision's IDX files under <root>/FashionMNIST/raw."""
    from torchvision.datasets import FashionMNIST

    root = request.root
    if not request.download:
        require_files("fashion_mnist", root, [root / "FashionMNIST" / "raw" / n for n in FILES])
    train = request.split == "train"
    ds = torchvision_dataset(
        "fashion_mnist", root, lambda: FashionMNIST(str(root), train=train, download=request.download)
    )
    return Images(ds.data.unsqueeze(1), ds.targets, tuple(ds.classes), 255.0)
