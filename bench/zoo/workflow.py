"""File-level operations shared by the `advparams` commands and the sweep's jobs.

Each function reads its inputs from files, refuses bad input before it writes anything (so a model or a
key file is never left half-changed), and returns plain figures. The key is written only where the
caller says, with mode 0600, and only its fingerprint is ever returned. No output replaces an existing
file without ``force``, nor an input or a key file even with it (``check_output``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import protect
from attacks import AttackerBudget, AttackerData, get_attack
from attacks.tuning import TrialRecord, tune
from bench.errors import BenchError
from bench.zoo.baseline import compute_device
from bench.zoo.data import (
    DATASETS,
    DataSet,
    default_data_root,
    load_dataset,
    make_splits,
    owner_split,
)
from bench.zoo.modelfile import ModelSpec, load_model, read_spec, save_model
from common.training import accuracy, batches, count_params
from protect import keyfile

OWNER_BATCH = 256


@dataclass(frozen=True)
class DataOptions:
    """Where data sets come from: the data root, whether downloading is allowed, a user folder."""

    root: Path | None = None
    download: bool = False
    path: Path | None = None  # for a data set that needs one (imagefolder)

    def for_folder(self, folder: str | None) -> DataOptions:
        """These options pointed at a model's own data folder (unless a folder was given already)."""
        return self if self.path or not folder else replace(self, path=Path(folder))

    def load(self, name: str) -> DataSet:
        path = self.path if DATASETS.get(name).needs_path else None
        return load_dataset(name, self.root or default_data_root(), download=self.download, path=path)


