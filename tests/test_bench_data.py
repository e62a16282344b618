"""Data sets by name: the registry and a user's data set, digits, the image-folder loader and its cache, splits,
and the real data sets."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from model_shapes import importable_module
from PIL import Image
from torch.utils.data import TensorDataset

from bench.errors import BenchError
from bench.sweep.config import parse_config
from bench.zoo import data, decoding
from bench.zoo.data import (
    DATASETS,
    DataSet,
    Images,
    load_dataset,
    make_splits,
    register_dataset,
)


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty in-process memo, so loads really go to the cache or the files."""
    monkeypatch.setattr(data, "_MEMO", {})


def one_line(e: pytest.ExceptionInfo[BenchError]) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


# --- the registry and a user's own data sets ------------------------------------------------------

USER_DATASETS = """
import torch

from bench.zoo.data import Images, SplitRequest, register_dataset


@register_dataset("stripes")
def stripes(request: SplitRequest) -> Images:
    \"\"\"Horizontal or vertical stripes, 6x6 grey.\"\"\"
    labels = torch.arange(40 if request.split == "train" else 20) % 2
    rows = (torch.arange(6) % 2 * 255).view(6, 1).expand(6, 6)
    images = torch.stack([rows if y == 0 else rows.T for y in labels]).unsqueeze(1)
    return Images(images.to(torch.uint8), labels, ("horizontal", "vertical"))


@register_dataset("scans", path="a folder holding a file 'value'", cache=False)
def scans(request: SplitRequest) -> Images:
    \"\"\"One grey value, read from <path>/value, on a 0..100 scale; never cached.\"\"\"
    value = int((request.path / "value").read_text())
    return Images(torch.full((4, 1, 2, 2), value, dtype=torch.uint8), torch.arange(4) % 2, ("a", "b"), 100)


def plain(request: SplitRequest) -> Images:
    \"\"\"Stripes again, registered by an entry point alone.\"\"\"
    return stripes(request)
"""


@pytest.fixture
def registered() -> Iterator[None]:
    """Data sets a test registers are removed from the registry afterwards."""
    before = set(DATASETS)
    yield
    for name in set(DATASETS) - before:
        DATASETS.remove(name)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered: None) -> Iterator[str]:
    """USER_DATASETS as a module of its own, imported: its decorators register 'stripes' and 'scans'."""
    for name in importable_module(USER_DATASETS, tmp_path, monkeypatch, "user_datasets"):
        importlib.import_module(name)
        yield name


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_set_says_what_it_is(name: str) -> None:
    source = DATASETS.get(name)
    assert source.name == name and len(source.summary) > 20 and source.summary.endswith(".")  # for `advparams list`
    assert source.needs_path == (name == "imagefolder")


def test_a_name_is_registered_once(registered: None) -> None:
    with pytest.raises(BenchError) as e:
        register_dataset("digits")(lambda request: None)
    assert one_line(e) == "data set name 'digits' is already registered"
    with pytest.raises(BenchError, match="without ':'"):
        register_dataset("mine:digits")(lambda request: None)


def test_a_user_data_set_is_one_decorated_function(user_module: str, tmp_path: Path) -> None:
    ds = load_dataset("stripes", root=tmp_path)
    assert ds.classes == ("horizontal", "vertical") and ds.input_shape == (1, 6, 6)
    assert (len(ds.train), len(ds.test)) == (40, 20)
    # cached under the data set's name, and normalised like any other: half the pixels on
    cached = sorted(p.name for p in (tmp_path / data.CACHE_SUBDIR).iterdir())
    assert cached == [f"stripes-{split}-v{data.CACHE_FORMAT}.safetensors" for split in ("test", "train")]
    assert ds.mean == pytest.approx((0.5,)) and ds.std == pytest.approx((0.5,))
    assert set(ds.train.tensors[0].unique().tolist()) == {-1.0, 1.0}
    assert len(make_splits(ds, seed=0, owner_samples=10, attacker_fraction=0.5).owner) == 10
    assert DATASETS.get("stripes").summary == "Horizontal or vertical stripes, 6x6 grey."
    assert parse_config({"name": "t", "datasets": [{"name": "stripes", "models": [{"name": "cnn"}]}]})

    DATASETS.remove("stripes")
    with pytest.raises(BenchError, match="unknown data set 'stripes'"):
        load_dataset("stripes", root=tmp_path)


