"""Viewer benchmarks: headless Chromium opens the 500-slice bench CT over loopback, cold cache, signed in.

`viewer_first_image_ms` is the time from navigation start to the first image drawn on the canvas,
`viewer_series_loaded_ms` to the last of the 500 frames fetched and decoded into Cornerstone's cache;
both read from `window.__readroomTimings`, which the viewer sets (milliseconds since navigation start,
so page load, scripts, Cornerstone's start-up and the metadata fetch are inside). Median of a few runs,
each in a fresh browser context (empty HTTP cache). The targets are absolute; the series' baseline is what
the same browser needs to fetch the same 500 frames straight from the tenant's Orthanc, 6 at a time as the
viewer does, with nothing drawn or decoded: the floor that this machine's browser, network stack and image
store set, in the same run. Imported by `tests.bench.__main__` after `django.setup()`.
"""

from __future__ import annotations

import secrets
import statistics

from django.conf import settings
from playwright.sync_api import sync_playwright

from tenants.enums import Role
from tenants.orthanc import orthanc_endpoint
from tenants.services import user_provision
from tests.bench.dicomweb import FRAME_CLIENTS, FRAMES_ACCEPT, SLICE_PIXELS, BenchStudy
from tests.bench.results import Result

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update"]
RUNS = 5
FIRST_IMAGE_TARGET_MS = 1000.0
SERIES_LOADED_TARGET_MS = 5000.0
USERNAME = "bench-viewer-radiologist"
# Every URL with FRAME_CLIENTS requests in flight; resolves to [milliseconds, bytes received].
FETCH_ALL = """async ([urls, accept, clients]) => {
    const started = performance.now();
    let next = 0, bytes = 0;
    function get(url) {
        return new Promise((resolve, reject) => {
            const request = new XMLHttpRequest();
            request.open("GET", url);
            request.responseType = "arraybuffer";
            request.setRequestHeader("Accept", accept);
            request.onload = () =>
                request.status === 200 ? resolve(request.response.byteLength) : reject(request.status);
            request.onerror = () => reject(url);
            request.send();
        });
    }
    async function client() {
        while (next < urls.length) {
            // Added after the await: `bytes += await ...` would read bytes before another client adds to it.
            const size = await get(urls[next++]);
            bytes += size;
        }
    }
    await Promise.all(Array.from({ length: clients }, client));
    return [performance.now() - started, bytes];
}"""


def _browser_fetch_ms(browser, study: BenchStudy) -> float:
    """Milliseconds for the browser to fetch the series' frames straight from Orthanc (the baseline)."""
    endpoint = orthanc_endpoint(study.tenant)
    username, password = endpoint.auth
    credentials = {"username": username, "password": password}
    context = browser.new_context(base_url=endpoint.http_url, http_credentials=credentials)
    try:
        page = context.new_page()
        # A page of Orthanc's own origin, so the requests are same-origin like the viewer's.
        page.goto("/system")
        series = study.orthanc_series_url().removeprefix(endpoint.http_url)
        urls = [f"{series}/instances/{sop_uid}/frames/1" for sop_uid in study.sop_instance_uids]
        elapsed, received = page.evaluate(FETCH_ALL, [urls, FRAMES_ACCEPT, FRAME_CLIENTS])
    finally:
        context.close()
    assert received >= len(urls) * SLICE_PIXELS * SLICE_PIXELS * 2, "the browser received short frames from Orthanc"
    return float(elapsed)


def bench_viewer(study: BenchStudy) -> tuple[list[Result], list[str]]:
    password = secrets.token_urlsafe(24)
    user_provision(username=USERNAME, role=Role.RADIOLOGIST, password=password, tenant=study.tenant)
    base_url = settings.READROOM_PUBLIC_URL
    viewer_path = f"/viewer/{study.tenant.slug}/{study.study_instance_uid}/"
    first_image, series_loaded, fetched, details = [], [], [], []
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
                fetched.append(_browser_fetch_ms(browser, study))
                first_image.append(float(timings["firstImageMs"]))
                series_loaded.append(float(timings["seriesLoadedMs"]))
                details.append(
                    f"viewer run ({render}): first image {timings['firstImageMs']:.0f} ms,"
                    f" series of {timings['images']} loaded {timings['seriesLoadedMs']:.0f} ms"
                    f" ({timings['failed']} failed); the same browser fetched the frames straight from Orthanc"
                    f" in {fetched[-1]:.0f} ms"
                )
        finally:
            browser.close()
    first, loaded = statistics.median(first_image), statistics.median(series_loaded)
    floor = statistics.median(fetched)
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
            round(floor, 1),
            round(floor / loaded, 3),
            f"<= {SERIES_LOADED_TARGET_MS:g} ms",
            loaded <= SERIES_LOADED_TARGET_MS,
        ),
    ], details
