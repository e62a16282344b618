"""Key files: private, atomic, and never silently wrong; keys never show their secrets."""

from __future__ import annotations

import copy
import os
import stat
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protect_helpers import batches, bn_cnn, states_equal
from safetensors.torch import load as safetensors_load
from torch import nn

from protect import Budget, ProtectError, SecretKey, decrypt, encrypt, keyfile

PASSPHRASE = "tr0ub4dor&3"


@lru_cache(maxsize=1)
def sealed() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], SecretKey, bytes, bytes]:
    """(original state, encrypted state, key, plain file bytes, passphrase-protected file bytes)."""
    model = bn_cnn()
    original = copy.deepcopy(model.state_dict())
    key = encrypt(model, batches("bn_cnn"), Budget(max_params=12, params_per_step=3, target_accuracy=0.0))
    with tempfile.TemporaryDirectory() as tmp:
        key.save(Path(tmp) / "plain.key")
        key.save(Path(tmp) / "locked.key", passphrase=PASSPHRASE)
        plain, locked = (Path(tmp) / "plain.key").read_bytes(), (Path(tmp) / "locked.key").read_bytes()
    return original, copy.deepcopy(model.state_dict()), key, plain, locked


def encrypted_model() -> nn.Module:
    model = bn_cnn()
    model.load_state_dict(sealed()[1])
    return model.eval()


def test_key_file_is_private_and_written_atomically(tmp_path: Path) -> None:
    key = sealed()[2]
    path = tmp_path / "model.key"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        key.save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)
        key.save(path, passphrase=PASSPHRASE)  # replacing an existing key also yields a private file
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)
    assert [p.name for p in tmp_path.iterdir()] == ["model.key"]
    assert SecretKey.load(path, passphrase=PASSPHRASE) == key


def test_file_layout_is_safetensors_behind_a_header_and_locked_files_hide_everything() -> None:
    key, plain, locked = sealed()[2], sealed()[3], sealed()[4]
    assert plain.startswith(b"ADVPKEY\x01P") and locked.startswith(b"ADVPKEY\x01E")
    tensors = safetensors_load(plain[9 + 32 :])  # magic, version, mode, SHA-256, then the payload
    assert torch.equal(tensors["original"], key.original) and torch.equal(tensors["encrypted"], key.encrypted)
    assert tensors["flat_index"].tolist() == [index for _, index in key.positions]
    name = key.positions[0][0].encode()
    assert name in plain and name not in locked  # encrypted files hide even the parameter names


def test_a_key_file_written_before_methods_owned_their_options_still_decrypts(tmp_path: Path) -> None:
    """Older key files hold AdvParams' rank and loss beside the common budget fields, with no options."""
    original, _, key, plain, _ = sealed()
    metadata, tensors = keyfile.decode(plain, None, "sealed")
    common = {k: v for k, v in metadata["budget"].items() if k != "options"}
    metadata["budget"] = {**common, "rank": "gain", "loss": "margin"}
    for passphrase in (None, PASSPHRASE):
        path = tmp_path / f"legacy-{passphrase}.key"
        keyfile.write_atomic(path, keyfile.encode(metadata, tensors, passphrase))
        loaded = SecretKey.load(path, passphrase=passphrase)
        assert loaded.budget == {**common, "options": {"rank": "gain", "loss": "margin"}}
        assert loaded.fingerprint == key.fingerprint
        model = encrypted_model()
        decrypt(model, loaded)
        assert states_equal(model.state_dict(), original)


def test_repr_and_fingerprint_never_show_positions_or_values() -> None:
    key = sealed()[2]
    shown = [repr(key), str(key), f"{key}", key.fingerprint]
    for text in shown:
        for name, _ in key.positions:
            assert name not in text
        for value in key.original.tolist() + key.encrypted.tolist():
            assert repr(value) not in text and f"{value:.4f}" not in text
    assert len(key.fingerprint) == 64 and int(key.fingerprint, 16) >= 0
    assert str(key.num_changed) in repr(key) and key.fingerprint[:16] in repr(key)


def test_fingerprint_tracks_secret_content_only() -> None:
    key = sealed()[2]
    same = copy.copy(key)
    same.stats = {**key.stats, "seconds": 123.0}
    assert same.fingerprint == key.fingerprint
    moved = copy.copy(key)
    moved.encrypted = key.encrypted.clone()
    moved.encrypted[0] += 1e-12
    assert moved.fingerprint != key.fingerprint and moved != key


def check_corruption(blob: bytes, passphrase: str | None) -> None:
    """A damaged file must never decrypt silently: refused on load or decrypt, or bit-exact if unchanged."""
    original, _, _, plain, locked = sealed()
    model = encrypted_model()
    before = copy.deepcopy(model.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.key"
        path.write_bytes(blob)
        try:
            decrypt(model, SecretKey.load(path, passphrase=passphrase))
        except ProtectError as exc:
            assert "\n" not in str(exc)
            assert states_equal(model.state_dict(), before)
            return
    assert blob in (plain, locked)  # only an unchanged file may decrypt ...
    assert states_equal(model.state_dict(), original)  # ... and then bit for bit


corruptions = st.one_of(
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    ),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
)


def corrupt(blob: bytes, how: tuple) -> bytes:
    kind, arg = how
    if kind == "truncate":
        return blob[: arg % len(blob)]
    if kind == "append":
        return blob + arg
    data = bytearray(blob)
    for position, mask in arg:
        data[position % len(data)] ^= mask
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(how=corruptions)
def test_corrupted_plain_files_never_decrypt_silently(how: tuple) -> None:
    check_corruption(corrupt(sealed()[3], how), None)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(how=corruptions)
def test_corrupted_locked_files_never_decrypt_silently(how: tuple) -> None:  # scrypt: a few examples only
    check_corruption(corrupt(sealed()[4], how), PASSPHRASE)


def test_an_unchanged_file_round_trips_under_the_same_check() -> None:
    check_corruption(sealed()[3], None)
    check_corruption(sealed()[4], PASSPHRASE)
