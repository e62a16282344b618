"""The comparison in a real browser: a tiny sweep, `advparams ui` on its store, headless Chromium.

What the README's "Compare in the MLflow UI" promises is checked as a user sees it: the link that
`advparams ui` prints opens the summary runs grouped by method with the deciding figures as columns, with
no click at all.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sweep_helpers import tiny_config

from bench.sweep.driver import run_sweep
from benchmarks.ui_screenshots import (
    CHROMIUM,
    browser_page,
    open_comparison,
    running_ui,
)

pytestmark = pytest.mark.ray

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright", reason="playwright is not installed (the test extra)")


def test_the_ui_opens_on_the_comparison(ray_session, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, attacks={"names": ["finetune", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1})
    assert run_sweep(cfg).ok
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running_ui(cfg.tracking.uri, port) as url, browser_page() as page:
        open_comparison(page, url)
        text = page.inner_text("body")
    assert "Group: advparams" in text and "Group: random" in text, text
    for column in ("stolen_value_points", "worst_case_attacked", "scratch_accuracy", "encrypted_pct", "attacker_pct"):
        assert column in text, column
    assert "digits/mlp/advparams[n=8,eps=1]/summary@20%,1ep/seed=0" in text
    assert "GenAI" not in text.split("Runs", 1)[1][:200] and "Token Usage" not in text
