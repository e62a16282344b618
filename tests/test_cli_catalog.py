"""`advparams list` shows the four registries as they are; `--version` and `--help` answer without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import cli

from attacks import attack_names
from bench.zoo.data import DATASETS
from bench.zoo.models import MODELS
from protect.registry import METHODS

ROOT = Path(__file__).parent.parent


def test_list_json_holds_every_registered_name_with_its_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "list", "--json")
    assert run.code == 0, run.err
    found = json.loads(run.out)
    assert [e["name"] for e in found["methods"]] == METHODS.names()
    assert [e["name"] for e in found["attacks"]] == attack_names()
    assert [e["name"] for e in found["datasets"]] == DATASETS.names()
    assert [e["name"] for e in found["models"]] == MODELS.names()
    advparams = next(e for e in found["methods"] if e["name"] == "advparams")
    loss = next(o for o in advparams["options"] if o["name"] == "loss")
    assert loss["default"] == "ce" and loss["choices"] == ["ce", "margin"] and loss["help"]
    finetune = next(e for e in found["attacks"] if e["name"] == "finetune")
    lr = next(p for p in finetune["params"] if p["name"] == "lr")
    assert lr["kind"] == "float" and lr["range"][0] < lr["default"] < lr["range"][1] and lr["help"]
    assert next(e for e in found["models"] if e["name"] == "vgg_compact")["arguments"] == {"width": 32}
    assert next(e for e in found["datasets"] if e["name"] == "imagefolder")["needs_path"]
    assert all(e["summary"] for kind in found.values() for e in kind)


def test_list_table_names_every_entry_and_one_kind_alone(capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "list")
    assert run.code == 0
    for name in [*METHODS.names(), *attack_names(), *DATASETS.names(), *MODELS.names()]:
        assert name in run.out
    assert "loss=ce choice {ce, margin}" in run.out
    only = cli(capsys, "list", "attacks", "--json")
    assert list(json.loads(only.out)) == ["attacks"]


def test_version_is_the_projects() -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run([sys.executable, "-m", "bench.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"advparams {expected}"


def test_help_and_argument_errors_do_not_import_torch() -> None:
    """--help must answer at once: building the parser and reading a bad argument must not load torch."""
    probe = (
        "import sys\n"
        "from bench.cli import build_parser\n"
        "for argv in (['--help'], ['sweep', '--help'], ['list', 'nothing']):\n"
        "    try:\n"
        "        build_parser().parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
