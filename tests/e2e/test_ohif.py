"""OHIF Viewer v3 against the platform's DICOMweb, configured with the README's own data source.

The prebuilt OHIF (scripts/fetch_ohif.sh, run by `make test`) is served by nginx from the platform's origin, as
the README says, so the radiologist's session cookie authenticates OHIF's QIDO-RS and WADO-RS requests.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.enums import Role
from tests.conftest import committed, running_nginx
from tests.e2e.viewing import screenshot, sign_in, store_and_index
from tests.factories import person

pytestmark = [pytest.mark.e2e, pytest.mark.orthanc]

OHIF_DIST = Path(settings.BASE_DIR) / "var" / "ohif" / "dist"
README = Path(settings.BASE_DIR) / "README.md"
SLICES = 6


def readme_ohif_config(origin: str, slug: str) -> str:
    """The `window.config` of README's "OHIF Viewer v3 data source", pointed at this platform and clinic."""
    text = README.read_text()
    section = text[text.index("### OHIF Viewer v3 data source") :]
    config = re.search(r"```js\n(.*?)```", section, re.S).group(1)
    assert "https://readroom.example.org" in config and "<slug>" in config
    return config.replace("https://readroom.example.org", origin).replace("<slug>", slug)


@pytest.fixture
def ohif(live_platform):
    """nginx on one origin: the platform's pages and DICOMweb from gunicorn, everything else from OHIF's build."""
    assert (OHIF_DIST / "index.html").exists(), "OHIF is not fetched: run scripts/fetch_ohif.sh (make test does)"
    # Where nginx's workers (nobody, when run as root) can read it; written once the clinic exists.
    config = Path(settings.VAR_DIR) / "test" / f"ohif-{uuid.uuid4().hex[:8]}" / "app-config.js"
    config.parent.mkdir(parents=True)
    config.parent.chmod(0o755)

    server = f"""
        location ~ ^/(dicomweb|login|logout|static|healthz)(/|$) {{
            proxy_pass http://readroom_web;
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }}
        location = /app-config.js {{ alias {config}; }}
        location / {{ root {OHIF_DIST}; try_files $uri /index.html; }}
    """

    try:
        with running_nginx(server, upstream=live_platform.url.removeprefix("http://")) as nginx:
            yield nginx, config
    finally:
        shutil.rmtree(config.parent, ignore_errors=True)


def test_ohif_lists_and_shows_a_study_through_the_platforms_dicomweb(browser, ohif, live_platform):
    nginx, config = ohif
    # given a clinic with a CT, a radiologist credentialed for it, and OHIF configured as the README says
    tenant, token = live_platform.tenant_with_token(prefix="e2e-ohif")
    datasets = ct_series(
        patient_id="E2E-OHIF-1",
        patient_name="Synthetic^Ohif",
        accession_number="ACC-OHIF",
        study_description="CT OHIF",
        slices=SLICES,
        rows=128,
        columns=128,
    )
    store_and_index(live_platform, tenant, token, [dataset_bytes(dataset) for dataset in datasets])
    study_uid = datasets[0].StudyInstanceUID
    radiologist = committed(lambda: person(role=Role.RADIOLOGIST, tenant=tenant))
    config.write_text(readme_ohif_config(nginx.url, tenant.slug))
    config.chmod(0o644)
    context = browser.new_context(base_url=nginx.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    dicomweb, console = [], []
    page.on("response", lambda response: dicomweb.append(response) if "/dicomweb/" in response.url else None)
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        page.goto("/login/")
        sign_in(page, radiologist)
        page.wait_for_url(f"{nginx.url}/")

        # when OHIF's study list opens, it finds the study by QIDO-RS
        page.goto("/")
        page.get_by_text("CT OHIF").wait_for()

        # and the study opens in OHIF's viewer, its frames fetched by WADO-RS
        page.goto(f"/viewer?StudyInstanceUIDs={study_uid}")
        page.wait_for_selector("canvas.cornerstone-canvas")
        page.wait_for_function(
            """() => [...document.querySelectorAll('canvas.cornerstone-canvas')].some((canvas) => {
                const context = canvas.getContext('2d');
                if (!context || canvas.width === 0) return false;
                const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
                let lit = 0;
                for (let i = 0; i < pixels.length; i += 4) if (pixels[i] > 40) lit++;
                return lit > canvas.width * canvas.height * 0.05;
            })""",
            timeout=60_000,
        )
        screenshot(page, "ohif-viewer.png")
    except Exception as error:
        screenshot(page, "ohif-failed.png")
        raise AssertionError(f"OHIF did not show the study; its console said: {console[-20:]}") from error
    finally:
        context.close()

    # then every DICOMweb request OHIF made was answered, QIDO and frames among them
    failed = [(response.status, response.url) for response in dicomweb if response.status >= 400]
    assert not failed, failed
    urls = [response.url for response in dicomweb]
    assert any(f"/dicomweb/{tenant.slug}/studies?" in url for url in urls)
    assert any("/frames/" in url for url in urls), urls
