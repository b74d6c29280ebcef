"""Headless Chromium for the drawing page: the browser test and benchmarks/other_writers.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
MISSING = "needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"


def browser_paths() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def headless_chromium(browser: str, driver: str) -> Iterator:
    """A Selenium session at the window size the page's strokes are measured for."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()
