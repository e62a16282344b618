"""The `advparams` command end to end on scikit-learn's digits: the owner's round trip, passphrases,
attacks, sweep planning, help, and one clear line (exit code 2) for every kind of bad input.

Commands run in-process through ``bench.cli.main`` (it returns the exit code) in a temporary working
folder; the real console script runs in a subprocess for the passphrase flow and a refusal;
the last section keeps the bugs these tests once found as regressions.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import (
    PERCENT,
    accuracy_after,
    assert_refused,
    cli,
    files_in,
    script,
    table_row,
)

import protect
from attacks import attack_names, get_attack
from bench.cli import main
from bench.zoo.modelfile import load_model

TRAIN_CNN = ["--model", "cnn", "--epochs", "20", "--lr", "0.05", "--batch-size", "64"]
ENCRYPT = ["--owner-samples", "128"]
ATTACK = ["--tune", "2", "--epochs", "2", "--data-fraction", "0.2", "--owner-samples", "128"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On two shared cores torch's intra-op threads fight other processes (encryption measured ~30x slower with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every command runs in its own temporary folder, data root included: nothing lands in the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVPARAMS_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path


@dataclass(frozen=True)
class Files:
    """Model and key files made once for the module; tests only read them."""

    clean: Path  # cnn, seed 0, 20 epochs
    train_output: str
    enc: Path  # `clean` encrypted with --max-params 32
    key: Path
    dec: Path  # `enc` decrypted
    other_key: Path  # the key of a second cnn (seed 1)

    def format(self, argv: str) -> list[str]:
        return argv.format(**{k: str(v) for k, v in vars(self).items()}).split()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("cli-models")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(root)
        mp.setenv("ADVPARAMS_DATA_ROOT", str(root / "data"))
        for argv in (
            ["train", *TRAIN_CNN, "--seed", "0", "--out", "clean.safetensors"],
            ["encrypt", "clean.safetensors", "--out", "enc.safetensors", "--key", "key.key", "--max-params", "32", *ENCRYPT],
            ["decrypt", "enc.safetensors", "--key", "key.key", "--out", "dec.safetensors"],
            ["train", "--model", "cnn", "--epochs", "2", "--seed", "1", "--out", "other.safetensors"],
            ["encrypt", "other.safetensors", "--out", "other_enc.safetensors", "--key", "other.key", "--max-params", "8", *ENCRYPT],
        ):
            assert main(argv) == 0, argv
    return Files(clean=root / "clean.safetensors", train_output=out.getvalue().splitlines()[0],
                 enc=root / "enc.safetensors", key=root / "key.key", dec=root / "dec.safetensors",
                 other_key=root / "other.key")


def state(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def assert_same_tensors(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "tensors differ"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------------------ round trip
def test_owner_round_trip_encrypts_hard_and_restores_bit_for_bit(capsys, files: Files, tmp_path: Path) -> None:
    trained = accuracy_after(files.train_output, "test accuracy")
    assert files.train_output.endswith(" clean.safetensors")

    r = cli(capsys, "evaluate", files.clean)
    assert r.code == 0 and "cnn on digits (clean)" in r.out
    assert accuracy_after(r.out, "test accuracy") == trained

    r = cli(capsys, "encrypt", files.clean, "--out", "enc.safetensors", "--key", "secret.key", "--max-params", 32, *ENCRYPT)
    assert r.code == 0, r.err
    clean_pct, enc_pct, drop_points, drop_relative, changed, share, _seconds = table_row(r.out, "")
    assert clean_pct == trained
    assert float(clean_pct) >= 90.0
    assert float(enc_pct) <= 30.0, "32 of ~10k scalars should break a digits CNN"
    assert float(drop_points) == pytest.approx(float(clean_pct) - float(enc_pct), abs=0.011)
    assert float(drop_relative) == pytest.approx(100 * float(drop_points) / float(clean_pct), abs=0.02)
    n_changed, total = map(int, changed.split(" / "))
    assert 1 <= n_changed <= 32
    assert total == sum(p.numel() for p in load_model(files.clean)[0].parameters())
    assert float(share) == pytest.approx(100 * n_changed / total, abs=1e-6)

    key = tmp_path / "secret.key"
    assert mode(key) == 0o600
    fingerprint = protect.SecretKey.load(key).fingerprint
    assert f"key (fingerprint {fingerprint[:16]})" in r.out
    _, enc_spec = load_model("enc.safetensors")
    assert enc_spec.extra["state"] == "encrypted" and enc_spec.extra["key_fingerprint"] == fingerprint

    clean_state, enc_state = state(files.clean), state(tmp_path / "enc.safetensors")
    assert sum(int((clean_state[k] != enc_state[k]).sum()) for k in clean_state) == n_changed

    r = cli(capsys, "evaluate", "enc.safetensors")
    assert r.code == 0 and "(encrypted)" in r.out
    assert accuracy_after(r.out, "test accuracy") == enc_pct

    r = cli(capsys, "decrypt", "enc.safetensors", "--key", "secret.key", "--out", "dec.safetensors")
    assert r.code == 0, r.err
    assert f"encrypted {enc_pct} % -> decrypted {trained} %" in r.out

    r = cli(capsys, "evaluate", "dec.safetensors")
    assert r.code == 0 and "(decrypted)" in r.out
    assert accuracy_after(r.out, "test accuracy") == trained
    assert_same_tensors(files.clean, tmp_path / "dec.safetensors")
    assert set(files_in(tmp_path)) == {"enc.safetensors", "secret.key", "dec.safetensors"}


def test_existing_key_is_kept_without_force_and_replaced_with_it(capsys, files: Files, tmp_path: Path) -> None:
    key = tmp_path / "existing.key"
    shutil.copy(files.key, key)
    before = key.read_bytes()
    argv = ["encrypt", files.clean, "--out", "new.safetensors", "--key", key.name, "--max-params", 8, *ENCRYPT]

    assert_refused(cli(capsys, *argv), "existing.key", "exists", "--force")
    assert key.read_bytes() == before
    assert not (tmp_path / "new.safetensors").exists()

    assert cli(capsys, *argv, "--force").code == 0
    assert key.read_bytes() != before and mode(key) == 0o600
    assert cli(capsys, "decrypt", "new.safetensors", "--key", key.name, "--out", "dec.safetensors").code == 0
    assert_same_tensors(files.clean, tmp_path / "dec.safetensors")


# ----------------------------------------------------------------------------------------- passphrases
def test_passphrase_from_environment(capsys, monkeypatch: pytest.MonkeyPatch, files: Files, tmp_path: Path) -> None:
    var = "ADVPARAMS_TEST_PASSPHRASE"
    monkeypatch.setenv(var, "correct horse battery")
    r = cli(capsys, "encrypt", files.clean, "--out", "enc.safetensors", "--key", "k.key", "--max-params", 8, *ENCRYPT,
            "--passphrase-env", var)
    assert r.code == 0, r.err
    key = tmp_path / "k.key"
    assert mode(key) == 0o600 and b"correct horse" not in key.read_bytes()
    decrypt = ["decrypt", "enc.safetensors", "--key", "k.key", "--out", "dec.safetensors"]

    assert_refused(cli(capsys, *decrypt), "k.key", "passphrase-protected")
    assert not (tmp_path / "dec.safetensors").exists()
    monkeypatch.setenv(var, "wrong horse")
    assert_refused(cli(capsys, *decrypt, "--passphrase-env", var), "wrong passphrase", "k.key")
    assert not (tmp_path / "dec.safetensors").exists()

    monkeypatch.setenv(var, "correct horse battery")
    assert cli(capsys, *decrypt, "--passphrase-env", var).code == 0
    assert_same_tensors(files.clean, tmp_path / "dec.safetensors")

    monkeypatch.delenv(var)
    before = files_in(tmp_path)
    assert_refused(cli(capsys, *decrypt, "--passphrase-env", var), var)
    assert_refused(cli(capsys, "encrypt", files.clean, "--out", "e2.safetensors", "--key", "k2.key", "--passphrase-env", var), var)
    assert files_in(tmp_path) == before


def test_passphrase_from_file(capsys, files: Files, tmp_path: Path) -> None:
    (tmp_path / "pass.txt").write_text("s3cret phrase\nignored second line\n")
    (tmp_path / "empty.txt").write_text("")
    r = cli(capsys, "encrypt", files.clean, "--out", "enc.safetensors", "--key", "k.key", "--max-params", 8, *ENCRYPT,
            "--passphrase-file", "pass.txt")
    assert r.code == 0, r.err
    assert mode(tmp_path / "k.key") == 0o600
    decrypt = ["decrypt", "enc.safetensors", "--key", "k.key", "--out", "dec.safetensors"]
    before = files_in(tmp_path)
    assert_refused(cli(capsys, *decrypt, "--passphrase-file", "missing.txt"), "passphrase file not found", "missing.txt")
    assert_refused(cli(capsys, *decrypt, "--passphrase-file", "empty.txt"), "empty.txt", "empty")
    assert_refused(cli(capsys, *decrypt), "passphrase-protected")
    assert files_in(tmp_path) == before

    assert cli(capsys, *decrypt, "--passphrase-file", "pass.txt").code == 0
    assert_same_tensors(files.clean, tmp_path / "dec.safetensors")
    # A passphrase offered for a key saved without one is refused too, not silently ignored.
    r = cli(capsys, "decrypt", files.enc, "--key", files.key, "--out", "dec2.safetensors", "--passphrase-file", "pass.txt")
    assert_refused(r, "not passphrase-protected")
    assert not (tmp_path / "dec2.safetensors").exists()


def test_console_script_encrypts_and_refuses_a_wrong_passphrase(files: Files, tmp_path: Path) -> None:
    (tmp_path / "pass.txt").write_text("s3cret phrase\n")
    (tmp_path / "wrong.txt").write_text("not it\n")
    env = {"ADVPARAMS_DATA_ROOT": str(tmp_path / "data")}
    r = script("encrypt", files.clean, "--out", "enc.safetensors", "--key", "k.key", "--max-params", 32, *ENCRYPT,
               "--passphrase-file", "pass.txt", cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    clean_pct, enc_pct, *_ = table_row(r.out, "")
    assert clean_pct == accuracy_after(files.train_output, "test accuracy")
    assert float(enc_pct) <= 30.0
    assert mode(tmp_path / "k.key") == 0o600

    r = script("decrypt", "enc.safetensors", "--key", "k.key", "--out", "dec.safetensors", "--passphrase-file", "wrong.txt",
               cwd=tmp_path, env=env)
    assert_refused(r, "wrong passphrase", "k.key")
    assert not (tmp_path / "dec.safetensors").exists()


# ------------------------------------------------------------------------------------------ bad input
REFUSALS = {
    "unknown data set": ("train --dataset nope --model mlp --epochs 1", ["unknown data set 'nope'", "digits"]),
    "unknown model": ("train --model nope --epochs 1", ["unknown model 'nope'", "mlp"]),
    "unknown optimizer": ("train --model mlp --epochs 1 --optimizer rmsprop", ["optimizer"]),
    "zero epochs": ("train --model mlp --epochs 0", ["epochs"]),
    "train over an existing file": ("train --model mlp --epochs 1 --out junk.safetensors", ["junk.safetensors", "exists", "--force"]),
    "missing model (evaluate)": ("evaluate missing.safetensors", ["model file not found: missing.safetensors"]),
    "missing model (encrypt)": ("encrypt missing.safetensors --out e.safetensors --key k.key", ["model file not found: missing.safetensors"]),
    "missing model (decrypt)": ("decrypt missing.safetensors --key {key} --out d.safetensors", ["model file not found: missing.safetensors"]),
    "missing model (attack)": ("attack finetune --model-file missing.safetensors", ["model file not found: missing.safetensors"]),
    "not a model file": ("evaluate junk.safetensors", ["junk.safetensors", "not a safetensors model file"]),
    "data set absent": ("evaluate {clean} --dataset fashion_mnist", ["fashion_mnist", "not found"]),
    "missing key (decrypt)": ("decrypt {enc} --key missing.key --out d.safetensors", ["key file not found: missing.key"]),
    "missing key (attack)": ("attack finetune --model-file {enc} --key missing.key", ["key file not found: missing.key"]),
    "not a key file": ("decrypt {enc} --key junk.key --out d.safetensors", ["junk.key", "not an AdvParams key file"]),
    "max-params 0": ("encrypt {clean} --out e.safetensors --key k.key --max-params 0", ["max_params", "0"]),
    "eps -1": ("encrypt {clean} --out e.safetensors --key k.key --eps -1", ["eps", "-1"]),
    "target-accuracy 2": ("encrypt {clean} --out e.safetensors --key k.key --target-accuracy 2", ["target_accuracy", "2"]),
    "params-per-step 0": ("encrypt {clean} --out e.safetensors --key k.key --params-per-step 0", ["params_per_step"]),
    "unknown method": ("encrypt {clean} --out e.safetensors --key k.key --method nope --owner-samples 128", ["'nope'", "advparams"]),
    "layers match nothing": ("encrypt {clean} --out e.safetensors --key k.key --layers nomatch* --owner-samples 128", ["nomatch*"]),
    "too many owner samples": ("encrypt {clean} --out e.safetensors --key k.key --owner-samples 100000", ["100000"]),
    "model and key the same file": ("encrypt {clean} --out same.bin --key same.bin", ["different files"]),
    "encrypt an encrypted model": ("encrypt {enc} --out e.safetensors --key k.key --owner-samples 128", ["encrypted already"]),
    "key of another model": ("decrypt {enc} --key {other_key} --out d.safetensors", ["does not match"]),
    "decrypt a decrypted model": ("decrypt {dec} --key {key} --out d.safetensors", ["already decrypted"]),
    "attack param out of range": ("attack prune --model-file {enc} --param ratio=5 --tune 1 --owner-samples 128", ["'ratio'", "5", "outside"]),
    "attack param not a choice": ("attack finetune --model-file {enc} --param optimizer=rmsprop --tune 1 --owner-samples 128",
                                  ["'optimizer'", "rmsprop"]),
    "attack param unknown": ("attack finetune --model-file {enc} --param nonexist=1 --tune 1 --owner-samples 128", ["'nonexist'", "lr"]),
    "data-fraction above 1": ("attack finetune --model-file {enc} --data-fraction 1.5", ["data_fraction", "1.5"]),
    "data-fraction 0": ("attack finetune --model-file {enc} --data-fraction 0", ["data_fraction", "0"]),
    "tune 0": ("attack finetune --model-file {enc} --tune 0", ["trials", "0"]),
    "missing sweep config": ("sweep missing.yaml", ["config file not found: missing.yaml"]),
    "sweep config not a mapping": ("sweep junk.key --dry-run", ["junk.key", "mapping"]),
}


@pytest.mark.parametrize("argv,fragments", list(REFUSALS.values()), ids=list(REFUSALS))
def test_bad_input_is_one_line_and_changes_nothing(capsys, files: Files, tmp_path: Path, argv: str,
                                                   fragments: list[str]) -> None:
    (tmp_path / "junk.safetensors").write_text("not a model\n")
    (tmp_path / "junk.key").write_text("not a key\n")
    before = files_in(tmp_path)
    assert_refused(cli(capsys, *files.format(argv)), *fragments)
    assert files_in(tmp_path) == before


def test_unknown_attack_lists_the_registered_ones(capsys, files: Files) -> None:
    line = assert_refused(cli(capsys, "attack", "nope", "--model-file", files.enc), "unknown attack 'nope'")
    assert attack_names() and all(name in line for name in attack_names())


def sweep_config(tmp_path: Path, **changes: object) -> dict:
    raw = {
        "name": "cli-plan",
        "seeds": [0, 1, 2],
        "storage": str(tmp_path / "storage"),
        "datasets": [{"name": "digits", "owner_samples": 128,
                      "models": [{"name": "mlp", "training": {"epochs": 1}}, {"name": "cnn", "training": {"epochs": 1}}]}],
        "protect": {"methods": ["advparams", "random"], "max_params": [8, 16], "eps": [0.5, 1.0]},
        "attacks": {"names": ["finetune", "prune", "scratch"], "fractions": [0.1, 0.3], "trials": 1, "epochs": 1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    raw.update(changes)
    return raw


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sweep_config_with_an_unknown_key_is_refused_before_anything_runs(capsys, tmp_path: Path) -> None:
    raw = sweep_config(tmp_path)
    raw["protect"]["epsilon"] = [0.1]
    write_yaml(tmp_path / "cfg.yaml", raw)
    before = files_in(tmp_path)
    assert_refused(cli(capsys, "sweep", "cfg.yaml"), "cfg.yaml", "protect.epsilon", "unknown key")
    assert_refused(cli(capsys, "sweep", "cfg.yaml", "--dry-run"), "protect.epsilon")
    assert_refused(cli(capsys, "sweep", "cfg.yaml", "--dry-run", "--set", "seeds"), "--set", "seeds")
    assert files_in(tmp_path) == before


def test_a_cpu_count_for_a_cluster_is_refused_before_anything_starts(capsys, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_yaml(tmp_path / "cfg.yaml", sweep_config(tmp_path))
    before = files_in(tmp_path)
    assert_refused(cli(capsys, "sweep", "cfg.yaml", "--cpus", "1", "--address", "127.0.0.1:1"),
                   "CPU count applies to a local Ray only")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert_refused(cli(capsys, "sweep", "cfg.yaml", "--cpus", "1"), "CPU count applies to a local Ray only")
    assert files_in(tmp_path) == before, "no MLflow store or storage folder may be created"


def test_argparse_errors_exit_2(capsys, files: Files) -> None:
    for argv, fragment in (
        (["encrypt", str(files.clean), "--key", "k.key"], "--out"),
        (["attack", "finetune"], "--model-file"),
        (["decrypt", str(files.enc), "--key", "k.key", "--out", "d.safetensors", "--passphrase-env", "A",
          "--passphrase-file", "f"], "not allowed with"),
        (["frobnicate"], "invalid choice"),
        (["sweep", "cfg.yaml", "--cpus", "0"], "whole number >= 1"),
        ([], "required"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        err = capsys.readouterr().err
        assert "error:" in err and fragment in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------- attacks
def test_attack_finetune_prints_clean_encrypted_and_attacked_accuracy(capsys, files: Files) -> None:
    r = cli(capsys, "attack", "finetune", "--model-file", files.enc, "--key", files.key, *ATTACK)
    assert r.code == 0, r.err
    for column in ("clean %", "encrypted %", "attacked %", "attacker val %"):
        assert column in r.out
    name, clean, encrypted, attacked, val, compute, seconds, precision, recall = table_row(r.out, "finetune")
    assert clean == accuracy_after(files.train_output, "test accuracy")
    assert encrypted == accuracy_after(cli(capsys, "evaluate", files.enc).out, "test accuracy")
    assert 0 <= float(attacked) <= 100 and 0 <= float(val) <= 100 and float(seconds) >= 0
    cap = float(ATTACK[ATTACK.index("--epochs") + 1])
    assert 0 < float(compute) <= cap, "the compute used is reported, within the cap of all trials together"
    assert float(attacked) > float(encrypted), "fine-tuning on 20 % of the data recovers some accuracy"
    assert (precision, recall) == ("-", "-"), "finetune does not report which scalars it changed"
    assert "tuned parameters:" in r.out and "lr=" in r.out


def test_attack_adaptive_scores_the_key_positions_it_found(capsys, files: Files) -> None:
    r = cli(capsys, "attack", "adaptive", "--model-file", files.enc, "--key", files.key, *ATTACK)
    assert r.code == 0, r.err
    assert "key precision %" in r.out and "key recall %" in r.out
    name, clean, encrypted, attacked, val, _compute, seconds, precision, recall = table_row(r.out, "adaptive")
    for cell in (clean, encrypted, attacked, val, precision, recall):
        assert re.fullmatch(PERCENT, cell) and 0 <= float(cell) <= 100, cell
    assert float(recall) > 0, "the adaptive attack ranks some of the key's positions"


# ---------------------------------------------------------------------------------------------- sweeps
def test_sweep_dry_run_counts_the_jobs_the_config_implies(capsys, tmp_path: Path) -> None:
    import ray

    raw = sweep_config(tmp_path)
    write_yaml(tmp_path / "cfg.yaml", raw)
    ray_was_up = ray.is_initialized()

    seeds, models = len(raw["seeds"]), len(raw["datasets"][0]["models"])
    p, a = raw["protect"], raw["attacks"]
    cells = len(p["max_params"]) * len(p["eps"])
    free = [n for n in a["names"] if not get_attack(n).uses_weights]
    assert free == ["scratch"]  # one attack that ignores the stolen weights: planned once per baseline
    trains = seeds * models
    encrypts = trains * len(p["methods"]) * cells
    attacks = trains * len(a["fractions"]) * (len(free) + (len(a["names"]) - len(free)) * len(p["methods"]) * cells)

    def counts(*extra: str) -> dict[str, int]:
        r = cli(capsys, "sweep", "cfg.yaml", "--dry-run", *extra)
        assert r.code == 0, r.err
        return {kind: int(table_row(r.out, kind)[1]) for kind in ("train", "encrypt", "attack", "total")}

    assert counts() == {"train": trains, "encrypt": encrypts, "attack": attacks, "total": trains + encrypts + attacks}
    assert (trains, encrypts, attacks) == (6, 48, 204)  # the arithmetic above, spelled out
    assert counts("--set", "seeds=[7]") == {"train": 2, "encrypt": 16, "attack": 68, "total": 86}
    assert ray.is_initialized() == ray_was_up, "a dry run must not start Ray"
    assert set(files_in(tmp_path)) == {"cfg.yaml"}, "a dry run writes nothing"


# ------------------------------------------------------------------------------------------------ help
@pytest.mark.parametrize("command", [None, "train", "evaluate", "encrypt", "decrypt", "attack", "sweep", "report", "ui"])
def test_help(capsys, command: str | None) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: advparams {command or ''}".rstrip())


# ------------------------------------------------------------- bugs found here once, kept as regressions
def test_report_on_an_empty_store_is_refused(capsys, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the store's tables, no experiment
    # A store with no experiment of ours, and naming an experiment it lacks: one line each.
    assert_refused(cli(capsys, "report", "--tracking-uri", uri), "no experiment in", uri)
    assert_refused(cli(capsys, "report", "nope", "--tracking-uri", uri), "no experiment named 'nope'")
    assert_refused(cli(capsys, "report", "--tolerance", "-1", "--tracking-uri", uri), "--tolerance -1 must be")


def test_report_on_a_new_store_prints_only_the_error(capsys, tmp_path: Path) -> None:
    r = cli(capsys, "report", "--tracking-uri", f"sqlite:///{tmp_path / 'new.db'}")
    assert_refused(r, "no MLflow store at")
    assert not (tmp_path / "new.db").exists()


def test_error_inside_a_progress_bar_is_exactly_one_line(capsys) -> None:
    r = cli(capsys, "encrypt", "missing.safetensors", "--out", "e.safetensors", "--key", "k.key")
    assert r.code == 2
    assert r.err == "advparams: error: model file not found: missing.safetensors\n"


def test_sweep_refuses_an_unknown_attack_name(capsys, tmp_path: Path) -> None:
    raw = sweep_config(tmp_path)
    raw["attacks"]["names"] = ["finetune", "nope"]
    write_yaml(tmp_path / "cfg.yaml", raw)
    assert_refused(cli(capsys, "sweep", "cfg.yaml", "--dry-run"), "nope")


def test_bad_model_argument_value_is_one_line(capsys) -> None:
    assert_refused(cli(capsys, "train", "--model", "mlp", "--model-arg", "hidden=abc", "--epochs", "1"), "hidden")


def test_study_files_missing_folders_are_made_and_foreign_files_refused(capsys, files: Files, tmp_path: Path) -> None:
    r = cli(capsys, "attack", "finetune", "--model-file", files.enc, "--study", "nodir/s.journal", *ATTACK)
    assert r.code == 0 and (tmp_path / "nodir" / "s.journal").stat().st_size > 0
    (tmp_path / "notes.txt").write_text("not a journal {")
    r = cli(capsys, "attack", "finetune", "--model-file", files.enc, "--study", "notes.txt", *ATTACK)
    assert_refused(r, "notes.txt", "cannot be used as an Optuna journal")


def test_failed_model_write_leaves_no_key(capsys, files: Files, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    r = cli(capsys, "encrypt", files.clean, "--out", "adir", "--key", "k.key", "--max-params", 8, *ENCRYPT)
    assert_refused(r, "adir")
    assert not (tmp_path / "k.key").exists()


def test_mistyped_tracking_uri_is_one_line(capsys) -> None:
    assert_refused(cli(capsys, "report", "--tracking-uri", "sqlit:///mlflow.db"), "sqlit:///mlflow.db")


def test_decrypt_refuses_to_write_over_its_key(capsys, files: Files, tmp_path: Path) -> None:
    shutil.copy(files.key, tmp_path / "k.key")
    before = files_in(tmp_path)
    assert_refused(cli(capsys, "decrypt", files.enc, "--key", "k.key", "--out", "k.key"), "k.key")
    assert files_in(tmp_path) == before
