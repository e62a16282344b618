"""`python -m bench.sweep.loop`: a config's jobs in one process, with the figures the speed benchmark reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from sweep_helpers import tiny_config

from bench.sweep.loop import run_loop


def test_the_loop_runs_every_job_with_the_same_results_as_the_job_functions(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, protect={"methods": ["advparams"], "max_params": [4], "eps": [1.0]},
                      attacks={"names": ["finetune", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1})
    results = run_loop(cfg)
    kinds = [r.kind for r in results.values()]
    assert kinds == ["train", "encrypt", "attack", "attack"] and all(r.status == "FINISHED" for r in results.values())
    encrypt = next(r for r in results.values() if r.kind == "encrypt")
    assert encrypt.metrics["acc_encrypted"] < encrypt.metrics["acc_clean"] == encrypt.metrics["acc_decrypted"]
    assert len(list((tmp_path / "storage" / "keys").glob("*.key"))) == 1
    again = run_loop(tiny_config(tmp_path / "again", protect={"methods": ["advparams"], "max_params": [4], "eps": [1.0]},
                                 attacks={"names": ["finetune", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1}))
    keys = [next(r for r in rs.values() if r.kind == "encrypt").tags["key_fingerprint"] for rs in (results, again)]
    assert keys[0] == keys[1], "the same seed gives the same key in another storage folder"


def _loop(*argv: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.sweep.loop", *map(str, argv)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_command_writes_its_figures(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, protect={"methods": ["random"], "max_params": [4], "eps": [1.0]},
                      attacks={"names": ["clip"], "fractions": [0.2], "trials": 1, "epochs": 1})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    done = _loop("cfg.yaml", "--result", "figures.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["jobs"] == 3 and figures["seconds"] > 0 and figures["peak_rss_mib"] > 50
    assert done.stdout.startswith("3 jobs in ")
    assert not (tmp_path / "mlflow.db").exists(), "the loop tracks nothing"


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _loop("nope.yaml", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "bench.sweep.loop: error: config file not found: nope.yaml"
