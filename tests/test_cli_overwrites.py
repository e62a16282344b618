"""No `advparams` command loses a file it was not asked to replace (issue 15, items 1, 10 and 11).

An existing output is replaced only with --force; an input is never written over, nor is a key file
(known by its format, whatever its name), even with --force; a key made for another model is refused by
every command that reads one; a key file that group or others may read is warned about, and refused
under --strict. Every refusal is one line, exit code 2, and leaves every file's bytes, mtime and mode as
they were.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_refused, cli

from bench.cli import main
from bench.zoo.modelfile import load_model

TRAIN = ["--model", "mlp", "--epochs", "1"]
ENCRYPT = ["--max-params", "8", "--owner-samples", "128"]
ATTACK = "--tune 1 --epochs 1 --data-fraction 0.2 --study s.journal"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small models, each encrypted with its own key, made once; tests work on copies."""
    root = tmp_path_factory.mktemp("overwrite-models")
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.chdir(root)
        mp.setenv("ADVPARAMS_DATA_ROOT", str(root / "data"))
        for argv in (
            ["train", *TRAIN, "--seed", "0", "--out", "clean.safetensors"],
            ["encrypt", "clean.safetensors", "--out", "enc.safetensors", "--key", "k.key", *ENCRYPT],
            ["train", *TRAIN, "--seed", "1", "--out", "other.safetensors"],
            ["encrypt", "other.safetensors", "--out", "other_enc.safetensors", "--key", "other.key", *ENCRYPT],
        ):
            assert main(argv) == 0, argv
    return root


