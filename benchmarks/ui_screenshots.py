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


def main() -> None:
    """Screenshots of the comparison for the README, from the store of a real sweep (default: `make demo`'s)."""
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
        path = args.out / "comparison.png"
        page.screenshot(path=str(path))
        print(f"{path}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
