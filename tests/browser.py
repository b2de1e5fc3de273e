"""Headless Chromium for the browser tests (the report's and the serve page's): Debian's chromium and chromedriver,
with every page's errors and any ``alert()`` attempt recorded in ``window.__iplErrors`` / ``window.__iplAlerts``
before its scripts run. Not a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def start_chromium(profile_dir):
    """A headless Chromium driver with its profile in ``profile_dir``; fails (not skips) without Chromium."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"The browser test needs headless Chromium, but {', '.join(missing)} is missing. "
            "Run `make setup` (it installs the Debian packages chromium and chromium-driver).",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={profile_dir}",
    ]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    # before any page script runs: record errors and any alert() attempt
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": """
        window.__iplErrors = []; window.__iplAlerts = 0;
        window.addEventListener('error', function(e){ window.__iplErrors.push(String(e.message)); });
        window.alert = function(){ window.__iplAlerts += 1; };
    """
        },
    )
    return driver
