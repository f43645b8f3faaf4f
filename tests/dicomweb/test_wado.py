"""WADO-RS through the platform: retrieval, metadata (gzip, rewritten URLs), frames, rendered, thumbnails, caching."""

import gzip
import io
import json

import pydicom
import pytest
from django.conf import settings
from django.http import StreamingHttpResponse

from saas.dicomweb.multipart import iter_parts
from saas.dicomweb.selectors import study_cache
from saas.dicomweb.upstream import ORTHANC_URL_PREFIX
from saas.studies.enums import StudyStatus
from saas.studies.models import Study
from saas.studies.services import study_evict
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.enums import TokenScope
from tenants.services import tenant_create
from tests.dicomweb.conftest import ClinicWithCt, index_orthanc
from tests.factories import api_token
from tests.studies.conftest import Pipeline, stow

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _parts(response) -> list:
    content_type = response["Content-Type"]
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    parts = iter_parts(io.BytesIO(_body(response)), boundary, max_part_bytes=2**30, max_total_bytes=2**31)
    return [(part.headers, part.read()) for part in parts]


def test_study_and_series_metadata_are_dicom_json_gzip_compressed_with_platform_urls(client, clinic_with_ct):
    clinic = clinic_with_ct
    study_path = f"{clinic.base}/studies/{clinic.study_uid}/metadata"
    compressed = client.get(study_path, HTTP_ACCEPT_ENCODING="gzip, deflate", **clinic.auth())
    assert compressed.status_code == 200 and compressed.streaming
    assert compressed["Content-Type"] == "application/dicom+json"
    assert compressed["Content-Encoding"] == "gzip" and "Accept-Encoding" in compressed["Vary"]
    assert compressed["Cache-Control"] == "private, no-cache"
    instances = json.loads(gzip.decompress(_body(compressed)))
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(d.SOPInstanceUID for d in clinic.datasets)
    # the pixel data is announced at the platform's address, never at Orthanc's
    base = f"{settings.READROOM_PUBLIC_URL.rstrip('/')}{clinic.base}/studies/{clinic.study_uid}/series/"
    assert all(i["7FE00010"]["BulkDataURI"].startswith(base) for i in instances)
    assert b"dicom-web" not in gzip.decompress(
        _body(client.get(study_path, HTTP_ACCEPT_ENCODING="gzip", **clinic.auth()))
    )
    # without Accept-Encoding: plain JSON, series level
    plain = client.get(f"{clinic.base}/studies/{clinic.study_uid}/series/{clinic.series_uid}/metadata", **clinic.auth())
    assert "Content-Encoding" not in plain and len(json.loads(_body(plain))) == 3
    one = client.get(f"{clinic.instance_path(1)}/metadata", **clinic.auth())
    assert json.loads(_body(one))[0]["00080018"]["Value"] == [clinic.datasets[1].SOPInstanceUID]


def test_bulkdata_uris_of_the_metadata_answer_with_the_pixel_data(client, clinic_with_ct):
    clinic = clinic_with_ct
    metadata = json.loads(_body(client.get(f"{clinic.instance_path(0)}/metadata", **clinic.auth())))
    uri = metadata[0]["7FE00010"]["BulkDataURI"]
    response = client.get(uri.removeprefix(settings.READROOM_PUBLIC_URL.rstrip("/")), **clinic.auth())
    assert response.status_code == 200 and response["Content-Type"].startswith("multipart/related")
    [(_, pixels)] = _parts(response)
    assert pixels == clinic.datasets[0].PixelData


def test_frames_stream_the_stored_pixels_with_private_cache_headers_and_an_etag(client, clinic_with_ct):
    clinic = clinic_with_ct
    path = f"{clinic.instance_path(2)}/frames/1"
    response = client.get(path, **clinic.auth())
    assert response.status_code == 200 and isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith('multipart/related; type="application/octet-stream')
    assert "transfer-syntax=1.2.840.10008.1.2.1" in response["Content-Type"]
    assert response["Cache-Control"] == f"private, max-age={settings.READROOM_DICOMWEB_FRAME_MAX_AGE}"
    etag = response["ETag"]
    [(headers, pixels)] = _parts(response)
    assert pixels == clinic.datasets[2].PixelData
    # the part's Content-Location points at the platform, not at the tenant's Orthanc
    assert f"/dicomweb/{clinic.tenant.slug}/studies/" in headers.get("content-location", "")
    # the browser revalidates its copy without a byte moving
    again = client.get(path, HTTP_IF_NONE_MATCH=etag, **clinic.auth())
    assert again.status_code == 304 and again["ETag"] == etag and again.content == b""
    other_frame_etag = client.get(f"{clinic.instance_path(1)}/frames/1", **clinic.auth())["ETag"]
    assert other_frame_etag != etag


