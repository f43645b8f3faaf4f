"""Viewer benchmarks: headless Chromium opens the 500-slice bench CT over loopback, cold cache, signed in.

`viewer_first_image_ms` is the time from navigation start to the first image drawn on the canvas,
`viewer_series_loaded_ms` to the last of the 500 frames fetched and decoded into Cornerstone's cache;
both read from `window.__readroomTimings`, which the viewer sets (milliseconds since navigation start,
so page load, scripts, Cornerstone's start-up and the metadata fetch are inside). Median of a few runs,
each in a fresh browser context (empty HTTP cache). There is no baseline to compare with: the targets
are absolute. Imported by `tests.bench.__main__` after `django.setup()`.
"""

from __future__ import annotations

import secrets
import statistics

from django.conf import settings
from playwright.sync_api import sync_playwright

from tenants.enums import Role
from tenants.services import user_provision
from tests.bench.dicomweb import BenchStudy
from tests.bench.results import Result

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update"]
RUNS = 5
FIRST_IMAGE_TARGET_MS = 1000.0
SERIES_LOADED_TARGET_MS = 5000.0
USERNAME = "bench-viewer-radiologist"


def bench_viewer(study: BenchStudy) -> tuple[list[Result], list[str]]:
    password = secrets.token_urlsafe(24)
    user_provision(username=USERNAME, role=Role.RADIOLOGIST, password=password, tenant=study.tenant)
    base_url = settings.READROOM_PUBLIC_URL
    viewer_path = f"/viewer/{study.tenant.slug}/{study.study_instance_uid}/"
    first_image, series_loaded, details = [], [], []
    # Playwright's sync API runs an event loop in this thread; the ORM work is done above, before it starts.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            login = browser.new_context(base_url=base_url)
            page = login.new_page()
            page.goto("/login/")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base_url}/")
            cookies = login.cookies()
            login.close()
            for _ in range(RUNS):
                context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
                context.add_cookies(cookies)
                page = context.new_page()
                page.goto(viewer_path)
                page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=120_000)
                timings = page.evaluate("window.__readroomTimings")
                render = page.locator("[data-viewer]").get_attribute("data-render")
                context.close()
                first_image.append(float(timings["firstImageMs"]))
                series_loaded.append(float(timings["seriesLoadedMs"]))
                details.append(
                    f"viewer run ({render}): first image {timings['firstImageMs']:.0f} ms,"
                    f" series of {timings['images']} loaded {timings['seriesLoadedMs']:.0f} ms"
                    f" ({timings['failed']} failed)"
                )
        finally:
            browser.close()
    first, loaded = statistics.median(first_image), statistics.median(series_loaded)
    return [
        Result(
            "viewer_first_image_ms",
            round(first, 1),
            "ms",
            0.0,
            0.0,
            f"<= {FIRST_IMAGE_TARGET_MS:g} ms",
            first <= FIRST_IMAGE_TARGET_MS,
        ),
        Result(
            "viewer_series_loaded_ms",
            round(loaded, 1),
            "ms",
            0.0,
            0.0,
            f"<= {SERIES_LOADED_TARGET_MS:g} ms",
            loaded <= SERIES_LOADED_TARGET_MS,
        ),
    ], details
