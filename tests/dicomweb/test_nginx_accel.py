"""The production byte path: a real nginx, configured with the README's own locations, in front of gunicorn.

Django authorises and audits each request and answers X-Accel-Redirect; nginx then fetches the bytes from the
tenant's Orthanc with the credential Django handed it, and none of that hand-over reaches the client.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from saas.studies.orthanc import orthanc_store
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.enums import TokenScope
from tenants.orthanc import orthanc_endpoint
from tenants.services import api_token_create, tenant_create
from tests.conftest import committed, running_gunicorn, running_nginx
from tests.dicomweb.conftest import index_orthanc
from tests.faults.conftest import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
FRAME_ACCEPT = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
pytestmark = [pytest.mark.orthanc]

HAND_OVER_HEADERS = ("X-Accel-Redirect", "X-Readroom-Orthanc-Origin", "X-Readroom-Orthanc-Authorization")
SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy")


def readme_locations(secret: str) -> str:
    """The nginx block of README's "Serving DICOMweb bytes from nginx (production)", with this run's secret."""
    text = README.read_text()
    section = text[text.index("### Serving DICOMweb bytes from nginx (production)") :]
    block = re.search(r"```nginx\n(.*?)```", section, re.S).group(1)
    assert "<READROOM_DICOMWEB_ACCEL_SECRET>" in block
    return block.replace("<READROOM_DICOMWEB_ACCEL_SECRET>", secret)


@dataclass
class NginxPlatform:
    url: str
    # gunicorn itself, reached without nginx (so without the secret header): Django streams the bytes.
    django_url: str
    access_log: Path
    slug: str
    read_token: str
    other_token: str
    write_token: str
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    tenant: object

    def series_path(self) -> str:
        return f"/dicomweb/{self.slug}/studies/{self.study_uid}/series/{self.series_uid}"


def _clinic_with_ct():
    tenant, _ = tenant_create(slug=f"nginx-{uuid.uuid4().hex[:8]}", name="Clinic Behind nginx")
    other, _ = tenant_create(slug=f"nginx-other-{uuid.uuid4().hex[:8]}", name="Other Clinic")
    _, read = api_token_create(tenant=tenant, name="nginx test", scopes=[TokenScope.STUDIES_READ])
    _, other_read = api_token_create(tenant=other, name="nginx test", scopes=[TokenScope.STUDIES_READ])
    _, write = api_token_create(tenant=tenant, name="nginx test", scopes=[TokenScope.STUDIES_WRITE])
    datasets = ct_series(patient_id="NGINX-1", patient_name="Synthetic^Nginx", accession_number="NGX1", slices=3)
    for dataset in datasets:
        orthanc_store(tenant, dataset_bytes(dataset))
    index_orthanc(tenant)
    return tenant, read, other_read, write, datasets


@pytest.fixture(scope="module")
def nginx_platform(django_db_setup, django_db_blocker):
    secret = secrets.token_urlsafe(24)
    with django_db_blocker.unblock():
        tenant, read, other_read, write, datasets = committed(_clinic_with_ct)
    environment = {"READROOM_DICOMWEB_ACCEL_REDIRECT": "/_orthanc", "READROOM_DICOMWEB_ACCEL_SECRET": secret}
    with (
        running_gunicorn(environment=environment, log_name="nginx-accel-gunicorn") as web_url,
        running_nginx(readme_locations(secret), upstream=web_url.removeprefix("http://")) as nginx,
        django_db_blocker.unblock(),
    ):
        yield NginxPlatform(
            url=nginx.url,
            django_url=web_url,
            access_log=nginx.access_log,
            slug=tenant.slug,
            read_token=read,
            other_token=other_read,
            write_token=write,
            study_uid=datasets[0].StudyInstanceUID,
            series_uid=datasets[0].SeriesInstanceUID,
            sop_uids=[dataset.SOPInstanceUID for dataset in datasets],
            tenant=tenant,
        )


def _get(platform: NginxPlatform, path: str, token: str | None, **headers) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{platform.url}{path}", headers=headers, timeout=30)


def _upstreams(platform: NginxPlatform, path: str) -> list[str]:
    """The upstream addresses nginx logged for the last request to ``path``."""

    def logged() -> list[str]:
        return [line for line in platform.access_log.read_text().splitlines() if line.startswith(path + " ")]

    lines = wait_for(logged, timeout=5, interval=0.05, what=f"nginx to log the request to {path}")
    addresses = lines[-1].removeprefix(path + " ").rpartition(" | ")[0]
    return [address.strip() for address in addresses.split(" : ")]


def _only_part(response: requests.Response) -> bytes:
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = response.content.split(b"--" + boundary)
    assert len(parts) == 3 and parts[2].startswith(b"--"), "one part between the opening and closing boundary"
    _, _, body = parts[1].partition(b"\r\n\r\n")
    return body.removesuffix(b"\r\n")


def test_nginx_serves_orthancs_frame_bytes_after_django_authorised(nginx_platform):
    path = f"{nginx_platform.series_path()}/instances/{nginx_platform.sop_uids[1]}/frames/1"

    response = _get(nginx_platform, path, nginx_platform.read_token, **FRAME_ACCEPT)

    assert response.status_code == 200, response.text[:300]
    endpoint = orthanc_endpoint(nginx_platform.tenant)
    # nginx reached gunicorn, then Orthanc itself: Django did not stream these bytes.
    upstreams = _upstreams(nginx_platform, path)
    assert len(upstreams) == 2 and upstreams[1] == endpoint.http_url.removeprefix("http://").rstrip("/")
    direct = requests.get(
        f"{endpoint.http_url}/dicom-web/studies/{nginx_platform.study_uid}/series/{nginx_platform.series_uid}"
        f"/instances/{nginx_platform.sop_uids[1]}/frames/1",
        headers=FRAME_ACCEPT,
        auth=endpoint.auth,
        timeout=30,
    )
    # The same pixels, in Orthanc's own multipart form.
    pixels = _only_part(direct)
    assert _only_part(response) == pixels and len(pixels) == 64 * 64 * 2
    # Django's cache headers, each once (Orthanc's own are dropped), and nothing of the hand-over to nginx
    cache_control, etag = response.raw.headers.getlist("Cache-Control"), response.raw.headers.getlist("ETag")
    assert len(cache_control) == 1 and cache_control[0].startswith("private, max-age=")
    assert len(etag) == 1
    # Django's security headers too, as Django sends them when it streams the bytes itself
    streamed = requests.get(
        f"{nginx_platform.django_url}{path}",
        headers={**FRAME_ACCEPT, "Authorization": f"Bearer {nginx_platform.read_token}"},
        timeout=30,
    )
    assert streamed.status_code == 200 and "X-Accel-Redirect" not in streamed.headers
    for name in SECURITY_HEADERS:
        assert response.raw.headers.getlist(name) == [streamed.headers[name]], name
    for name in HAND_OVER_HEADERS:
        assert name not in response.headers
    assert endpoint.password not in str(response.headers)
    # and the ETag is Django's: asked again with it, Django answers 304 and nginx sends no bytes
    revalidated = _get(nginx_platform, path, nginx_platform.read_token, **FRAME_ACCEPT, **{"If-None-Match": etag[0]})
    assert revalidated.status_code == 304 and revalidated.content == b""


def test_nginx_passes_on_djangos_refusals_without_touching_orthanc(nginx_platform):
    path = f"{nginx_platform.series_path()}/instances/{nginx_platform.sop_uids[0]}/frames/1"

    anonymous = _get(nginx_platform, path, None, **FRAME_ACCEPT)
    other_clinic = _get(nginx_platform, path, nginx_platform.other_token, **FRAME_ACCEPT)
    missing = _get(nginx_platform, path.replace(nginx_platform.sop_uids[0], "1.2.3.4"), nginx_platform.read_token)

    assert anonymous.status_code in (401, 403) and b"\x00\x00" not in anonymous.content
    assert other_clinic.status_code == 404 and len(other_clinic.content) < 2000
    assert missing.status_code == 404
    for response in (anonymous, other_clinic, missing):
        for name in HAND_OVER_HEADERS:
            assert name not in response.headers
    # Only gunicorn was asked each time
    assert len(_upstreams(nginx_platform, path)) == 1


def test_the_internal_location_cannot_be_asked_for_directly(nginx_platform):
    path = (
        f"/_orthanc/{nginx_platform.slug}/dicom-web/studies/{nginx_platform.study_uid}/series/"
        f"{nginx_platform.series_uid}/instances/{nginx_platform.sop_uids[0]}/frames/1"
    )

    response = _get(nginx_platform, path, nginx_platform.read_token, **FRAME_ACCEPT)

    assert response.status_code == 404


def test_metadata_behind_nginx_is_still_djangos_with_public_urls(nginx_platform):
    response = _get(
        nginx_platform,
        f"{nginx_platform.series_path()}/metadata",
        nginx_platform.read_token,
        Accept="application/dicom+json",
    )

    assert response.status_code == 200
    instances = response.json()
    assert len(instances) == 3
    assert "/dicom-web/" not in response.text and f"/dicomweb/{nginx_platform.slug}/" in response.text


def test_stow_through_the_same_locations_takes_studies_larger_than_nginxs_default_body_limit(nginx_platform):
    # given two 512 x 512 CT slices in one STOW-RS request (over nginx's 1 MB default client_max_body_size)
    datasets = ct_series(
        patient_id="NGINX-2", patient_name="Synthetic^Upload", accession_number="NGX2", slices=2, rows=512, columns=512
    )
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + dataset_bytes(dataset) + b"\r\n"
            for dataset in datasets
        )
        + f"--{boundary}--\r\n".encode()
    )
    assert len(body) > 1024 * 1024
    # when it is sent to nginx
    response = requests.post(
        f"{nginx_platform.url}/dicomweb/{nginx_platform.slug}/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {nginx_platform.write_token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    # then both instances are stored, not refused by nginx with 413
    assert response.status_code == 200, response.text[:300]
    stored = [item["00081155"]["Value"][0] for item in response.json()["00081199"]["Value"]]
    assert sorted(stored) == sorted(dataset.SOPInstanceUID for dataset in datasets)
