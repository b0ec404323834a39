"""Headless Chromium for the serving page: used by the browser test and by `python -m langbridge.serving.screenshot
URL OUT.png` (which asks the page one question and saves docs/figures/serve_page.png)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

DEFAULT_QUESTION = "Swali: Janet ana mayai 16. Anauza mayai 3 kila siku. Anabaki na mayai mangapi?"


def open_page(
    webdriver: Any, browser: str, driver_path: str, url: str, width: int = 1280, height: int = 800
) -> Any:
    """A headless Chromium (selenium) showing `url`."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.get(url)
    return driver


def save_screenshot(driver: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(
            "usage: python -m langbridge.serving.screenshot URL OUT.png [QUESTION] [MAX_TOKENS]",
            file=sys.stderr,
        )
        return 2
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        print("needs chromium and chromedriver (apt-get install chromium chromium-driver)", file=sys.stderr)
        return 1
    driver = open_page(webdriver, browser, driver_path, args[0])
    try:
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(args[2] if len(args) > 2 else DEFAULT_QUESTION)
        if len(args) > 3:
            driver.find_element(By.ID, "max_tokens").clear()
            driver.find_element(By.ID, "max_tokens").send_keys(args[3])
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 600).until(
            lambda d: all(
                p.get_attribute("data-done") == "1" for p in d.find_elements(By.CSS_SELECTOR, ".pane")
            )
        )
        print(save_screenshot(driver, args[1]))
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
