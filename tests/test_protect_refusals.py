"""Every refusal is one line, raised as ProtectError, and leaves the model and key files untouched."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from protect_helpers import (
    ARCHITECTURES,
    assert_one_line_and_untouched,
    batches,
    bn_cnn,
    mlp,
)
from torch import nn
from torch.utils.data import TensorDataset

from protect import (
    METHODS,
    Budget,
    ProtectError,
    SecretKey,
    decrypt,
    encrypt,
    register_method,
    state_fingerprint,
)
from protect.registry import EncryptionRun

BUDGET = Budget(max_params=12, params_per_step=2, target_accuracy=0.0)


@pytest.fixture
def encrypted() -> tuple[nn.Module, SecretKey]:
    model = bn_cnn()
    return model, encrypt(model, batches("bn_cnn"), BUDGET)


def refuse(action: object, model: nn.Module, match: str) -> None:
    """Run ``action``; it must raise a one-line ProtectError matching ``match`` and change nothing."""
    fingerprint = state_fingerprint(model)
    with pytest.raises(ProtectError, match=match) as excinfo:
        action()  # type: ignore[operator]
    assert_one_line_and_untouched(excinfo, model, fingerprint)


# decrypt: wrong model, wrong state, inconsistent key


def test_key_for_another_model_of_the_same_architecture(encrypted: tuple[nn.Module, SecretKey]) -> None:
    _, key = encrypted
    other = bn_cnn(seed=5)
    refuse(lambda: decrypt(other, key), other, "key does not match this model")


def test_key_for_another_architecture(encrypted: tuple[nn.Module, SecretKey]) -> None:
    _, key = encrypted
    other = nn.Sequential(OrderedDict(body=bn_cnn()))  # the same layers under other names
    refuse(lambda: decrypt(other, key), other, r"key does not match this model \(it has no parameter '")


def test_key_for_same_names_but_other_shapes_or_dtype(encrypted: tuple[nn.Module, SecretKey]) -> None:
    model, key = encrypted
    name = key.positions[0][0]
    wider = bn_cnn()
    layer = dict(wider.named_modules())[name.rsplit(".", 1)[0]]
    layer.weight = nn.Parameter(torch.zeros(*[s + 1 for s in layer.weight.shape]))
    refuse(lambda: decrypt(wider, key), wider, "key does not match this model .* the key expects")
    model.half()
    refuse(lambda: decrypt(model, key), model, "key does not match this model .*float16")


def test_already_decrypted_and_decrypting_twice(encrypted: tuple[nn.Module, SecretKey]) -> None:
    model, key = encrypted
    decrypt(model, key)
    refuse(lambda: decrypt(model, key), model, "model is already decrypted")
    fresh = bn_cnn()  # an identical, never-encrypted model is "already decrypted" too
    refuse(lambda: decrypt(fresh, key), fresh, "model is already decrypted")


def test_model_changed_after_encryption(encrypted: tuple[nn.Module, SecretKey]) -> None:
    model, key = encrypted
    with torch.no_grad():
        model[1].running_mean += 1.0  # a buffer, not a parameter: fingerprints cover buffers too
    refuse(lambda: decrypt(model, key), model, "key does not match this model")


def test_inconsistent_keys_are_refused_before_any_write(encrypted: tuple[nn.Module, SecretKey]) -> None:
    model, key = encrypted
    wrong_encrypted = dataclasses.replace(key, encrypted=key.encrypted + 1.0)
    refuse(lambda: decrypt(model, wrong_encrypted), model, "key is inconsistent: its encrypted values differ")
    wrong_original = dataclasses.replace(key, original=key.original + 0.5)
    refuse(lambda: decrypt(model, wrong_original), model, "key is inconsistent: restoring it would not")


def test_malformed_keys_are_refused_at_construction(encrypted: tuple[nn.Module, SecretKey]) -> None:
    _, key = encrypted
    name, _ = key.positions[0]
    outside = [(name, 10**9), *key.positions[1:]]
    with pytest.raises(ProtectError, match="position is outside parameter"):
        dataclasses.replace(key, positions=outside)
    with pytest.raises(ProtectError, match="listed twice"):
        dataclasses.replace(key, positions=[key.positions[0]] * key.num_changed)
    with pytest.raises(ProtectError, match="float64"):
        dataclasses.replace(key, original=key.original.float())
    with pytest.raises(ProtectError, match="fingerprints"):
        dataclasses.replace(key, original_fingerprint="not a digest")


def test_decrypt_refuses_a_non_key() -> None:
    model = mlp()
    refuse(lambda: decrypt(model, "secret.key"), model, "key must be a protect.SecretKey")  # type: ignore[arg-type]


# encrypt: bad arguments, nothing to do, failures midway


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "fgsm"}, r"unknown protection method 'fgsm'; registered: .*advparams.*random"),
        ({"budget": {"max_params": 3}}, "budget must be a protect.Budget"),
        ({"data": torch.zeros(4, 10)}, "not a single tensor"),
        ({"data": []}, "data holds no batches"),
        ({"data": 5}, "data must be an iterable of .* got int"),
        (
            {"data": TensorDataset(torch.zeros(4, 10), torch.zeros(4, dtype=torch.int64))},
            "pass batches, not single",
        ),
        ({"data": [(torch.zeros(4, 10), torch.zeros(4))]}, "1-d integer labels"),
        (
            {"data": [(torch.zeros(4, 10), torch.full((4,), 7))]},
            r"labels outside \[0, 3\] for a 4-class model",
        ),
        ({"data": [torch.zeros(4, 10)]}, "batch 0 is not an"),
        ({"budget": Budget(layers=["conv*"])}, "layers pattern 'conv\\*' matches no candidate parameter"),
        ({"budget": Budget(target_accuracy=1.0)}, r"nothing was encrypted \(stop reason: target_reached"),
    ],
)
def test_encrypt_refusals(kwargs: dict, match: str) -> None:
    model = mlp()
    args = {"data": batches("mlp"), "budget": BUDGET, "method": "advparams"} | kwargs
    refuse(lambda: encrypt(model, **args), model, match)


def test_model_without_candidates_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(10))
    refuse(lambda: encrypt(model, batches("mlp"), BUDGET), model, "model has no Conv or Linear weights")


def test_model_output_must_be_class_scores() -> None:
    model = nn.Sequential(nn.Linear(10, 1), nn.Flatten(0))
    refuse(lambda: encrypt(model, batches("mlp"), BUDGET), model, "model output must be class scores")


@pytest.fixture
def failing_method() -> Iterator[str]:
    """A method that changes scalars, then fails: encrypt must undo its changes."""

    @register_method("test_fails_midway")
    def fails(run: EncryptionRun) -> dict:
        name = run.candidates.names[0]
        assert run.ledger.apply(name, torch.arange(5), torch.ones(5)) > 0
        raise RuntimeError("simulated crash")

    yield "test_fails_midway"
    METHODS.remove("test_fails_midway")


def test_failure_midway_leaves_the_model_untouched(failing_method: str) -> None:
    model = ARCHITECTURES["mlp"]().train()
    fingerprint = state_fingerprint(model)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encrypt(model, batches("mlp"), Budget(eps=0.1, stay_in_range=False), method=failing_method)
    assert state_fingerprint(model) == fingerprint and model.training
    with pytest.raises(ProtectError, match="already registered"):
        register_method(failing_method)(METHODS.get("random").function)


# key files: damaged, foreign or locked files are refused and the model stays as it is


@pytest.fixture
def key_file(tmp_path: Path, encrypted: tuple[nn.Module, SecretKey]) -> tuple[nn.Module, Path, Path]:
    model, key = encrypted
    plain, locked = tmp_path / "plain.key", tmp_path / "locked.key"
    key.save(plain)
    key.save(locked, passphrase="s3cret")
    return model, plain, locked


def load_and_decrypt(model: nn.Module, path: Path, passphrase: str | None = None) -> None:
    decrypt(model, SecretKey.load(path, passphrase=passphrase))


def damaged(path: Path, data: bytes) -> Path:
    out = path.with_name("damaged.key")
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("passphrase", [None, "s3cret"])
def test_truncated_and_tampered_files(key_file: tuple[nn.Module, Path, Path], passphrase: str | None) -> None:
    model, plain, locked = key_file
    source = plain if passphrase is None else locked
    blob = source.read_bytes()
    truncated = damaged(source, blob[: len(blob) // 2])
    refuse(lambda: load_and_decrypt(model, truncated, passphrase), model, "truncated|tampered")
    flipped = bytearray(blob)
    flipped[-20] ^= 0x01
    tampered = damaged(source, bytes(flipped))
    refuse(lambda: load_and_decrypt(model, tampered, passphrase), model, "tampered")


def test_passphrase_refusals(key_file: tuple[nn.Module, Path, Path]) -> None:
    model, plain, locked = key_file
    refuse(lambda: load_and_decrypt(model, locked, "wrong"), model, "wrong passphrase for key file")
    refuse(lambda: load_and_decrypt(model, locked), model, "is passphrase-protected; give its passphrase")
    refuse(lambda: load_and_decrypt(model, locked, ""), model, "passphrase must be a non-empty string")
    refuse(lambda: load_and_decrypt(model, plain, "s3cret"), model, "is not passphrase-protected")


def test_foreign_and_missing_files(key_file: tuple[nn.Module, Path, Path]) -> None:
    model, plain, _ = key_file
    blob = plain.read_bytes()
    refuse(
        lambda: load_and_decrypt(model, damaged(plain, b"PK\x03\x04 a zip")),
        model,
        "is not an AdvParams key file",
    )
    newer = damaged(plain, blob[:7] + bytes([9]) + blob[8:])
    refuse(lambda: load_and_decrypt(model, newer), model, "unsupported key file version 9")
    mode = damaged(plain, blob[:8] + b"X" + blob[9:])
    refuse(lambda: load_and_decrypt(model, mode), model, "unknown key file mode")
    refuse(lambda: load_and_decrypt(model, plain.with_name("missing.key")), model, "cannot read key file")


def test_failed_save_leaves_the_existing_file(tmp_path: Path, encrypted: tuple[nn.Module, SecretKey]) -> None:
    _, key = encrypted
    with pytest.raises(ProtectError, match="cannot write key file") as excinfo:
        key.save(tmp_path / "no" / "such" / "dir.key")
    assert "\n" not in str(excinfo.value)
    target = tmp_path / "model.key"
    target.write_bytes(b"previous")
    with pytest.raises(ProtectError, match="passphrase must be a non-empty string"):
        key.save(target, passphrase="")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.key"]  # no temporary file left behind