def require_file(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise BenchError(f"{what} not found: {path}")
    return Path(path)


def load_for(path: Path, data: DataOptions, dataset: str | None = None) -> tuple[torch.nn.Module, ModelSpec, DataSet]:
    """Load a model file and the data set it was trained on (or ``dataset`` if given and compatible)."""
    model, spec = load_model(require_file(path, "model file"), device=compute_device())
    name = dataset or spec.dataset
    ds = data.for_folder(spec.extra.get("data_path")).load(name)
    if ds.num_classes != spec.num_classes or tuple(ds.input_shape) != tuple(spec.input_shape):
        raise BenchError(
            f"data set {name!r} ({ds.num_classes} classes, input {tuple(ds.input_shape)}) does not fit the model in "
            f"{path} ({spec.num_classes} classes, input {tuple(spec.input_shape)})"
        )
    return model, spec, ds


def same_file(a: Path, b: Path) -> bool:
    """One file under two names: equal resolved paths, or (both existing) a hard link or bind mount."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)


def check_output(
    path: Path, what: str, *, force: bool, inputs: Mapping[str, Path] | None = None, replaces_key: bool = False,
    make_folders: bool = False,
) -> None:
    """Refuse, before anything is written, to write ``what`` to ``path`` where that would lose something.

    Refused even with ``force``: a folder, a file that is also one of ``inputs`` (role -> path), and a key
    file (known by its format, not its name) unless the output is itself a key (``replaces_key``): a lost key
    cannot be rebuilt. Refused without ``force``: any other existing file, saying so when it is an encrypted
    model whose key would be orphaned. A missing folder is refused unless the writer makes it.
    """
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"{what} path {path} is a folder; give a file name")
    if not make_folders and not path.parent.is_dir():
        raise BenchError(f"folder {path.parent} for the {what} does not exist")
    for role, source in (inputs or {}).items():
        if same_file(path, source):
            raise BenchError(f"{path} is both the {role} and the {what}; they must be different files")
    if not path.exists():
        return
    is_key = keyfile.is_key_file(path)
    if is_key and not replaces_key:
        raise BenchError(f"{path} is a key file; refusing to write the {what} over it, even with --force "
                         "(a lost key cannot be rebuilt)")
    if force:
        return
    if is_key:
        raise BenchError(f"key file {path} exists already; refusing to overwrite a key (use --force)")
    encrypted_with = _encrypted_with(path)
    if encrypted_with:
        raise BenchError(f"{path} is an encrypted model; replacing it would orphan its key (fingerprint "
                         f"{encrypted_with[:16]}) (use --force to replace it anyway)")
    raise BenchError(f"{path} exists already; refusing to overwrite it (use --force)")


def _encrypted_with(path: Path) -> str | None:
    """The key fingerprint an encrypted model file names ('?' if it names none); None for any other file."""
    try:
        extra = read_spec(path).extra
    except BenchError:  # not a model file
        return None
    return str(extra.get("key_fingerprint", "?")) if extra.get("state") == "encrypted" else None


@dataclass(frozen=True)
class EncryptOutcome:
    acc_clean: float
    acc_encrypted: float
    num_changed: int
    total_params: int
    seconds: float
    key_fingerprint: str
    stats: dict[str, Any]

    @property
    def encrypted_fraction(self) -> float:
        return self.num_changed / self.total_params

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.acc_clean - self.acc_encrypted)

    @property
    def drop_relative(self) -> float:
        return 100.0 * (self.acc_clean - self.acc_encrypted) / self.acc_clean if self.acc_clean else 0.0


def encrypt_file(
    model_file: Path,
    out: Path,
    key_path: Path,
    *,
    budget: protect.Budget,
    method: str,
    data: DataOptions,
    split_seed: int,
    owner_count: int,
    passphrase: str | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EncryptOutcome:
    """Encrypt a clean model file: write the encrypted model to ``out`` and the key to ``key_path``.

    ``force`` lets both replace existing files (an existing key too), never the model file or a key at ``out``.
    """
    check_output(key_path, "key file", force=force, inputs={"model file": model_file, "encrypted model": out},
                 replaces_key=True)
    check_output(out, "encrypted model", force=force, inputs={"model file": model_file})
    model, spec, ds = load_for(model_file, data)
    if spec.extra.get("state") == "encrypted":
        raise BenchError(f"{model_file} is encrypted already (key {spec.extra.get('key_fingerprint', '?')})")
    owner = list(batches(owner_split(ds, seed=split_seed, owner_samples=owner_count), OWNER_BATCH))
    acc_clean = accuracy(model, ds.test)
    start = time.perf_counter()
    key = protect.encrypt(model, owner, budget, method=method, progress=progress)
    seconds = time.perf_counter() - start
    acc_encrypted = accuracy(model, ds.test)
    extra = {
        **spec.extra,
        "state": "encrypted",
        "key_fingerprint": key.fingerprint,
        "method": method,
        "clean_accuracy": acc_clean,
        "test_accuracy": acc_encrypted,
        "owner_seed": split_seed,  # so an attack on this file draws its share away from the owner's samples
        "owner_samples": owner_count,
    }
    # The key lands beside its final name and takes it only once the model is saved: a failure leaves
    # neither a key without its model nor, with --force, an earlier key destroyed.
    pending = key_path.with_name(f".{key_path.name}.pending")
    key.save(pending, passphrase=passphrase)
    try:
        save_model(out, model.cpu(), replace(spec, extra=extra))
        os.replace(pending, key_path)
    finally:
        pending.unlink(missing_ok=True)
    return EncryptOutcome(
        acc_clean=acc_clean,
        acc_encrypted=acc_encrypted,
        num_changed=key.num_changed,
        total_params=count_params(model),
        seconds=seconds,
        key_fingerprint=key.fingerprint,
        stats=dict(key.stats),
    )


def read_key(key_path: Path, passphrase: str | None) -> protect.SecretKey:
    return protect.SecretKey.load(require_file(key_path, "key file"), passphrase=passphrase)


def decrypt_file(
    enc_file: Path, key_path: Path, out: Path, *, data: DataOptions, passphrase: str | None = None, force: bool = False
) -> tuple[float, float]:
    """Decrypt an encrypted model file with its key into ``out``; return (encrypted, decrypted) accuracy.

    ``force`` lets ``out`` replace an existing file, never the encrypted model, the key or any other key.
    """
    check_output(out, "decrypted model", force=force, inputs={"encrypted model": enc_file, "key": key_path})
    key = read_key(key_path, passphrase)
    model, spec, ds = load_for(enc_file, data)
    acc_encrypted = accuracy(model, ds.test)
    protect.decrypt(model, key)  # refuses (model and files untouched) unless this model is the key's
    acc_decrypted = accuracy(model, ds.test)
    extra = {k: v for k, v in spec.extra.items() if k not in ("clean_accuracy",)}
    save_model(out, model.cpu(), replace(spec, extra={**extra, "state": "decrypted", "test_accuracy": acc_decrypted}))
    return acc_encrypted, acc_decrypted


def check_key_fits(key: protect.SecretKey, model: torch.nn.Module, *, key_path: Path, model_file: Path) -> None:
    """Refuse a key that was not made for this model's current state (the encrypted one), as decryption does."""
    current = protect.state_fingerprint(model)
    if current == key.encrypted_fingerprint:
        return
    if current == key.original_fingerprint:
        raise BenchError(f"{model_file} is the model of key {key_path} before encryption, not the encrypted one")
    raise BenchError(f"key {key_path} does not match the model in {model_file} "
                     "(the model is not the encrypted state it was made for)")


def verify_decryption(enc_file: Path, key_path: Path, clean_file: Path, *, data: DataOptions) -> tuple[float, bool]:
    """Decrypt an encrypted file in memory; return the decrypted accuracy and whether every tensor equals
    the clean file's bit for bit."""
    model, _, ds = load_for(enc_file, data)
    protect.decrypt(model, read_key(key_path, None))
    clean, _ = load_model(clean_file, device=compute_device())
    exact = protect.state_fingerprint(model) == protect.state_fingerprint(clean)
    return accuracy(model, ds.test), exact


def evaluate_file(model_file: Path, *, data: DataOptions, dataset: str | None = None) -> tuple[float, ModelSpec]:
    model, spec, ds = load_for(model_file, data, dataset)
    return accuracy(model, ds.test), spec


def key_scores(changed: dict[str, torch.Tensor] | None, key: protect.SecretKey) -> tuple[float, float] | None:
    """Precision and recall of the scalars an attack changed against the key's positions."""
    if changed is None:
        return None
    found = {(name, int(i)) for name, idx in changed.items() for i in torch.as_tensor(idx).flatten().tolist()}
    truth = set(key.positions)
    hits = len(found & truth)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(truth) if truth else 0.0
    return precision, recall


@dataclass(frozen=True)
class AttackOutcome:
    """One tuned attack scored: test and attacker-val accuracy, the compute its whole study spent
    (epoch-equivalents, never above the cap; validation passes apart), key scores where a key is known, and
    ``failed_baseline``: why a baseline's best model ended at chance (None when it learned)."""

    attack: str
    acc_attacked: float
    val_before: float
    val_attacked: float
    best_params: dict[str, Any]
    trials: list[TrialRecord]
    seconds: float
    key_precision: float | None
    key_recall: float | None
    compute_epochs: float
    forward_epochs: float
    failed_baseline: str | None = None


def attacker_data(ds: DataSet, *, seed: int, fraction: float, owner_count: int, val_fraction: float = 0.2) -> AttackerData:
    if not 0 < fraction < 1:
        raise BenchError(f"attacker data fraction must be in (0, 1) (the owner's samples are held out), got {fraction}")
    splits = make_splits(ds, seed=seed, owner_samples=owner_count, attacker_fraction=fraction,
                         attacker_val_fraction=val_fraction)
    return AttackerData(train=splits.attacker_train, val=splits.attacker_val, num_classes=ds.num_classes)


def attack_model(
    name: str,
    model: torch.nn.Module,
    ds: DataSet,
    *,
    budget: AttackerBudget,
    seed: int,
    owner_count: int,
    val_fraction: float = 0.2,
    fixed: dict[str, Any] | None = None,
    key: protect.SecretKey | None = None,
    study: Path | None = None,
    study_name: str | None = None,
    durable_study: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> AttackOutcome:
    """Run one attack, tuned on the attacker's validation split, and score it on the test split.

    The attack sees the encrypted model, the attacker's share of the data and its budget; ``key`` is used
    only afterwards, to score the positions an adaptive attack changed. The study in the ``study`` file is
    named ``study_name`` (a sweep names it by job), else by the attack; ``durable_study=False`` writes it
    once, at the end (`attacks.tuning.tune`).
    """
    attack = get_attack(name)
    data = attacker_data(ds, seed=seed, fraction=budget.data_fraction, owner_count=owner_count, val_fraction=val_fraction)
    start = time.perf_counter()
    tuned = tune(attack, model, data, budget, seed=seed, storage=study, study_name=study_name or name, fixed=fixed,
                 progress=progress, durable=durable_study)
    seconds = time.perf_counter() - start
    scores = key_scores(tuned.result.changed, key) if key is not None else None
    return AttackOutcome(
        attack=name,
        acc_attacked=accuracy(tuned.result.model, ds.test),
        val_before=tuned.val_accuracy_before,
        val_attacked=tuned.best_value,
        best_params=dict(tuned.best_params),
        trials=list(tuned.trials),
        seconds=seconds,
        key_precision=scores[0] if scores else None,
        key_recall=scores[1] if scores else None,
        compute_epochs=tuned.compute_epochs,
        forward_epochs=sum(t.forward_epochs for t in tuned.trials),
        failed_baseline=tuned.result.info.get("failed_baseline"),
    )