def test_pixels_that_spell_orthancs_url_come_back_unchanged_in_multipart_answers(client, unique_slug):
    # given a slice whose pixel data holds the very bytes of the Orthanc URL prefix the relay rewrites
    tenant, _ = tenant_create(slug=unique_slug("crafted"), name="Crafted Clinic")
    [dataset] = ct_series(patient_id="CRAFT-1", patient_name="Synthetic^Crafted", accession_number="ACC-C1", slices=1)
    pixels = bytearray(dataset.PixelData)
    pixels[100 : 100 + len(ORTHANC_URL_PREFIX)] = ORTHANC_URL_PREFIX
    dataset.PixelData = bytes(pixels)
    _, write = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_WRITE])
    assert stow(client, tenant.slug, write, [dataset_bytes(dataset)]).status_code == 200
    index_orthanc(tenant)
    _, read = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    clinic = ClinicWithCt(tenant=tenant, token=read, datasets=[dataset])
    # when its frame and its pixel bulk data are read as multipart answers
    frame = client.get(f"{clinic.instance_path(0)}/frames/1", **clinic.auth())
    bulk = client.get(f"{clinic.instance_path(0)}/bulk/7fe00010", **clinic.auth())
    # then every pixel byte is the stored one, and the frame part's header points at the platform
    [(frame_headers, frame_pixels)], [(_, bulk_pixels)] = _parts(frame), _parts(bulk)
    assert frame_pixels == bulk_pixels == dataset.PixelData
    assert f"/dicomweb/{tenant.slug}/studies/" in frame_headers["content-location"]


