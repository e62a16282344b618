"""scikit-learn's bundled 8x8 handwritten digits: the data set small enough for every test."""

from __future__ import annotations

import numpy as np
import torch

from bench.zoo.data import Images, SplitRequest, register_dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.3


@register_dataset("digits", cache=False)
def digits(request: SplitRequest) -> Images:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16), in a fixed stratified 70/30 split.

    They have no official test split, so one is drawn with seed ``SPLIT_SEED``, independent of any job's
    seed: every job sees the same test set. Decoding is quicker than reading a cache file.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
    )
    idx = torch.from_numpy(np.sort(train_idx if request.split == "train" else test_idx))
    return Images(images[idx], labels[idx], tuple(str(c) for c in bunch.target_names), 16.0)
