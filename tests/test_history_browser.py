"""The history page in real headless Chromium: no errors, every plot decodes, the steps table
names the commits, user text stays text, and a full-page screenshot for people to look at.

Skipped when Chromium or playwright is missing, unless HARNESS_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from test_history import DAY, ENV, T0, _calls, fake_run
from test_report_browser import _chromium, chromium_tab

from harness.history.report import build_history_report
from harness.history.store import HistoryStore

pytestmark = pytest.mark.browser
SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "history-screenshot.png"
EVIL = "<img src=x onerror=window.__pwned=1>"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """index.html of 14 commits (+25% latency at commit 8; a torch upgrade at 11, 20% faster) in headless Chromium."""
    exe = _chromium()
    root = tmp_path_factory.mktemp("hbrowser")
    rng = np.random.default_rng(7)
    commits = [hashlib.sha1(bytes([i])).hexdigest() for i in range(14)]
    with HistoryStore(root / "history.sqlite") as store:
        for i, commit in enumerate(commits):
            env = {**ENV, "versions": {**ENV["versions"], "torch": "2.14.0" if i >= 11 else "2.13.0"}}
            fad = 2.0 + rng.normal(0, 0.03)
            run = fake_run(root, f"run{i:02d}", _calls(rng, 300 * (1.25 if i >= 8 else 1.0) * (0.8 if i >= 11 else 1.0)), env,
                           (fad, fad - 0.15, fad + 0.15), checkpoint=f"/ck/{EVIL}")
            store.add(run, commit=commit, commit_time=T0 + i * DAY)
    report = build_history_report(root / "history.sqlite", root / "report")
    with chromium_tab(exe, report.files["html"], width=1200) as (tab, errors):
        yield tab, errors, commits


def test_every_plot_decodes_and_nothing_fails(page):
    tab, errors, _ = page
    images = tab.eval_on_selector_all("img", "is => is.map(i => [i.src.slice(0, 22), i.naturalWidth])")
    assert len(images) == 2  # latency and FAD of the one cell
    assert all(src == "data:image/png;base64," and width > 0 for src, width in images), images
    assert errors == []


def test_steps_table_names_the_commits_and_links_to_the_plot(page):
    tab, errors, commits = page
    rows = tab.eval_on_selector_all("#steps-table tbody tr", "rs => rs.map(r => [r.className, r.innerText])")
    assert [cls for cls, _ in rows] == ["environment", "regression"]  # newest first
    assert commits[11][:10] in rows[0][1] and "torch 2.13.0 → 2.14.0" in rows[0][1]
    assert commits[8][:10] in rows[1][1] and commits[7][:10] in rows[1][1] and "+2" in rows[1][1]
    tab.click("#steps-table tbody tr.regression a")
    assert tab.evaluate("location.hash") == "#fig-latency-ms-total-p50"
    assert tab.locator("#fig-latency-ms-total-p50").is_visible()
    assert errors == []


def test_user_text_is_shown_as_text_and_never_runs(page):
    tab, errors, _ = page
    assert EVIL in tab.inner_text("#steps-table")
    assert tab.evaluate("typeof window.__pwned") == "undefined"
    assert tab.locator("#steps-table img").count() == 0
    assert errors == []


def test_full_page_screenshot(page):
    tab, _, _ = page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
