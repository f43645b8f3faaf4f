"""Shared steps of the viewer's browser tests: store instances in a live clinic, sign in, open a study, read
canvas pixels."""

from __future__ import annotations

from pathlib import Path

import requests
from django.conf import settings

from saas.studies.services import orthanc_sync
from tenants.context import tenant_context
from tenants.enums import Role
from tests.conftest import committed
from tests.factories import PASSWORD, person
from tests.studies.conftest import multipart_related

# The RGB (0-255) of a canvas pixel of a viewport, at a fraction of its width and height (the centre by default).
CANVAS_PIXEL = """([selector, fx, fy]) => {
    const canvas = document.querySelector(selector);
    const context = canvas.getContext('2d');
    const x = Math.floor(canvas.width * fx), y = Math.floor(canvas.height * fy);
    const [r, g, b] = context.getImageData(x, y, 1, 1).data;
    return [r, g, b];
}"""
MAIN_CANVAS = "[data-viewport=main] canvas"


def screenshot(page, name: str) -> None:
    target = Path(settings.VAR_DIR) / "e2e" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))


def sign_in(page, user) -> None:
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def open_as_radiologist(page, live_platform, tenant, study_uid: str, query: str = "") -> None:
    """A new radiologist of the clinic signs in and opens the study in the viewer (`query`: e.g. "?render=cpu");
    the caller waits as it needs."""
    radiologist = committed(lambda: person(role=Role.RADIOLOGIST, tenant=tenant))
    page.goto("/login/")
    sign_in(page, radiologist)
    page.wait_for_url(f"{live_platform.url}/")
    page.goto(f"/viewer/{tenant.slug}/{study_uid}/{query}")


def canvas_pixel(page, selector: str = MAIN_CANVAS, fx: float = 0.5, fy: float = 0.5) -> tuple[int, int, int]:
    r, g, b = page.evaluate(CANVAS_PIXEL, [selector, fx, fy])
    return r, g, b


def store_and_index(live_platform, tenant, token: str, parts: list[bytes]) -> None:
    """STOW-RS the Part 10 files to the live clinic, then index its Orthanc as the Celery sync would."""
    body, content_type = multipart_related(parts)
    response = requests.post(
        f"{live_platform.url}/dicomweb/{tenant.slug}/studies",
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
        timeout=120,
    )
    assert response.status_code == 200, response.text

    def index():
        with tenant_context(tenant_ids=[tenant.pk]):
            orthanc_sync(tenant=tenant, on_archive=lambda instance: None, on_completed=lambda study, completion: None)

    committed(index)