def test_a_user_data_set_may_need_a_path(user_module: str, tmp_path: Path) -> None:
    (tmp_path / "value").write_text("50")
    ds = load_dataset("scans", root=tmp_path, path=tmp_path)
    assert ds.mean == pytest.approx((0.5,)) and not (tmp_path / data.CACHE_SUBDIR).exists()
    with pytest.raises(BenchError) as e:
        load_dataset("scans", root=tmp_path)
    assert one_line(e) == "data set 'scans' needs a path: a folder holding a file 'value'"
    with pytest.raises(BenchError, match=r"only for a data set that needs one \(imagefolder, scans\)"):
        load_dataset("stripes", root=tmp_path, path=tmp_path)
    entry = {"name": "scans", "models": [{"name": "cnn"}]}
    with pytest.raises(BenchError, match="the scans data set needs 'path' \\(a folder holding a file 'value'\\)"):
        parse_config({"name": "t", "datasets": [entry]})
    assert parse_config({"name": "t", "datasets": [{**entry, "path": str(tmp_path)}]})


def test_entry_points_register_plain_or_decorated_loaders(
    user_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = [
        importlib.metadata.EntryPoint(name, value, DATASETS.group)
        for name, value in [
            ("plain_stripes", f"{user_module}:plain"),
            ("scans", f"{user_module}:scans"),
            ("renamed", f"{user_module}:stripes"),
            ("broken", "no_such_module_xyz:load"),
        ]
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == DATASETS.group else [])
    with pytest.warns(RuntimeWarning) as warned:
        DATASETS.reload_plugins()
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2
    assert messages[0].startswith("data set plugin 'broken' (no_such_module_xyz:load) was not loaded")
    assert messages[1].endswith("data set 'renamed' names the loader registered as 'stripes'")
    plain = DATASETS.get("plain_stripes")
    assert plain.summary == "Stripes again, registered by an entry point alone." and not plain.needs_path
    assert DATASETS.get("scans").needs_path  # the decorator's registration, with its options, is kept
    assert load_dataset("plain_stripes", root=tmp_path).input_shape == (1, 6, 6)
    assert (tmp_path / data.CACHE_SUBDIR / f"plain_stripes-train-v{data.CACHE_FORMAT}.safetensors").is_file()


EIGHT = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        ("pictures", "its loader returned str, not Images"),
        (Images(EIGHT.float(), torch.zeros(2), "ab"), "a uint8 tensor [N,C,H,W], got torch.float32 of shape (2, 1, 2, 2)"),
        (Images(EIGHT[0], torch.zeros(2), "ab"), "a uint8 tensor [N,C,H,W], got torch.uint8 of shape (1, 2, 2)"),
        (Images(EIGHT, [0, 1], "ab"), "a tensor of 2 labels, got list"),
        (Images(EIGHT, torch.zeros(3), "ab"), "a tensor of 2 labels, got torch.float32 of shape (3,)"),
        (Images(EIGHT, torch.tensor([0, 2]), "ab"), "labels must lie in 0..1 for its 2 classes"),
    ],
)
def test_a_loader_returning_something_else_is_one_line(
    registered: None, tmp_path: Path, returned: object, fragment: str
) -> None:
    register_dataset("odd", cache=False)(lambda request: returned)
    with pytest.raises(BenchError) as e:
        load_dataset("odd", root=tmp_path)
    assert one_line(e).startswith("data set 'odd' (train split): ") and fragment in one_line(e)


# --- digits --------------------------------------------------------------------------------------