@pytest.fixture
def work(made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with copies of the models and keys, a key under a model's name, a truncated key, a
    hard link to the clean model, a copy of the right key that others may read, and plain text files (one
    named like a key)."""
    for name in ("clean.safetensors", "enc.safetensors", "k.key", "other.safetensors", "other_enc.safetensors",
                 "other.key"):
        shutil.copy2(made / name, tmp_path / name)
    shutil.copy2(made / "other.key", tmp_path / "disguised.safetensors")
    os.link(tmp_path / "clean.safetensors", tmp_path / "link.safetensors")
    shutil.copy2(made / "k.key", tmp_path / "open.key")
    (tmp_path / "open.key").chmod(0o644)
    (tmp_path / "damaged.bin").write_bytes((made / "other.key").read_bytes()[:40])
    (tmp_path / "notes.txt").write_text("not a model, not a key\n")
    (tmp_path / "fake.key").write_text("not a key either\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVPARAMS_DATA_ROOT", str(made / "data"))
    return tmp_path


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file in ``folder`` with its bytes, mtime and mode."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(folder.iterdir())
            if p.is_file()}


def assert_refused_untouched(capsys: pytest.CaptureFixture[str], folder: Path, argv: list[str], *fragments: str) -> str:
    """``advparams argv`` exits 2 with one line naming every fragment, and no file in ``folder`` changed."""
    before = snapshot(folder)
    line = assert_refused(cli(capsys, *argv), *fragments)
    assert snapshot(folder) == before
    return line


ORPHAN = ["orphan its key", "--force"]
KEY_FILE = ["is a key file", "even with --force"]
REFUSED = {
    # train
    "train over a file": ("train {train} --out notes.txt", ["notes.txt", "exists", "--force"]),
    "train over an encrypted model": ("train {train} --out enc.safetensors", ["enc.safetensors", *ORPHAN]),
    "train over a key, --force": ("train {train} --out k.key --force", ["k.key", *KEY_FILE]),
    "train over a key named like a model, --force": ("train {train} --out disguised.safetensors --force",
                                                     ["disguised.safetensors", *KEY_FILE]),
    # encrypt
    "encrypt over itself, --force": ("encrypt clean.safetensors --out clean.safetensors --key new.key --force {enc}",
                                     ["clean.safetensors is both the model file and the encrypted model"]),
    "encrypt over itself by absolute path, --force": (
        "encrypt clean.safetensors --out {cwd}/clean.safetensors --key new.key --force {enc}",
        ["both the model file and the encrypted model"]),
    "encrypt over a hard link to itself, --force": (
        "encrypt clean.safetensors --out link.safetensors --key new.key --force {enc}",
        ["link.safetensors is both the model file and the encrypted model"]),
    "encrypt its key over the model, --force": (
        "encrypt clean.safetensors --out new.safetensors --key clean.safetensors --force {enc}",
        ["clean.safetensors is both the model file and the key file"]),
    "encrypt model and key to one file": ("encrypt clean.safetensors --out new.bin --key new.bin {enc}",
                                          ["new.bin is both the encrypted model and the key file", "different files"]),
    "encrypt over a key, --force": ("encrypt clean.safetensors --out other.key --key new.key --force {enc}",
                                    ["other.key", *KEY_FILE]),
    "encrypt over a key named like a model, --force": (
        "encrypt clean.safetensors --out disguised.safetensors --key new.key --force {enc}",
        ["disguised.safetensors", *KEY_FILE]),
    "encrypt over an encrypted model": ("encrypt clean.safetensors --out other_enc.safetensors --key new.key {enc}",
                                        ["other_enc.safetensors", *ORPHAN]),
    "encrypt over a clean model": ("encrypt clean.safetensors --out other.safetensors --key new.key {enc}",
                                   ["other.safetensors", "exists", "--force"]),
    "encrypt its key over a key": ("encrypt clean.safetensors --out new.safetensors --key other.key {enc}",
                                   ["other.key", "exists", "--force"]),
    "encrypt its key over a file": ("encrypt clean.safetensors --out new.safetensors --key notes.txt {enc}",
                                    ["notes.txt", "exists", "--force"]),
    # decrypt
    "decrypt over its input, --force": ("decrypt enc.safetensors --key k.key --out enc.safetensors --force",
                                        ["enc.safetensors is both the encrypted model and the decrypted model"]),
    "decrypt over its key, --force": ("decrypt enc.safetensors --key k.key --out k.key --force",
                                      ["k.key is both the key and the decrypted model"]),
    "decrypt over another key, --force": ("decrypt enc.safetensors --key k.key --out other.key --force",
                                          ["other.key", *KEY_FILE]),
    "decrypt over a key named like a model, --force": (
        "decrypt enc.safetensors --key k.key --out disguised.safetensors --force", ["disguised.safetensors", *KEY_FILE]),
    "decrypt over a damaged key, --force": ("decrypt enc.safetensors --key k.key --out damaged.bin --force",
                                            ["damaged.bin", *KEY_FILE]),
    "decrypt over a clean model": ("decrypt enc.safetensors --key k.key --out other.safetensors",
                                   ["other.safetensors", "exists", "--force"]),
    "decrypt over an encrypted model": ("decrypt enc.safetensors --key k.key --out other_enc.safetensors",
                                        ["other_enc.safetensors", *ORPHAN]),
    "encrypt over its passphrase file, --force": (
        "encrypt clean.safetensors --out notes.txt --key new.key --passphrase-file notes.txt --force {enc}",
        ["notes.txt is both the passphrase file and an output"]),
    "decrypt over its passphrase file, --force": (
        "decrypt enc.safetensors --key k.key --out notes.txt --passphrase-file notes.txt --force",
        ["notes.txt is both the passphrase file and an output"]),
    "attack with a key as its study file": ("attack finetune --model-file enc.safetensors --key k.key --study k.key --tune 1",
                                            ["k.key", "cannot be used as an Optuna journal"]),
    # a key for another model, wherever a key is read
    "decrypt with another model's key": ("decrypt enc.safetensors --key other.key --out d.safetensors",
                                         ["does not match"]),
    "attack with another model's key": ("attack finetune --model-file enc.safetensors --key other.key {attack}",
                                        ["key other.key does not match the model in enc.safetensors"]),
    "attack all with another model's key": ("attack all --model-file enc.safetensors --key other.key {attack_all}",
                                            ["other.key", "does not match"]),
    "attack the clean model with its key": ("attack finetune --model-file clean.safetensors --key k.key {attack}",
                                            ["clean.safetensors is the model of key k.key before encryption"]),
    # key files that group or others may read, under --strict
    "decrypt with an open key, --strict": ("decrypt enc.safetensors --key open.key --out d.safetensors --strict",
                                           ["open.key", "mode 0644", "chmod 600", "--strict"]),
    "attack with an open key, --strict": ("attack finetune --model-file enc.safetensors --key open.key --strict {attack}",
                                          ["open.key", "mode 0644", "chmod 600", "--strict"]),
}


@pytest.mark.parametrize("argv,fragments", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_in_one_line_and_every_file_untouched(capsys, work: Path, argv: str, fragments: list[str]) -> None:
    words = argv.format(train=" ".join(TRAIN), enc=" ".join(ENCRYPT), attack=ATTACK,
                        attack_all=ATTACK.removesuffix(" --study s.journal"), cwd=work).split()
    assert_refused_untouched(capsys, work, words, *fragments)


FORCED = {
    "encrypt over an encrypted model and its key": (
        ["encrypt", "clean.safetensors", "--out", "other_enc.safetensors", "--key", "other.key", *ENCRYPT],
        {"other_enc.safetensors", "other.key"}),
    "decrypt over a file": (["decrypt", "enc.safetensors", "--key", "k.key", "--out", "notes.txt"], {"notes.txt"}),
    "decrypt over a file named like a key": (["decrypt", "enc.safetensors", "--key", "k.key", "--out", "fake.key"],
                                             {"fake.key"}),
    "train over an encrypted model": (["train", *TRAIN, "--out", "enc.safetensors"], {"enc.safetensors"}),
}


@pytest.mark.parametrize("argv,written", list(FORCED.values()), ids=list(FORCED))
def test_force_replaces_an_output_that_is_neither_an_input_nor_a_key(capsys, work: Path, argv: list[str],
                                                                     written: set[str]) -> None:
    """What --force is for: commands refused without it write exactly their outputs with it."""
    before = snapshot(work)
    assert_refused(cli(capsys, *argv), "--force")
    r = cli(capsys, *argv, "--force")
    assert r.code == 0, r.err
    assert {name for name, seen in snapshot(work).items() if before.get(name) != seen} == written


def test_decrypt_over_a_file_with_force_writes_the_clean_model(capsys, work: Path) -> None:
    assert cli(capsys, "decrypt", "enc.safetensors", "--key", "k.key", "--out", "notes.txt", "--force").code == 0
    clean, decrypted = (load_model(work / name)[0].state_dict() for name in ("clean.safetensors", "notes.txt"))
    assert clean.keys() == decrypted.keys() and all(torch.equal(clean[k], decrypted[k]) for k in clean)


def test_a_key_others_may_read_is_warned_about_in_one_line(capsys, work: Path) -> None:
    r = cli(capsys, "decrypt", "enc.safetensors", "--key", "open.key", "--out", "d.safetensors")
    assert r.code == 0
    warning = "advparams: warning: key file open.key is open to group/other (mode 0644); run chmod 600 open.key"
    assert r.err.splitlines() == [warning]
    r = cli(capsys, "decrypt", "enc.safetensors", "--key", "k.key", "--out", "d2.safetensors", "--strict")
    assert (r.code, r.err) == (0, ""), "a 0600 key passes --strict without a word"


def test_attack_with_the_right_key_scores_it(capsys, work: Path) -> None:
    """The key check lets the model's own key through (and the attack then scores its positions)."""
    r = cli(capsys, "attack", "adaptive", "--model-file", "enc.safetensors", "--key", "k.key", *ATTACK.split()[:-2])
    assert r.code == 0, r.err
    assert "key recall %" in r.out
