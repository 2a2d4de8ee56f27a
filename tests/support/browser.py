"""Headless Chromium through Selenium, and the few moves every console test makes with it.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); :func:`open_chromium` returns
None when they are missing so the caller can apply the suite's skip-or-fail rule.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.support.console_stack import chromium_paths

WAIT_S = 15.0
SCREENSHOTS = os.environ.get("STORAGE_TEST_SCREENSHOTS", "")
"""A folder for the pages' screenshots (``docs/console`` when refreshing the docs); unset, they go to the
test's temporary folder."""

T = TypeVar("T")


def open_chromium() -> webdriver.Chrome | None:
    paths = chromium_paths()
    if paths is None:
        return None
    binary, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    return chrome


@dataclass
class Browser:
    """One console seen through the shared Chromium: ``open`` a path, ``find`` by CSS, wait for a condition."""

    driver: webdriver.Chrome
    base_url: str
    shots: Path

    def open(self, path: str) -> Browser:
        self.driver.get(self.base_url + path)
        return self

    @property
    def path(self) -> str:
        """The current address without the console's base (``/artifacts?trace_id=...``)."""
        return self.driver.current_url.removeprefix(self.base_url)

    def find(self, css: str) -> WebElement:
        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), f"an element {css!r}")

    def reload_until(self, css: str, timeout_s: float = WAIT_S) -> WebElement:
        """Reload the page until ``css`` is on it (what the server learns by events shows on the next load)."""

        def reloaded() -> WebElement | None:
            self.driver.refresh()
            found = self.driver.find_elements(By.CSS_SELECTOR, css)
            return found[0] if found else None

        return self.wait(reloaded, f"an element {css!r} after a reload", timeout_s)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def has(self, css: str) -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def texts(self, css: str) -> list[str]:
        return [element.text for element in self.find_all(css)]

    def attrs(self, css: str, name: str) -> list[str]:
        return [element.get_attribute(name) or "" for element in self.find_all(css)]

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def click(self, css: str) -> None:
        self.find(css).click()

    def wait(self, probe: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
        """``probe()``'s first truthy result; a probe that raises "not found" is retried like a falsy one."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                found = probe()
                if found:
                    return found
            except (NoSuchElementException, StaleElementReferenceException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waited {timeout_s:.0f}s for {what}; the page at {self.path} says:\n{self.body()}"
                )
            time.sleep(0.1)

    def body(self) -> str:
        try:
            return self.driver.find_element(By.TAG_NAME, "main").text[:2000]
        except NoSuchElementException:
            return self.driver.page_source[:2000]

    def screenshot(self, name: str) -> Path:
        """The whole page as ``<name>.png`` (the docs' folder when ``STORAGE_TEST_SCREENSHOTS`` is set)."""
        folder = Path(SCREENSHOTS) if SCREENSHOTS else self.shots
        folder.mkdir(parents=True, exist_ok=True)
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        target = folder / f"{name}.png"
        target.write_bytes(base64.b64decode(shot["data"]))
        return target