def test_digits_shapes_counts_and_normalisation() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.classes == tuple(str(i) for i in range(10))
    assert len(ds.train) + len(ds.test) == 1797
    assert len(ds.test) == pytest.approx(0.3 * 1797, abs=1)
    x, y = ds.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8)
    # normalised with the training set's own statistics: zero mean, unit deviation there
    assert abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    # undoing the normalisation gives the 0..16 pixel values scaled to [0, 1], in steps of 1/16
    raw = ds.test.tensors[0] * ds.std[0] + ds.mean[0]
    assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5
    assert torch.allclose(raw * 16, (raw * 16).round(), atol=1e-4)


def test_digits_test_split_is_fixed_and_stratified() -> None:
    first = load_dataset("digits")
    data._MEMO.clear()
    second = load_dataset("digits")
    assert first is not second
    assert torch.equal(first.test.tensors[0], second.test.tensors[0])
    assert torch.equal(first.train.tensors[1], second.train.tensors[1])
    train_counts = torch.bincount(first.train.tensors[1], minlength=10).float()
    test_counts = torch.bincount(first.test.tensors[1], minlength=10).float()
    share = test_counts / (train_counts + test_counts)
    assert float(share.min()) > 0.27 and float(share.max()) < 0.33


def test_memo_returns_the_same_object() -> None:
    assert load_dataset("digits") is load_dataset("digits")


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(BenchError) as e:
        load_dataset("mnist")
    message = one_line(e)
    assert message.startswith("unknown data set 'mnist'; registered: cifar10, digits")
    assert all(name in message for name in DATASETS)


def test_path_only_for_a_data_set_that_needs_one(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="'imagefolder' needs a path: a folder holding train/ and test/"):
        load_dataset("imagefolder")
    with pytest.raises(BenchError, match=r"only for a data set that needs one \(imagefolder\), not 'digits'"):
        load_dataset("digits", path=tmp_path)


def test_default_data_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    assert data.default_data_root() == tmp_path.resolve()
    monkeypatch.delenv(data.DATA_ROOT_ENV)
    assert data.default_data_root() == Path("~/.cache/advparams/data").expanduser().resolve()


# --- splits --------------------------------------------------------------------------------------


