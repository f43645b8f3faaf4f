"""The viewer's reading tools in a real browser: measurements kept for the session, layouts, drag and drop, cine."""

from __future__ import annotations

import re
import time

import pytest

from saas.studies.synthetic import cr_image, ct_series, dataset_bytes
from tests.e2e.viewing import open_as_radiologist, screenshot, store_and_index

pytestmark = [pytest.mark.e2e, pytest.mark.orthanc]

SLICES = 12
SIZE = 64
PIXEL_SPACING_MM = 0.7


def _clinic_with_two_series(live_platform):
    tenant, token = live_platform.tenant_with_token(prefix="e2e-tools")
    common = {
        "patient_id": "E2E-TOOLS-1",
        "patient_name": "Synthetic^Tools",
        "accession_number": "ACC-TOOLS",
        "rows": SIZE,
        "columns": SIZE,
        "pixel_spacing": (PIXEL_SPACING_MM, PIXEL_SPACING_MM),
        "noise_hu": 0,
    }
    thin = ct_series(**common, series_description="Axial 2.5mm", slices=SLICES)
    thick = ct_series(
        **common,
        study_instance_uid=thin[0].StudyInstanceUID,
        series_number=2,
        series_description="Axial 5mm",
        slices=6,
        slice_thickness=5.0,
    )
    store_and_index(live_platform, tenant, token, [dataset_bytes(dataset) for dataset in thin + thick])
    return tenant, thin[0].StudyInstanceUID


def _open(page, live_platform, tenant, study_uid):
    open_as_radiologist(page, live_platform, tenant, study_uid)
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)


