"""The diagnostic viewer in a real browser: a radiologist opens a synthetic CT and reads real pixels off the canvas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.enums import Role
from tenants.orthanc import orthanc_driver, orthanc_spec
from tests.conftest import committed
from tests.e2e.viewing import canvas_pixel, open_as_radiologist, screenshot, sign_in, store_and_index
from tests.factories import person

pytestmark = [pytest.mark.e2e, pytest.mark.orthanc]

BUILT_VIEWER = Path(settings.BASE_DIR) / "frontend" / "dist" / "viewer.js"

SLICES = 12


def _clinic_with_ct(live_platform, prefix: str):
    """A live clinic whose Orthanc holds a noise-free CT sent by STOW-RS and indexed; returns (tenant, study UID)."""
    tenant, token = live_platform.tenant_with_token(prefix=prefix)
    datasets = ct_series(
        patient_id="E2E-VIEW-1",
        patient_name="Synthetic^Viewer",
        accession_number="ACC-VIEW",
        study_description="CT ABDOMEN",
        study_date="20260301",
        series_description="Axial 2.5mm",
        slices=SLICES,
        rows=64,
        columns=64,
        noise_hu=0,
    )
    store_and_index(live_platform, tenant, token, [dataset_bytes(dataset) for dataset in datasets])
    return tenant, datasets[0].StudyInstanceUID


def _grey(page) -> int:
    # The grey (0-255) of the canvas pixel at the centre of the viewport, where the synthetic CT is exactly 40 HU.
    r, g, b = canvas_pixel(page)
    assert r == g == b, "a CT is shown in greys"
    return r


# The viewer's own choice (the CPU renderer where, as in headless Chromium, WebGL is a software rasterizer),
# and WebGL forced: both renderers draw the same pixels.
@pytest.mark.parametrize("render", [None, "gpu"], ids=["chosen", "webgl"])
def test_a_radiologist_reads_a_ct_scrolls_and_windows_it(page, page_errors, live_platform, render):
    assert BUILT_VIEWER.exists(), "the viewer is not built: run `make frontend` (make test does)"
    # given a clinic with a CT whose centre pixel is 40 HU, and a radiologist credentialed for it
    tenant, study_uid = _clinic_with_ct(live_platform, "e2e-viewer")
    radiologist = committed(lambda: person(role=Role.RADIOLOGIST, tenant=tenant))
    viewer_url = f"/viewer/{tenant.slug}/{study_uid}/" + (f"?render={render}" if render else "")
    # when the radiologist follows the deep link, signs in and lands back on it
    page.goto(viewer_url)
    assert "/login/" in page.url
    sign_in(page, radiologist)
    page.wait_for_url(f"{live_platform.url}{viewer_url}")
    # then the first image appears, and then the whole series is loaded
    root = page.locator("[data-viewer]")
    page.wait_for_selector("[data-viewer][data-viewer-state=ready]", timeout=60_000)
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    # and the overlays name the patient, the study date, the series, the slice and the window
    assert page.locator("[data-overlay=patient]").inner_text() == "Synthetic, Viewer"
    assert page.locator("[data-overlay=study-date]").inner_text() == "2026-03-01"
    assert "Axial 2.5mm" in page.locator("[data-overlay=series]").inner_text()
    assert page.locator("[data-overlay=slice]").inner_text() == f"Im 1/{SLICES}"
    assert page.locator("[data-overlay=window-level]").inner_text() == "W 400 / L 40"
    assert page.locator(".series-list button").count() == 1
    drawn_by = root.get_attribute("data-render")
    print(f"viewer rendering: {drawn_by}")
    assert drawn_by == (render or drawn_by) and drawn_by in ("gpu", "cpu")
    # and with the dataset's window (W400/L40) soft tissue at 40 HU is mid-grey
    assert abs(_grey(page) - 128) <= 15
    screenshot(page, f"viewer-first-image-{render or 'chosen'}.png")

    # when the lung preset key is pressed, 40 HU turns near white (W1500/L-600 -> 236)
    page.keyboard.press("3")
    page.wait_for_function("document.querySelector('[data-overlay=window-level]').textContent === 'W 1500 / L -600'")
    page.wait_for_timeout(200)
    assert abs(_grey(page) - 236) <= 15
    screenshot(page, "viewer-lung-window.png")
    # and the abdomen button brings mid-grey back
    page.get_by_role("button", name="Abdomen").click()
    page.wait_for_function("document.querySelector('[data-overlay=window-level]').textContent === 'W 400 / L 40'")
    page.wait_for_timeout(200)
    assert abs(_grey(page) - 128) <= 15

    # when scrolling with the arrow key and the mouse wheel, the slice number follows
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === 'Im 2/{SLICES}'")
    page.locator("[data-viewport]").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === 'Im 3/{SLICES}'")
    # and the overlay gives the slice's position along the axial normal, which changes from slice to slice
    position = page.locator("[data-overlay=position]").inner_text()
    assert re.fullmatch(r"Z -?\d+\.\d mm", position), position
    # and a left drag with Ctrl held scrolls too
    box = page.locator("[data-viewport]").first.bounding_box()
    page.keyboard.down("Control")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 2 / 3, steps=10)
    page.mouse.up()
    page.keyboard.up("Control")
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent !== 'Im 3/{SLICES}'")
    assert page.locator("[data-overlay=position]").inner_text() != position
    assert page.locator("[data-overlay=window-level]").inner_text() == "W 400 / L 40"  # the drag did not window
    page.keyboard.press("End")
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === 'Im {SLICES}/{SLICES}'")
    # and invert flips the grey
    page.keyboard.press("i")
    page.wait_for_timeout(300)
    assert abs(_grey(page) - 127) <= 15
    page.keyboard.press("r")
    # and the help overlay lists the shortcuts
    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    assert help_dialog.is_visible()
    assert "Lung window" in help_dialog.inner_text()
    screenshot(page, "viewer-help.png")
    page.keyboard.press("Escape")
    assert help_dialog.is_hidden()
    assert root.get_attribute("data-viewer-state") == "ready"
    assert page_errors == []


def test_a_clinic_user_of_another_tenant_gets_the_not_found_page(page, page_errors, live_platform):
    # given a study in one clinic and a clinic user of another clinic
    tenant, study_uid = _clinic_with_ct(live_platform, "e2e-viewer-own")
    other, _ = live_platform.tenant_with_token(prefix="e2e-viewer-other")
    stranger = committed(lambda: person(role=Role.CLINIC_STAFF, tenant=other))
    page.goto("/login/")
    sign_in(page, stranger)
    page.wait_for_url(f"{live_platform.url}/")
    # when they open the study's viewer URL, under either clinic's slug
    foreign = page.goto(f"/viewer/{tenant.slug}/{study_uid}/")
    via_own_slug = page.goto(f"/viewer/{other.slug}/{study_uid}/")
    missing = page.goto(f"/viewer/{other.slug}/1.2.3.4.5.6.7/")
    # then each answer is the same 404 page, naming nothing
    assert foreign.status == via_own_slug.status == missing.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    assert "E2E-VIEW-1" not in page.content()
    screenshot(page, "viewer-not-found.png")
    assert page_errors == []


@pytest.mark.parametrize("render", ["", "?render=gpu"], ids=["chosen", "webgl"])
def test_images_that_cannot_be_loaded_are_an_error_shown_not_a_black_viewport(page, page_errors, live_platform, render):
    # given a CT whose frames the platform cannot serve: its clinic's Orthanc stops once the viewer has the
    # study's metadata and asks for the first frame, so the platform's real answer to every frame is a 503
    tenant, study_uid = _clinic_with_ct(live_platform, "e2e-viewer-503")
    spec = committed(lambda: orthanc_spec(tenant))
    frame_answers: list[int] = []

    def stop_orthanc_then_pass_on(route) -> None:
        if not frame_answers:
            orthanc_driver().stop(tenant.slug)
        # The platform's own answer, passed on as it came (and noted, to check what the viewer was given).
        answer = route.fetch()
        frame_answers.append(answer.status)
        route.fulfill(response=answer)

    page.route("**/frames/**", stop_orthanc_then_pass_on)
    try:
        # when the radiologist opens it
        open_as_radiologist(page, live_platform, tenant, study_uid, render)
        # then the viewer says the study could not be loaded, instead of showing a black image as "ready"
        page.wait_for_selector("[data-viewer][data-viewer-state=error]", timeout=60_000)
        assert "could not be loaded" in page.locator("[data-viewer] [role=status]").first.inner_text()
        assert frame_answers and set(frame_answers) == {503}
    finally:
        # The clinic's Orthanc runs again for whatever else this session does with it.
        orthanc_driver().ensure_running(spec)
