"""Headless Chromium for the browser checks (.ci/clients.py, passkeys.py,
dashboard.py): Debian's chromium and chromedriver, a throwaway profile, and
no route off loopback (every other host resolves nowhere)."""

import shutil
import tempfile


def chrome(window="1280,2000", console=False):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={window}",
                 f"--user-data-dir={tempfile.mkdtemp()}",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]:
        opts.add_argument(flag)
    if console:
        # The page's console, read back with driver.get_log("browser").
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                            options=opts)