def _next_frames(page) -> None:
    """Let the page handle the input so far (two animation frames), so a busy machine cannot coalesce it away."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def _drag(page, start: tuple[float, float], end: tuple[float, float], steps: int = 50) -> None:
    # Small steps: a tool places its first point on the first drag event, so one coarse step would be lost;
    # the first step and the last point are each let through before going on (a loaded CI machine drops
    # or merges pointer events otherwise, and the line then starts or ends a few pixels off).
    page.mouse.move(*start)
    page.mouse.down()
    _next_frames(page)
    for step in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * step / steps, start[1] + (end[1] - start[1]) * step / steps)
        if step == 1:
            _next_frames(page)
    _next_frames(page)
    page.mouse.up()


def _settled_text(page, selector: str, *, timeout_s: float = 10.0) -> str:
    """The element's text once it stopped changing: a measurement's list entry follows the drag while the
    tool re-computes its statistics, so the first text with a unit can be an intermediate one."""
    deadline = time.monotonic() + timeout_s
    text = page.locator(selector).inner_text()
    while True:
        page.wait_for_timeout(300)
        again = page.locator(selector).inner_text()
        if again == text or time.monotonic() > deadline:
            return again
        text = again


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return float(match.group(1))


def test_measurements_show_hu_statistics_and_last_the_session(page, page_errors, live_platform):
    # given a CT whose centre is exactly 40 HU, open in the viewer
    tenant, study_uid = _clinic_with_two_series(live_platform)
    _open(page, live_platform, tenant, study_uid)
    box = page.locator("[data-viewport=main]").bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    # The image is fitted into the viewport: its 64 pixels span the viewport's smaller side.
    mm_per_css_px = SIZE * PIXEL_SPACING_MM / min(box["width"], box["height"])

    # when the radiologist draws an elliptical ROI over the soft tissue at the centre (key E)
    page.keyboard.press("e")
    assert page.locator("[data-action=tool-ellipse]").get_attribute("aria-pressed") == "true"
    _drag(page, (centre[0] - 40, centre[1] - 30), (centre[0] + 40, centre[1] + 30))
    page.wait_for_function(
        "document.querySelector('[data-measurement=ellipse]')?.textContent.includes('mean')", timeout=15_000
    )
    # then its mean is 40 HU with no spread (the synthetic CT has no noise)
    text = _settled_text(page, "[data-measurement=ellipse]")
    assert _number(r"mean (-?[\d.]+) HU", text) == pytest.approx(40.0, abs=0.5)
    assert _number(r"SD ([\d.]+) HU", text) == pytest.approx(0.0, abs=0.5)

    # when a 200 px horizontal length is drawn (key L), it reads the matching millimetres
    # (the scale is read again: the measurement list that just appeared may have resized the viewport)
    box = page.locator("[data-viewport=main]").bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    mm_per_css_px = SIZE * PIXEL_SPACING_MM / min(box["width"], box["height"])
    page.keyboard.press("l")
    _drag(page, (centre[0] - 100, centre[1] + 80), (centre[0] + 100, centre[1] + 80))
    page.wait_for_function(
        "document.querySelector('[data-measurement=length]')?.textContent.includes('mm')", timeout=15_000
    )
    length = _number(r"Length ([\d.]+) mm", _settled_text(page, "[data-measurement=length]"))
    assert length == pytest.approx(200 * mm_per_css_px, rel=0.05)

    # when an angle is drawn (key A): two clicks make the first arm, a third closes a right angle
    page.keyboard.press("a")
    for point in [(centre[0] - 120, centre[1] - 150), (centre[0] - 120, centre[1] - 50)]:
        page.mouse.click(*point)
    page.mouse.move(centre[0] - 20, centre[1] - 50)
    page.mouse.click(centre[0] - 20, centre[1] - 50)
    page.wait_for_function(
        "document.querySelector('[data-measurement=angle]')?.textContent.includes('°')", timeout=15_000
    )
    angle = _number(r"Angle ([\d.]+)°", _settled_text(page, "[data-measurement=angle]"))
    assert angle == pytest.approx(90.0, abs=2.0)
    screenshot(page, "viewer-measurements.png")

    # when the page is reloaded in the same tab, the measurements are still there, values recomputed
    page.reload()
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    page.wait_for_function(
        "document.querySelector('[data-measurement=ellipse]')?.textContent.includes('mean')", timeout=15_000
    )
    assert page.locator(".measurement-list li").count() == 3
    assert _number(r"mean (-?[\d.]+) HU", page.locator("[data-measurement=ellipse]").inner_text()) == pytest.approx(
        40.0, abs=0.5
    )
    # and a measurement can be deleted from the list
    page.get_by_role("button", name=re.compile(r"^Delete Length")).click()
    page.wait_for_function("document.querySelectorAll('.measurement-list li').length === 2")
    assert page_errors == []


def test_layouts_drag_and_drop_and_cine(page, page_errors, live_platform):
    # given a study with two series, open in the viewer
    tenant, study_uid = _clinic_with_two_series(live_platform)
    _open(page, live_platform, tenant, study_uid)
    assert page.locator(".series-list button").count() == 2
    assert page.locator(".cell").count() == 1

    # when the 1x2 layout is chosen, the second viewport shows the series not shown yet
    page.get_by_role("button", name="1×2").click()
    assert page.locator(".cell").count() == 2
    second = page.locator("[data-cell='1']")
    page.wait_for_function(
        "document.querySelector(\"[data-cell='1'] [data-overlay=series]\")?.textContent.includes('Axial 5mm')",
        timeout=30_000,
    )
    assert "Im 1/6" in second.locator("[data-overlay=slice]").inner_text()

    # when the first series is dragged from the panel onto the second viewport, it is shown there
    page.locator(".series-list button").first.drag_to(second)
    page.wait_for_function(
        "document.querySelector(\"[data-cell='1'] [data-overlay=slice]\")?.textContent === 'Im 1/12'",
        timeout=30_000,
    )
    assert "Axial 2.5mm" in second.locator("[data-overlay=series]").inner_text()
    # and the viewport dropped onto became the active one: the keyboard scrolls it, not the first
    assert "active" in (second.get_attribute("class") or "")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(
        "document.querySelector(\"[data-cell='1'] [data-overlay=slice]\")?.textContent === 'Im 2/12'"
    )
    assert page.locator("[data-cell='0'] [data-overlay=slice]").inner_text() == "Im 1/12"
    # and without a mouse, focusing the first viewport (Tab) makes it the active one again
    page.locator("[data-viewport=main]").focus()
    assert "active" in (page.locator("[data-cell='0']").get_attribute("class") or "")
    assert page.locator("[data-viewport=main]").get_attribute("tabindex") == "0"
    screenshot(page, "viewer-layout-1x2.png")

    # when the 2x2 layout is chosen there are four viewports, each showing a series; back to 1x1 leaves one
    page.get_by_role("button", name="2×2").click()
    assert page.locator(".cell").count() == 4
    page.wait_for_function(
        "[...document.querySelectorAll('[data-overlay=slice]')].every((node) => node.textContent.startsWith('Im '))",
        timeout=30_000,
    )
    screenshot(page, "viewer-layout-2x2.png")
    page.get_by_role("button", name="1×1").click()
    assert page.locator(".cell").count() == 1

    # when cine is started (key C) the slice advances by itself, and stopping it holds the slice
    page.locator("[data-viewport=main]").click()
    page.keyboard.press("c")
    assert page.locator("[data-action=cine]").get_attribute("aria-pressed") == "true"
    page.wait_for_function(
        "['Im 4/12', 'Im 5/12', 'Im 6/12'].includes(document.querySelector('[data-overlay=slice]').textContent)",
        timeout=10_000,
    )
    page.keyboard.press("c")
    assert page.locator("[data-action=cine]").get_attribute("aria-pressed") == "false"
    held = page.locator("[data-overlay=slice]").inner_text()
    page.wait_for_timeout(600)
    assert page.locator("[data-overlay=slice]").inner_text() == held
    assert page_errors == []


def test_a_radiographs_measurements_last_the_session_too(page, page_errors, live_platform):
    # given a chest radiograph (CR: no frame of reference, which CT measurements are filed under), open in the viewer
    tenant, token = live_platform.tenant_with_token(prefix="e2e-cr-tools")
    radiograph = cr_image(patient_id="E2E-CR-1", patient_name="Synthetic^Radiograph", accession_number="ACC-CR")
    store_and_index(live_platform, tenant, token, [dataset_bytes(radiograph)])
    _open(page, live_platform, tenant, radiograph.StudyInstanceUID)
    box = page.locator("[data-viewport=main]").bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    # when a length is drawn
    page.keyboard.press("l")
    _drag(page, (centre[0] - 80, centre[1]), (centre[0] + 80, centre[1]))
    # (a radiograph's length is in its own unit: mm from Imager Pixel Spacing, or px without it)
    page.wait_for_function(
        "/Length [0-9.]+/.test(document.querySelector('[data-measurement=length]')?.textContent ?? '')",
        timeout=15_000,
    )
    drawn = _settled_text(page, "[data-measurement=length]")
    # then it is still there after a reload in the same tab, with the same value
    page.reload()
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    page.wait_for_function(
        "/Length [0-9.]+/.test(document.querySelector('[data-measurement=length]')?.textContent ?? '')",
        timeout=15_000,
    )
    assert _settled_text(page, "[data-measurement=length]") == drawn
    assert page_errors == []
