"""The HTML report in real headless Chromium (playwright, the system's browser): no errors,
sorting, playable audio, escaped prompts, and a full-page screenshot for people to look at.

Skipped when Chromium or playwright is missing, unless HARNESS_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from harness.report.build import build_report
from test_report import ERROR, HTML_PROMPT, write_run

pytestmark = pytest.mark.browser
SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "report-screenshot.png"


def _chromium() -> str:
    """Path of the system Chromium, after checking playwright imports; skips (or fails in CI) if not."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install -e '.[test]')")
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if exe is None:
        problems.append("chromium is not installed (apt-get install chromium)")
    if problems:
        message = "; ".join(problems)
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HARNESS_REQUIRE_BROWSER=1 but {message}: install chromium (apt-get install chromium) "
                        "and playwright")
        pytest.skip(message)
    return exe


@contextmanager
def chromium_tab(exe: str, html: Path, width: int) -> Iterator[tuple[Any, list[str]]]:
    """``html`` loaded in a headless Chromium tab, with a list that collects its console errors,
    page errors and dialogs (dismissed) while the caller uses it."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": width, "height": 900})
            tab.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            tab.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            tab.goto(html.as_uri())
            tab.wait_for_load_state("load")
            yield tab, errors
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_audio_path):
    """index.html of a 3-cell run (two failed samples) open in headless Chromium, with its errors."""
    exe = _chromium()
    root = tmp_path_factory.mktemp("browser")
    run = write_run(root, "b", [2, 3, 10], ["ddim"], fail=True)  # 10 < 2 as text: sorting must be numeric
    report = build_report([run], root / "report", formats=("html", "csv"), listen=2)
    with chromium_tab(exe, report.files["html"], width=1400) as (tab, errors):
        yield tab, errors


def _column(tab, title: str) -> list[float]:
    index = tab.eval_on_selector_all("#cells-table thead th",
                                     f"hs => hs.findIndex(h => h.textContent.trim() === {title!r})")
    assert index >= 0, f"no column {title!r}"
    values = tab.eval_on_selector_all("#cells-table tbody tr", f"rs => rs.map(r => r.cells[{index}].dataset.sort)")
    return [float(v) for v in values]


def test_page_loads_without_errors_and_everything_resolves(page):
    tab, errors = page
    images = tab.eval_on_selector_all("img", "is => is.map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert images and all(width > 0 for _, width in images), images
    tab.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)",
                          timeout=15000)  # Chromium read every WAV's header: the files exist and decode
    sources = tab.eval_on_selector_all("audio", "as => as.map(a => a.src)")
    assert len(sources) == 5  # 2 pairs x 3 cells, less seed 1 failed at 2 steps
    for src in sources:
        assert src.startswith("file://") and Path(unquote(urlparse(src).path)).is_file(), src
    assert ERROR in tab.inner_text("#listen-table")
    assert errors == []


def test_clicking_a_header_sorts_numerically_both_ways(page):
    tab, errors = page
    steps = tab.locator("#cells-table thead th", has_text="steps")
    steps.click()
    assert _column(tab, "steps") == [2.0, 3.0, 10.0]
    assert tab.get_attribute("#cells-table thead th[aria-sort]", "aria-sort") == "ascending"
    steps.click()
    assert _column(tab, "steps") == [10.0, 3.0, 2.0]
    latency = tab.locator("#cells-table thead th", has_text="latency p50 (ms)")
    latency.click()
    ascending = _column(tab, "latency p50 (ms)")
    assert ascending == sorted(ascending) and len(set(ascending)) == 3
    latency.click()
    assert _column(tab, "latency p50 (ms)") == ascending[::-1]
    assert tab.get_attribute("#cells-table thead th[aria-sort]", "aria-sort") == "descending"
    assert errors == []


def test_html_in_a_prompt_is_shown_as_text_and_never_runs(page):
    tab, errors = page
    assert HTML_PROMPT in tab.inner_text("#listen-table")
    assert tab.evaluate("typeof window.__pwned") == "undefined"
    assert tab.locator("#listen-table script, #listen-table img, #listen-table b").count() == 0
    assert errors == []


def test_full_page_screenshot(page):
    tab, _ = page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