def test_a_frame_asked_for_as_application_octet_stream_comes_as_a_single_part(client, clinic_with_ct):
    clinic = clinic_with_ct
    path = f"{clinic.instance_path(1)}/frames/1"
    # when a viewer asks for the frame alone, in whatever syntax it is stored
    single = client.get(path, HTTP_ACCEPT="application/octet-stream; transfer-syntax=*", **clinic.auth())
    # then the pixels are the whole body, typed with their transfer syntax and announced by length
    assert single.status_code == 200 and single.streaming
    assert single["Content-Type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    pixels = _body(single)
    assert pixels == clinic.datasets[1].PixelData and int(single["Content-Length"]) == len(pixels)
    assert single["Cache-Control"].startswith("private, max-age=")
    # it is cached apart from the multipart answer of the same frame
    multipart = client.get(path, **clinic.auth())
    assert multipart["Content-Type"].startswith("multipart/related") and multipart["ETag"] != single["ETag"]
    # without a transfer syntax the default is Explicit VR Little Endian, as stored here
    default = client.get(path, HTTP_ACCEPT="application/octet-stream", **clinic.auth())
    assert _body(default) == clinic.datasets[1].PixelData
    # several frames cannot be one part, and a transfer syntax must be a UID
    several = client.get(
        f"{clinic.instance_path(1)}/frames/1,2", HTTP_ACCEPT="application/octet-stream", **clinic.auth()
    )
    assert several.status_code == 406 and "multipart/related" in several.json()["detail"]
    odd = client.get(path, HTTP_ACCEPT="application/octet-stream; transfer-syntax=jpeg", **clinic.auth())
    assert odd.status_code == 406 and "transfer-syntax" in odd.json()["detail"]
    jpeg = client.get(
        path, HTTP_ACCEPT="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50", **clinic.auth()
    )
    assert jpeg.status_code in (400, 406) and "transfer syntax" in jpeg.json()["detail"]


def test_frames_honour_the_requested_transfer_syntax_and_refuse_what_cannot_be_made(client, clinic_with_ct):
    clinic = clinic_with_ct
    path = f"{clinic.instance_path(0)}/frames/1"
    explicit = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    assert client.get(path, HTTP_ACCEPT=explicit, **clinic.auth()).status_code == 200
    # as Cornerstone/OHIF ask (no quotes), and as dicomweb-client asks by default (a wildcard part type)
    unquoted = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    assert client.get(path, HTTP_ACCEPT=unquoted, **clinic.auth()).status_code == 200
    assert client.get(path, HTTP_ACCEPT='multipart/related; type="*/*"', **clinic.auth()).status_code == 200
    jpeg = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50'
    refused = client.get(path, HTTP_ACCEPT=jpeg, **clinic.auth())
    assert refused.status_code in (400, 406) and "transfer syntax" in refused.json()["detail"]
    bad = client.get(f"{clinic.instance_path(0)}/frames/0", **clinic.auth())
    assert bad.status_code == 400 and "Frame numbers" in bad.json()["detail"]


def test_instances_series_and_studies_are_retrieved_as_multipart_dicom(client, clinic_with_ct):
    clinic = clinic_with_ct
    instance = client.get(clinic.instance_path(1), **clinic.auth())
    assert instance["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert instance["Cache-Control"].startswith("private, max-age=")
    [(_, data)] = _parts(instance)
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == clinic.datasets[1].SOPInstanceUID
    series = client.get(f"{clinic.base}/studies/{clinic.study_uid}/series/{clinic.series_uid}", **clinic.auth())
    study = client.get(
        f"{clinic.base}/studies/{clinic.study_uid}",
        HTTP_ACCEPT='multipart/related; type="application/dicom"',
        **clinic.auth(),
    )
    assert len(_parts(series)) == 3 and len(_parts(study)) == 3
    assert study["Cache-Control"] == "private, no-cache"


def test_rendered_and_thumbnail_images_at_every_level(client, clinic_with_ct):
    clinic = clinic_with_ct
    study = f"{clinic.base}/studies/{clinic.study_uid}"
    series = f"{study}/series/{clinic.series_uid}"
    for path in (
        f"{clinic.instance_path(0)}/rendered",
        f"{clinic.instance_path(0)}/frames/1/rendered",
        f"{series}/rendered",
        f"{study}/thumbnail",
        f"{series}/thumbnail",
        f"{clinic.instance_path(0)}/thumbnail",
        f"{clinic.instance_path(0)}/frames/1/thumbnail",
    ):
        response = client.get(path, HTTP_ACCEPT="image/jpeg", **clinic.auth())
        assert (response.status_code, response["Content-Type"]) == (200, "image/jpeg"), (path, _body(response))
        assert _body(response)[:2] == b"\xff\xd8", path
    png = client.get(
        f"{clinic.instance_path(0)}/rendered", {"viewport": "32,32"}, HTTP_ACCEPT="image/png", **clinic.auth()
    )
    assert png["Content-Type"] == "image/png" and _body(png)[:4] == b"\x89PNG"
    assert png["Cache-Control"].startswith("private, max-age=") and png["ETag"]
    # the `accept` query parameter (as OHIF writes thumbnail URLs) stands in for the header
    by_parameter = client.get(f"{series}/thumbnail", {"accept": "image/png"}, HTTP_ACCEPT="image/jpeg", **clinic.auth())
    assert by_parameter["Content-Type"] == "image/png" and _body(by_parameter)[:4] == b"\x89PNG"
    not_an_image = client.get(f"{series}/thumbnail", {"accept": "application/dicom"}, **clinic.auth())
    assert not_an_image.status_code == 406 and "image/jpeg" in not_an_image.json()["detail"]
    bad = client.get(f"{series}/thumbnail", {"viewport": "huge"}, **clinic.auth())
    unknown = client.get(f"{series}/rendered", {"annotation": "patient"}, **clinic.auth())
    assert bad.status_code == 400 and "viewport" in bad.json()["detail"]
    assert unknown.status_code == 400 and "annotation" in unknown.json()["detail"]


def test_unknown_series_instances_and_studies_are_the_same_404(client, clinic_with_ct):
    clinic = clinic_with_ct
    answers = [
        client.get(f"{clinic.base}/studies/1.2.3.4/metadata", **clinic.auth()),
        client.get(f"{clinic.base}/studies/{clinic.study_uid}/series/1.2.3.4/metadata", **clinic.auth()),
        client.get(
            f"{clinic.base}/studies/{clinic.study_uid}/series/{clinic.series_uid}/instances/9.9/frames/1",
            **clinic.auth(),
        ),
        # asked for as a viewer asks for frames: the refusal is still JSON
        client.get(
            f"{clinic.base}/studies/{clinic.study_uid}/series/{clinic.series_uid}/instances/9.9/frames/1",
            HTTP_ACCEPT="multipart/related; type=application/octet-stream; transfer-syntax=*",
            **clinic.auth(),
        ),
        client.get(f"{clinic.base}/studies/{clinic.study_uid}/series/1.2.3.4/thumbnail", **clinic.auth()),
    ]
    assert {(answer.status_code, json.dumps(answer.json())) for answer in answers} == {
        (404, '{"detail": "Not found."}')
    }


def test_with_accel_redirect_nginx_serves_the_bytes_after_django_authorised(client, clinic_with_ct, settings):
    clinic = clinic_with_ct
    settings.READROOM_DICOMWEB_ACCEL_REDIRECT = "/_orthanc/"
    settings.READROOM_DICOMWEB_ACCEL_SECRET = "nginx-knows-this"
    # a client that reaches Django without nginx (no or a wrong secret) gets the bytes from Django
    for header in ({}, {"HTTP_X_READROOM_ACCEL": "guess"}):
        direct = client.get(f"{clinic.instance_path(0)}/frames/1", **header, **clinic.auth())
        assert direct.streaming and "X-Accel-Redirect" not in direct
        assert not any(name.startswith("X-Readroom-Orthanc") for name, _ in direct.items())
    via_nginx = {"HTTP_X_READROOM_ACCEL": "nginx-knows-this", **clinic.auth()}
    response = client.get(f"{clinic.instance_path(0)}/frames/1", **via_nginx)
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == (
        f"/_orthanc/{clinic.tenant.slug}/dicom-web/studies/{clinic.study_uid}/series/{clinic.series_uid}"
        f"/instances/{clinic.datasets[0].SOPInstanceUID}/frames/1"
    )
    assert response["X-Readroom-Orthanc-Authorization"].startswith("Basic ")
    assert response["X-Readroom-Orthanc-Origin"].startswith("http://127.0.0.1:")
    assert response["Cache-Control"].startswith("private, max-age=") and response["ETag"]
    # a frame asked for as a single part is left to nginx too, in the multipart form Orthanc makes
    single = client.get(
        f"{clinic.instance_path(0)}/frames/1", HTTP_ACCEPT="application/octet-stream; transfer-syntax=*", **via_nginx
    )
    assert single["X-Accel-Redirect"].endswith("/frames/1") and single.content == b""
    assert (
        single["X-Readroom-Orthanc-Accept"] == 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    )
    thumbnail = client.get(f"{clinic.instance_path(0)}/thumbnail", **via_nginx)
    assert thumbnail["X-Accel-Redirect"].endswith("/rendered?viewport=128,128")
    # metadata is rewritten by Django, so it is still streamed from here
    metadata = client.get(f"{clinic.base}/studies/{clinic.study_uid}/metadata", **via_nginx)
    assert "X-Accel-Redirect" not in metadata and len(json.loads(_body(metadata))) == 3


def test_an_evicted_study_is_rehydrated_from_s3_on_first_retrieval(
    client, unique_slug, django_capture_on_commit_callbacks, monkeypatch
):
    # The platform's lookup of the study stays fresh however slow this test runs.
    monkeypatch.setattr(study_cache, "clock", lambda: 0.0)
    # given a study that was completed, archived to S3 and evicted from the clinic's Orthanc
    tenant, _ = tenant_create(slug=unique_slug("evict"), name="Evicting Clinic")
    _, write = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_WRITE])
    _, read = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    datasets = ct_series(patient_id="EVICT-1", patient_name="Synthetic^Evicted", accession_number="ACC-E1", slices=2)
    assert stow(client, tenant.slug, write, [dataset_bytes(d) for d in datasets]).status_code == 200
    pipeline = Pipeline(tenant, django_capture_on_commit_callbacks)
    pipeline.sync_until_completed(1)
    assert pipeline.archive_all() == 2
    base = f"/dicomweb/{tenant.slug}/studies/{datasets[0].StudyInstanceUID}"
    frame = f"{base}/series/{datasets[0].SeriesInstanceUID}/instances/{datasets[1].SOPInstanceUID}/frames/1"
    # (read once while it is online, so the platform holds its lookup from before the eviction)
    assert client.get(frame, HTTP_AUTHORIZATION=f"Bearer {read}").status_code == 200
    with tenant_context(tenant_ids=[tenant.pk]):
        study = Study.objects.get(study_instance_uid=datasets[0].StudyInstanceUID)
        assert study.status == StudyStatus.ARCHIVED and study_evict(tenant=tenant, study=study)
    # when a reader asks for a frame
    response = client.get(frame, HTTP_AUTHORIZATION=f"Bearer {read}")
    # then the study comes back from the archive first and the frame is served
    assert response.status_code == 200, response.content
    [(_, pixels)] = _parts(response)
    assert pixels == datasets[1].PixelData
    with tenant_context(tenant_ids=[tenant.pk]):
        assert Study.objects.get(pk=study.pk).evicted_at is None
    metadata = client.get(f"{base}/metadata", HTTP_AUTHORIZATION=f"Bearer {read}")
    assert len(json.loads(_body(metadata))) == 2
