"""The comparison in a real browser: a tiny sweep, `advparams ui` on its store, headless Chromium.

What the README's "Compare in the MLflow UI" promises is checked as a user sees it: the link that
`advparams ui` prints opens the summary runs grouped by method with the deciding figures as columns, with
no click at all; the README's chart clicks (`add_scatter_chart`, which also makes its screenshot) chart
stolen value against the share of parameters changed, one point per method.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from sweep_helpers import tiny_config

from bench.sweep.driver import run_sweep
from benchmarks.ui_screenshots import (
    CHROMIUM,
    SCATTER,
    add_scatter_chart,
    browser_page,
    open_comparison,
    running_ui,
)

pytestmark = pytest.mark.ray

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright", reason="playwright is not installed (the test extra)")


@pytest.fixture(scope="module")
def ui_url(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The link `advparams ui` prints for a tiny sweep's store: two methods, one summary run each."""
    tmp = tmp_path_factory.mktemp("ui")
    cfg = tiny_config(tmp, attacks={"names": ["finetune", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1})
    assert run_sweep(cfg).ok
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running_ui(cfg.tracking.uri, port) as url:
        yield url


def test_the_ui_opens_on_the_comparison(ui_url: str) -> None:
    with browser_page() as page:
        open_comparison(page, ui_url)
        text = page.inner_text("body")
    assert "Group: advparams" in text and "Group: random" in text, text
    for column in ("stolen_value_points", "worst_case_attacked", "scratch_accuracy", "encrypted_pct", "attacker_pct"):
        assert column in text, column
    assert "digits/mlp/advparams[n=8,eps=1]/summary@20%,1ep/seed=0" in text
    assert "GenAI" not in text.split("Runs", 1)[1][:200] and "Token Usage" not in text


def test_the_readme_clicks_chart_stolen_value_against_the_share_changed(ui_url: str) -> None:
    with browser_page() as page:
        open_comparison(page, ui_url)
        card = add_scatter_chart(page)
        x_title, y_title = (card.get_by_text(metric, exact=True).bounding_box() for metric in SCATTER)
        legend = card.inner_text()
        points = card.locator(".scatterlayer .point").count()  # Plotly's markers
    assert x_title["width"] > x_title["height"] and y_title["height"] > y_title["width"], (x_title, y_title)
    assert x_title["y"] > y_title["y"] + y_title["height"] / 2 and y_title["x"] < x_title["x"], "X below, Y left"
    assert "advparams" in legend and "random" in legend, legend
    assert points == 2, f"{points} points; one per method's summary run"