def indexed(n: int) -> DataSet:
    """A data set whose sample i holds the value i, so a split's samples name their indices."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    part = TensorDataset(x, torch.arange(n) % 2)
    return DataSet("indexed", part, part, 2, (1, 1, 1), (0.0,), (1.0,), ("a", "b"))


def ids(part: TensorDataset) -> set[int]:
    return {int(v) for v in part.tensors[0].flatten()}


def test_splits_are_disjoint_and_sized() -> None:
    s = make_splits(indexed(1000), seed=3, owner_samples=100, attacker_fraction=0.25, attacker_val_fraction=0.2)
    owner, train, val = ids(s.owner), ids(s.attacker_train), ids(s.attacker_val)
    assert (len(owner), len(train), len(val)) == (100, 200, 50)
    assert len(owner | train | val) == 350
    assert len(s.owner.tensors[1]) == 100  # labels travel with their samples
    assert torch.equal(s.owner.tensors[1], s.owner.tensors[0].flatten().long() % 2)


def test_splits_are_deterministic_by_seed() -> None:
    ds = indexed(500)
    a, b, c = (make_splits(ds, seed=seed, owner_samples=50) for seed in (1, 1, 2))
    for part in ("owner", "attacker_train", "attacker_val"):
        assert torch.equal(getattr(a, part).tensors[0], getattr(b, part).tensors[0])
    assert ids(a.owner) != ids(c.owner) and ids(a.attacker_train) != ids(c.attacker_train)


def test_attacker_share_is_nested_and_independent_of_owner_samples() -> None:
    ds = indexed(1000)
    small = make_splits(ds, seed=0, owner_samples=10, attacker_fraction=0.1)
    other_owner = make_splits(ds, seed=0, owner_samples=300, attacker_fraction=0.1)
    large = make_splits(ds, seed=0, owner_samples=10, attacker_fraction=0.3)
    share = ids(small.attacker_train) | ids(small.attacker_val)
    assert share == ids(other_owner.attacker_train) | ids(other_owner.attacker_val)
    assert share < ids(large.attacker_train) | ids(large.attacker_val)


def test_tiny_attacker_share_keeps_one_sample_each() -> None:
    s = make_splits(indexed(20), seed=0, owner_samples=5, attacker_fraction=0.1, attacker_val_fraction=0.9)
    assert (len(s.attacker_train), len(s.attacker_val)) == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"owner_samples": 950}, "too few"),
        ({"attacker_fraction": 0.001}, "too few"),
        ({"owner_samples": 0}, "too few"),
        ({"attacker_fraction": 0.0}, "attacker_fraction"),
        ({"attacker_fraction": 1.0}, "attacker_fraction"),
        ({"attacker_val_fraction": 1.5}, "attacker_val_fraction"),
    ],
)
def test_split_requests_that_cannot_be_met(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(BenchError) as e:
        make_splits(indexed(1000), seed=0, **kwargs)  # type: ignore[arg-type]
    assert fragment in one_line(e)


def test_digits_splits_come_from_the_training_set() -> None:
    ds = load_dataset("digits")
    s = make_splits(ds, seed=0, owner_samples=200, attacker_fraction=0.5)
    train_rows = {tuple(r.tolist()) for r in ds.train.tensors[0].flatten(1)}
    for part in (s.owner, s.attacker_train, s.attacker_val):
        assert all(tuple(r.tolist()) in train_rows for r in part.tensors[0].flatten(1))
    assert len(s.owner) == 200 and len(s.attacker_train) + len(s.attacker_val) == round(0.5 * len(ds.train))


# --- image folders and the cache ------------------------------------------------------------------

COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def write_folder(root: Path, counts: dict[str, dict[str, int]], fmt: str = "png") -> Path:
    """Solid-colour images of mixed sizes in ImageFolder layout: root/<split>/<class>/<i>.<fmt>."""
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (5 + i, 7) if i % 2 else (10, 10)
                Image.new("RGB", size, COLOURS.get(cls, (0, 255, 0))).save(folder / f"{i}.{fmt}")
    return root


def test_imagefolder_decodes_resizes_and_normalises(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", {"train": {"cat": 3, "dog": 1}, "test": {"cat": 1, "dog": 2}})
    ds = load_dataset("imagefolder", path=folder, image_size=(4, 6), cache_dir=tmp_path / "cache")
    assert ds.input_shape == (3, 4, 6) and ds.classes == ("cat", "dog") and ds.num_classes == 2
    assert (len(ds.train), len(ds.test)) == (4, 3)
    assert sorted(ds.test.tensors[1].tolist()) == [0, 1, 1]
    # training-set statistics: red is on in 3 of 4 images, blue in 1, green never
    assert ds.mean == pytest.approx((0.75, 0.0, 0.25), abs=1e-6)
    spread = (0.75 * 0.25) ** 0.5
    assert ds.std == pytest.approx((spread, data.STD_FLOOR, spread), abs=1e-6)
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    x, y = ds.test.tensors
    pixels = x * std + mean
    expected = torch.tensor([COLOURS[ds.classes[int(label)]] for label in y], dtype=torch.float32) / 255
    assert torch.allclose(pixels, expected.view(-1, 3, 1, 1).expand_as(pixels), atol=1e-5)


def test_imagefolder_cache_is_reused_and_keyed_by_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_folder(tmp_path / "imgs", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", path=folder, cache_dir=cache)
    assert len(list(cache.glob("imagefolder-*.safetensors"))) == 2

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although a cache file exists")

    monkeypatch.setattr(decoding, "decode_images", no_decoding)
    data._MEMO.clear()
    again = load_dataset("imagefolder", path=folder, cache_dir=cache)
    assert torch.equal(first.train.tensors[0], again.train.tensors[0]) and first.std == again.std

    write_folder(folder, {"train": {"dog": 3}})  # one more training image: a new cache key
    data._MEMO.clear()
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset("imagefolder", path=folder, cache_dir=cache)
    data._MEMO.clear()
    with pytest.raises(AssertionError, match="decoded although"):  # another image size: another key too
        load_dataset("imagefolder", path=folder, cache_dir=cache, image_size=(8, 8))


def test_unwritable_cache_only_warns(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write data cache"):
        ds = load_dataset("imagefolder", path=folder, cache_dir=blocker / "cache")
    assert len(ds.train) == 2


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}})
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", path=folder, cache_dir=cache)
    for file in cache.glob("*.safetensors"):
        file.write_bytes(b"garbage")
    data._MEMO.clear()
    again = load_dataset("imagefolder", path=folder, cache_dir=cache)
    assert torch.equal(first.test.tensors[0], again.test.tensors[0])


def test_imagefolder_problems_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchError) as e:
        load_dataset("imagefolder", path=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "train") in one_line(e)
    folder = write_folder(tmp_path / "imgs", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1}})
    with pytest.raises(BenchError, match="differ in classes"):
        load_dataset("imagefolder", path=folder, cache_dir=tmp_path / "cache")
    broken = write_folder(tmp_path / "broken", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}})
    (broken / "train" / "cat" / "0.png").write_bytes(b"not a png")
    with pytest.raises(BenchError) as e:
        load_dataset("imagefolder", path=broken, cache_dir=tmp_path / "cache")
    assert "cannot decode" in one_line(e)


def test_progress_reports_every_split(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", {"train": {"cat": 2, "dog": 1}, "test": {"cat": 1, "dog": 1}})
    seen: list[tuple[str, int, int]] = []
    load_dataset("imagefolder", path=folder, cache_dir=tmp_path / "c", progress=lambda *a: seen.append(a))
    assert seen == [("imagefolder train", 3, 3), ("imagefolder test", 2, 2)]


def test_cifar10_falls_back_to_the_jpeg_layout(tmp_path: Path) -> None:
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    counts = {"train": {n: 1 for n in names}, "test": {n: 1 for n in names}}
    write_folder(tmp_path / "cifar10-jpeg", counts, fmt="jpg")
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.classes == tuple(names) and ds.input_shape == (3, 32, 32) and len(ds.train) == 10
    assert (tmp_path / "advparams-cache" / f"cifar10-jpeg-train-v{data.CACHE_FORMAT}.safetensors").is_file()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fashion_mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
        ("gtsrb", "gtsrb/GTSRB/Training"),
        ("cifar10", "cifar10-jpeg/train"),
    ],
)
def test_missing_files_name_the_data_set_place_and_fix(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(BenchError) as e:
        load_dataset(name, root=tmp_path)
    message = one_line(e)
    assert f"'{name}'" in message and str(tmp_path / expected) in message
    assert "--download" in message and data.DATA_ROOT_ENV in message
    assert not (tmp_path / "advparams-cache").exists()


# --- the real data sets (only where ADVPARAMS_DATA_ROOT names them) -------------------------------

REAL = [
    ("fashion_mnist", (1, 28, 28), 10, 60000, 10000),
    ("gtsrb", (3, 32, 32), 43, 39209, 12630),
    ("cifar10", (3, 32, 32), 10, 50000, 10000),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "shape", "classes", "n_train", "n_test"), REAL)
def test_real_data_set(name: str, shape: tuple[int, int, int], classes: int, n_train: int, n_test: int) -> None:
    root = os.environ.get(data.DATA_ROOT_ENV)
    if not root:
        pytest.skip(f"{data.DATA_ROOT_ENV} is not set: the real data sets are not available")
    ds = load_dataset(name, root=root)
    assert ds.input_shape == shape and ds.num_classes == classes == len(ds.classes)
    assert (len(ds.train), len(ds.test)) == (n_train, n_test)
    for part in (ds.train, ds.test):
        x, y = part.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == shape
        assert set(torch.unique(y).tolist()) == set(range(classes))
        raw = x[:2000] * torch.tensor(ds.std).view(1, -1, 1, 1) + torch.tensor(ds.mean).view(1, -1, 1, 1)
        assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5 and float(raw.max()) > 0.9
    x = ds.train.tensors[0]
    channel_means = x.mean(dim=(0, 2, 3)).numpy()
    assert np.all(np.abs(channel_means) < 1e-3)
