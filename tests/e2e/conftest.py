"""Browser fixtures: Debian's Chromium driven by Playwright (no downloaded browsers)."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Headless and quiet: nothing may reach the internet from a test machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(live_platform):
    # Per test, and only once the live platform (and the test database) is up: Playwright's sync API keeps an
    # event loop running in this thread while it is open, and Django then refuses every ORM call here.
    # Tests reach the database only through tests.conftest.committed (its own thread) while a browser is open.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page_errors() -> list[str]:
    return []


@pytest.fixture
def page(browser, live_platform, page_errors):
    context = browser.new_context(base_url=live_platform.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    # Any uncaught script error fails the test: a silent one would leave a clinic user staring at a frozen page.
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
