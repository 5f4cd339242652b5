"""A real headless browser for page tests: Debian's Chromium and its driver, through selenium.

`.ci/run` installs the packages `chromium` and `chromium-driver` when they are missing.
Elsewhere a test without them is skipped, except under CI (`CI` set), where it fails:
a page test that silently does not run would prove nothing.
"""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def require():
    """Skips (fails under CI) when the browser or its driver is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER)
               if not (os.path.exists(path) or shutil.which(path))]
    if missing:
        message = (f"no {', '.join(missing)}: install Debian's chromium and chromium-driver "
                   "(apt-get install chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def chrome(width: int = 1400, height: int = 1000):
    """A new headless Chromium session; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
