"""Pages opened in a real browser: every image renders and the console stays clean."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import needs_shared_photos, planted_pets

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = os.environ.get("PAWNET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no chromium on PATH (.ci/run installs Debian's chromium)")


def _render(page_file: Path, screenshot: Path) -> tuple[list[int], list[str]]:
    """Each image's width as rendered (0: broken) and the console's errors; a full-page screenshot."""
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    print(f"screenshot: {screenshot}")
    return widths, errors


def test_report_renders_in_chromium(patch_model):
    OUTPUT.mkdir(exist_ok=True)
    widths, errors = _render(patch_model.path / "report.html", OUTPUT / "report.png")
    assert len(widths) == 34 and all(w > 0 for w in widths), widths
    assert errors == []


@needs_shared_photos
def test_label_review_renders_in_chromium(tmp_path):
    from pawnet import labels

    root, _ = planted_pets(tmp_path / "pets", n=60, flips=3, not_pets=4)
    result = labels.check_labels(root)
    page = labels.write_review(result, tmp_path / "review.html")
    widths, errors = _render(page, tmp_path / "label_review.png")
    assert len(widths) == len(result["label_issues"]) >= 8 and all(w > 0 for w in widths), widths
    assert errors == []
