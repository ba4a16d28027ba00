"""A real headless browser (Debian's Chromium + ChromeDriver, driven by Selenium) for what a person sees."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# No background traffic: this machine has no network, and Chromium would retry its own services at every start.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


def require_browser() -> None:
    """Fail (not skip) when the browser is missing: `make test` installs it (apt chromium chromium-driver)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver (make test does)")


@contextmanager
def browser() -> Iterator[object]:
    """A headless Chromium session with a throw-away profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    profile = tempfile.mkdtemp(prefix="cv-chromium-")
    opts = webdriver.ChromeOptions()
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(driver, url: str, expect: list[str], timeout: float = 60) -> str:
    """Load ``url`` and wait until every string in ``expect`` shows in the page's text; return that text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)

    def ready(d) -> str | bool:
        text = d.find_element("tag name", "body").text
        return text if all(e in text for e in expect) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(ready)
    except TimeoutException:
        text = driver.find_element("tag name", "body").text
        raise AssertionError(f"{url} never showed {expect}; page text:\n{text[:2000]}") from None
