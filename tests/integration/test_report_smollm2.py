"""Integration tests on the real SmolLM2-135M (marked ``integration``) and the browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import start_chromium
from tiny_tokenized import REPORT_SECTIONS, XSS_TOKEN

import interplab
from interplab.analyses.observational.lens import LogitLensResult
from interplab.report import (
    Html,
    Report,
    build_report,
)


def _check_page(d, page: Path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d.get(page.as_uri())
    WebDriverWait(d, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    for sid in REPORT_SECTIONS:
        assert d.find_element(By.ID, sid).is_displayed(), sid
    # plotly.js (inline) drew every figure; nothing was fetched from anywhere but the file itself
    WebDriverWait(d, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".ipl-figure .main-svg")) >= 2)
    urls = d.execute_script("return performance.getEntriesByType('resource').map(function(e){ return e.name; })")
    assert all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls
    ticks = [e.get_attribute("textContent") for e in d.find_elements(By.CSS_SELECTOR, ".ipl-figure .xtick text")]
    assert any(XSS_TOKEN in t for t in ticks), ticks[:20]  # the figure shows the token literally too

    viewer = d.find_element(By.CSS_SELECTOR, ".ipl-attn")
    grid = viewer.find_element(By.CSS_SELECTOR, "table.ipl-attn-grid")
    assert viewer.get_attribute("data-ready") == "1"
    n_tok = len(grid.find_elements(By.CSS_SELECTOR, "tr")) - 1
    assert n_tok > 5 and len(grid.find_elements(By.CSS_SELECTOR, "td")) == n_tok * n_tok

    def state():
        return (grid.get_attribute("innerHTML"), viewer.find_element(By.CSS_SELECTOR, ".ipl-attn-caption").text)

    before = state()
    Select(viewer.find_element(By.CSS_SELECTOR, "select.ipl-attn-head")).select_by_index(1)
    after_head = state()
    assert viewer.get_attribute("data-head") == "1" and after_head[0] != before[0] and after_head[1] != before[1]
    Select(viewer.find_element(By.CSS_SELECTOR, "select.ipl-attn-layer")).select_by_index(1)
    after_layer = state()
    assert viewer.get_attribute("data-layer") == "1" and after_layer[0] != after_head[0]
    # clicking a query row re-colours the token strip for that query
    strip = viewer.find_element(By.CSS_SELECTOR, ".ipl-attn-tokens")
    strip_before = strip.get_attribute("innerHTML")
    grid.find_elements(By.CSS_SELECTOR, "th.ipl-query")[1].click()
    assert viewer.get_attribute("data-query") == "1" and strip.get_attribute("innerHTML") != strip_before

    # the hostile token is shown as text — in the prompt text and in the viewer — and never ran
    body = d.find_element(By.TAG_NAME, "body").text
    assert XSS_TOKEN in body
    assert XSS_TOKEN in strip.text
    assert d.execute_script("return window.__iplAlerts") == 0
    try:
        _ = d.switch_to.alert
        pytest.fail("an alert dialog opened")
    except NoAlertPresentException:
        pass
    assert d.execute_script("return window.__iplErrors") == []
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


@pytest.fixture(scope="module")
def smol():
    return interplab.load("smollm2-135m")


@pytest.mark.browser
def test_report_in_headless_chromium(report_dir, tmp_path):
    d = start_chromium(tmp_path / "chromium-profile")  # fails (not skips) without Chromium
    try:
        _check_page(d, report_dir / "report.html")
        # negative control: the harness does notice a script that runs (trusted raw markup here)
        control = Report("control").section("c", Html(XSS_TOKEN)).save(tmp_path / "control.html")
        d.get(control.as_uri())
        assert d.execute_script("return window.__iplAlerts") == 1
    finally:
        d.quit()


@pytest.mark.integration
def test_report_smollm2(smol, tmp_path):
    t = time.perf_counter()
    path = build_report(smol, tmp_path)
    seconds = time.perf_counter() - t
    print(f"build_report(smollm2-135m): {seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
    html = path.read_text(encoding="utf-8")
    for sid in REPORT_SECTIONS:
        assert f'<section class="ipl-section" id="{sid}">' in html
    viewer = html[html.index('class="ipl-attn"') :]
    assert viewer.count("<option") == 30 + 9
    ioi = LogitLensResult.load(tmp_path / "lens_ioi.json")
    assert ioi.answer == " Mary" and ioi.answer_rank[-1] == 1
    assert LogitLensResult.load(tmp_path / "lens_factual.json").answer_rank[-1] == 1
    assert len(ioi.layers) == 30
