"""``interplab serve`` in headless Chromium (marked ``browser``): uvicorn serves the app on a free loopback port in a
thread; the test loads the page, types a prompt carrying ``<script>``, submits it, waits for the logit-lens table
of the run's report, sees the hostile text shown as text with no alert, and checks that a second browser (a fresh
cookie) does not see the first one's run unless it asks for every run."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from browser import start_chromium
from tiny_tokenized import XSS_TOKEN

from interplab.serve import make_app

XSS_PROMPT = f"{XSS_TOKEN} When Mary and John went to the store, & John"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(report_model, tmp_path):
    import uvicorn

    app = make_app(report_model, tmp_path / "runs")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    t = time.monotonic()
    while not srv.started:
        assert thread.is_alive() and time.monotonic() - t < 30, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def chromium(tmp_path):
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_serve_page_in_headless_chromium(server, chromium):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = chromium

    def loaded_runs() -> int:
        WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "runs").get_attribute("data-loaded") is not None)
        return int(d.find_element(By.ID, "runs").get_attribute("data-loaded") or 0)

    d.get(server + "/")
    WebDriverWait(d, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert loaded_runs() == 0

    # bad input: a clear message on the page, no job
    Select(d.find_element(By.ID, "analysis")).select_by_value("lens")
    d.find_element(By.ID, "submit").click()
    WebDriverWait(d, 30).until(lambda d: "prompt is empty" in d.find_element(By.ID, "error").text)

    # a prompt with <script> in it: the lens runs, the table shows, the text stays text
    d.find_element(By.ID, "prompt").send_keys(XSS_PROMPT)
    d.find_element(By.ID, "submit").click()
    WebDriverWait(d, 120).until(lambda d: d.find_element(By.ID, "job").get_attribute("data-state") == "complete")
    assert d.find_element(By.ID, "error").text == ""
    runs = d.find_elements(By.CSS_SELECTOR, "#runs li")
    assert len(runs) == 1 and XSS_TOKEN in runs[0].text
    run_id = runs[0].get_attribute("data-id")
    assert run_id and run_id in d.find_element(By.ID, "run-id").text

    frame = d.find_element(By.ID, "result")
    WebDriverWait(d, 30).until(lambda d: (frame.get_attribute("src") or "").endswith("/report.html"))
    d.switch_to.frame(frame)
    try:
        WebDriverWait(d, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#lens table.ipl-table tbody tr"))
        assert XSS_TOKEN in d.find_element(By.TAG_NAME, "body").text
        assert d.execute_script(
            "return Array.from(document.scripts).every(function(s){ return s.textContent.trim() !== 'alert(1)'; })"
        )
        WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".ipl-figure .main-svg"))
        urls = d.execute_script("return performance.getEntriesByType('resource').map(function(e){ return e.name; })")
        assert all(u.startswith(("data:", "blob:")) for u in urls), urls  # the report loads nothing
    finally:
        d.switch_to.default_content()
    urls = d.execute_script("return performance.getEntriesByType('resource').map(function(e){ return e.name; })")
    assert all(u.startswith((server, "data:", "blob:")) for u in urls), urls  # nothing from the network
    assert d.execute_script("return window.__iplAlerts") == 0
    try:
        _ = d.switch_to.alert
        pytest.fail("an alert dialog opened")
    except NoAlertPresentException:
        pass
    assert d.execute_script("return window.__iplErrors") == []
    severe = [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert [m for m in severe if not ("/api/jobs" in m and "status of 400" in m)] == []  # only the refused empty prompt

    # a second browser (a fresh cookie) does not see that run unless it asks for every run
    d.delete_all_cookies()
    d.get(server + "/")
    assert loaded_runs() == 0
    assert d.find_element(By.ID, "no-runs").is_displayed()
    Select(d.find_element(By.ID, "scope")).select_by_value("all")
    WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "runs").get_attribute("data-loaded") == "1")
    theirs = d.find_element(By.CSS_SELECTOR, "#runs li")
    assert theirs.get_attribute("data-id") == run_id and "not yours" in theirs.text
