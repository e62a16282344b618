"""Opening `advparams ui` in a real browser: Debian's Chromium driven by Playwright (the browser test and
`benchmarks/ui_screenshots.py` share it). Playwright's own browser download is not needed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
URL = re.compile(r"(http://\S+/#/experiments/\S+)")
#: The README's chart: X axis, Y axis (MLflow titles it "X vs. Y").
SCATTER = ("encrypted_pct", "stolen_value_points")


@contextmanager
def running_ui(uri: str, port: int) -> Iterator[str]:
    """`advparams ui` on the store ``uri`` in a subprocess; yields the URL it printed, ends it on exit."""
    ui = subprocess.Popen([sys.executable, "-m", "bench.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_wide())
    try:
        line = ui.stdout.readline()
        found = URL.search(line)
        if not found:
            raise RuntimeError(f"advparams ui printed {line!r}: {ui.stderr.read() if ui.poll() is not None else ''}")
        yield found.group(1)
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def _wide() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "1000"}  # the URL on one line


@contextmanager
def browser_page(width: int = 1800, height: int = 900) -> Iterator[Any]:
    """A page of a headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_comparison(page: Any, url: str) -> None:
    """Open the comparison and wait until its summary runs are listed (the assistant panel closed)."""
    page.goto(url)
    page.get_by_text("Group: advparams").first.wait_for(timeout=60_000)
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def add_scatter_chart(page: Any) -> Any:
    """The README's chart step, click by click, on the open comparison: Chart view (the second button left of the
    search box, named only by its tooltip), Add chart, Scatter chart, X and Y axis, Add chart. The chart lands
    last among the model metrics, so the chart search brings it up. Returns its card."""
    chart_view = page.locator("label", has=page.locator("input[value=CHART]"))
    chart_view.hover()
    page.get_by_role("tooltip").filter(has_text="Chart view").wait_for()
    chart_view.click()
    page.get_by_role("button", name="Add chart").first.click()  # the first section's: Model metrics
    page.get_by_role("menuitem", name="Scatter chart").click()
    dialog = page.get_by_role("dialog", name="Add new chart")
    for axis, metric in zip(("X axis", "Y axis"), SCATTER):
        field = dialog.get_by_test_id("experiment-view-compare-runs-config-field").filter(
            has=page.get_by_role("heading", name=axis))
        field.get_by_role("combobox").fill(metric)
        page.get_by_title(metric, exact=True).filter(visible=True).click()  # the match the search left
    dialog.get_by_role("button", name="Add chart").click()
    page.get_by_placeholder("Search metric charts").fill(SCATTER[1])
    title = page.get_by_role("heading", name=f"{SCATTER[0]} vs. {SCATTER[1]}", exact=True)
    card = page.get_by_test_id("experiment-view-compare-runs-card").filter(has=title)
    card.wait_for()
    return card


def main() -> None:
    """Screenshots of the comparison and its scatter chart for the README, from the store of a real sweep (default: `make demo`'s)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="quick")
    parser.add_argument("--port", type=int, default=5099)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/screenshots"))
    args = parser.parse_args()
    from bench.sweep.tracking import Tracker

    Tracker(args.tracking_uri, args.experiment)  # a store from an older version gets the comparison view
    args.out.mkdir(parents=True, exist_ok=True)
    with running_ui(args.tracking_uri, args.port) as url, browser_page(width=1600, height=700) as page:
        open_comparison(page, url)
        page.wait_for_timeout(1500)
        _screenshot(page, args.out / "comparison.png")
        add_scatter_chart(page)
        page.set_viewport_size({"width": 1600, "height": 760})  # the chart's legend too
        page.mouse.move(0, 0)  # no hover toolbar over the chart
        page.wait_for_timeout(1500)
        _screenshot(page, args.out / "chart.png")


def _screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path))
    print(f"{path}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
