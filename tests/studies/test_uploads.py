"""Browser uploads through the API: resumable chunks, validation before Orthanc, a summary per study, tenancy.

Finishing is queued for a worker; here the task runs in the test's own process and transaction (the same function
a worker runs), and tests/studies/test_upload_finish_worker.py runs it in a real, killable worker.
"""

import io
import uuid
import zipfile

import pytest
import requests
from django.test import Client

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.enums import UploadStatus
from saas.studies.models import UploadBatch, UploadFile
from saas.studies.synthetic import ct_series, dataset_bytes
from saas.studies.upload_tasks import upload_finish
from saas.studies.uploads import UploadChunkIncomplete, upload_batch_create, upload_chunk_append, upload_file_create
from tenants.context import tenant_context
from tenants.enums import Role, TokenScope
from tenants.orthanc import orthanc_endpoint
from tenants.selectors import actor_for_user
from tests.factories import api_token, person, tenant_row

pytestmark = pytest.mark.django_db

API = "/api/v1/uploads/"
CHUNK_TYPE = "application/offset+octet-stream"


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    settings.READROOM_UPLOAD_DIR = tmp_path / "uploads"
    return settings.READROOM_UPLOAD_DIR


def _slices(count: int) -> list[bytes]:
    series = ct_series(
        patient_id="UPL-1",
        patient_name="Synthetic^Upload",
        accession_number="ACC-U1",
        study_description="CT CHEST",
        study_date="20260214",
        slices=count,
        rows=32,
        columns=32,
    )
    return [dataset_bytes(ds) for ds in series]


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def _orthanc_instance_count(tenant) -> int:
    endpoint = orthanc_endpoint(tenant)
    return len(requests.get(f"{endpoint.http_url}/instances", auth=endpoint.auth, timeout=10).json())


def _signed_in(client, tenant, role=Role.CLINIC_STAFF):
    client.force_login(person(role=role, tenant=tenant))
    return client


def _batch(client) -> str:
    response = client.post(API, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _declare(client, batch_id: str, name: str, size: int):
    return client.post(f"{API}{batch_id}/files/", {"name": name, "size": size}, content_type="application/json")


def _put(client, batch_id: str, file_id: str, offset: int | str, chunk: bytes, **extra):
    return client.put(
        f"{API}{batch_id}/files/{file_id}",
        data=chunk,
        content_type=extra.pop("content_type", CHUNK_TYPE),
        headers={"Upload-Offset": str(offset)},
        **extra,
    )


def _send(client, batch_id: str, name: str, data: bytes, *, chunk_bytes: int = 4096) -> str:
    declared = _declare(client, batch_id, name, len(data))
    assert declared.status_code == 201, declared.content
    file_id = declared.json()["id"]
    assert declared.json()["received"] == 0
    for offset in range(0, len(data), chunk_bytes):
        response = _put(client, batch_id, file_id, offset, data[offset : offset + chunk_bytes])
        assert response.status_code == 200, response.content
    return file_id


def _finish(client, tenant, batch_id: str, capture=None) -> dict:
    """Finish as the page does: 202 at once, the worker's task, then the summary read from the batch's status."""
    accepted = client.post(f"{API}{batch_id}/finish", content_type="application/json")
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["status"] == "finishing" and accepted["Location"] == f"{API}{batch_id}"
    if capture is None:
        upload_finish(tenant_id=tenant.pk, batch_id=batch_id)
    else:
        # Runs what the task commits on the way (each processed file's part removed, the sync queued).
        with capture(execute=True):
            upload_finish(tenant_id=tenant.pk, batch_id=batch_id)
    state = client.get(accepted["Location"])
    assert state.status_code == 200 and state.json()["status"] == "processed", state.content
    return state.json()["summary"]


def _security_alerts(tenant) -> list[AuditEvent]:
    with tenant_context(tenant_ids=[tenant.pk]):
        return list(AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.SECURITY_ALERT))


def _batches(tenant) -> int:
    with tenant_context(tenant_ids=[tenant.pk]):
        return UploadBatch.objects.filter(tenant_id=tenant.pk).count()


# --- the happy path -------------------------------------------------------------------------------------------


@pytest.mark.orthanc
def test_a_folder_and_a_zip_become_one_study_with_the_extras_skipped(
    client, clinic, upload_dir, django_capture_on_commit_callbacks
):
    # given a CD export folder (3 slices, DICOMDIR, a thumbnail, notes) and a zip of 2 more slices of the same study
    slices = _slices(5)
    folder = [
        ("CD/IMAGES/IM1", slices[0]),
        ("CD/IMAGES/IM2", slices[1]),
        ("CD/IMAGES/IM3", slices[2]),
        ("CD/DICOMDIR", b"\0" * 128 + b"DICM" + b"\0" * 64),
        ("CD/thumbnail.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 200),
        ("CD/notes.txt", b"Patient arrived late; contrast given.\n"),
    ]
    archive = _zip([("IM4", slices[3]), ("IM5", slices[4])])
    _signed_in(client, clinic)
    batch_id = _batch(client)
    file_ids = [_send(client, batch_id, name, data) for name, data in [*folder, ("more.zip", archive)]]
    # when the batch is finished
    summary = _finish(client, clinic, batch_id, django_capture_on_commit_callbacks)
    # then the summary lists one study with its five images, and the three extras as skipped
    assert summary["studies"] == [
        {
            "study_instance_uid": summary["studies"][0]["study_instance_uid"],
            "patient_name": "Synthetic^Upload",
            "patient_id": "UPL-1",
            "study_date": "20260214",
            "study_description": "CT CHEST",
            "instances_accepted": 5,
        }
    ]
    assert sorted(item["file"] for item in summary["skipped"]) == ["CD/DICOMDIR", "CD/notes.txt", "CD/thumbnail.jpg"]
    assert all(item["reason"] for item in summary["skipped"])
    assert summary["refused"] == [] and summary["failed"] == []
    # and Orthanc holds the five instances
    assert _orthanc_instance_count(clinic) == 5
    # and each file keeps its outcomes (the zip one per entry), while the received bytes are gone from disk
    with tenant_context(tenant_ids=[clinic.pk]):
        zip_file = UploadFile.objects.get(pk=file_ids[-1])
        batch = UploadBatch.objects.get(pk=batch_id)
    assert [(row["file"], row["status"]) for row in zip_file.outcomes] == [
        ("more.zip/IM4", "stored"),
        ("more.zip/IM5", "stored"),
    ]
    assert all(row["sop_instance_uid"] for row in zip_file.outcomes)
    assert batch.status == UploadStatus.PROCESSED and batch.finished_at is not None
    assert list(upload_dir.rglob("*.part")) == []
    # and the transfer is audited once for the whole batch
    with tenant_context(tenant_ids=[clinic.pk]):
        transferred = AuditEvent.objects.filter(tenant_id=clinic.pk, event_id=AuditEventId.INSTANCES_TRANSFERRED)
        assert [event.detail["stored"] for event in transferred] == [5]


@pytest.mark.orthanc
def test_an_api_token_with_studies_write_may_upload(client, clinic):
    _, raw = api_token(tenant=clinic, scopes=[TokenScope.STUDIES_WRITE])
    token_client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    batch_id = _batch(token_client)
    _send(token_client, batch_id, "IM1", _slices(1)[0])
    summary = _finish(token_client, clinic, batch_id)
    assert summary["studies"][0]["instances_accepted"] == 1
    # and the transfer is audited as that token, though a worker stored it
    with tenant_context(tenant_ids=[clinic.pk]):
        transferred = AuditEvent.objects.get(tenant_id=clinic.pk, event_id=AuditEventId.INSTANCES_TRANSFERRED)
    assert transferred.token_id is not None and transferred.actor_username.startswith("token:")


# --- resuming ---------------------------------------------------------------------------------------------------


@pytest.mark.orthanc
def test_an_interrupted_file_resumes_from_what_the_server_received(client, clinic, upload_dir):
    # given half of a slice sent
    data = _slices(1)[0]
    half = len(data) // 2
    _signed_in(client, clinic)
    batch_id = _batch(client)
    file_id = _declare(client, batch_id, "IM1", len(data)).json()["id"]
    assert _put(client, batch_id, file_id, 0, data[:half]).status_code == 200
    # when the client, after a reconnect, asks what the server holds
    state = client.get(f"{API}{batch_id}/files/{file_id}")
    # then it learns the received count
    assert state.status_code == 200
    assert state.json() == {"id": file_id, "name": "IM1", "size": len(data), "received": half, "status": "open"}
    # when it sends a chunk at a wrong offset (from the start again, or past the end of what arrived)
    for wrong in (0, half + 10):
        conflict = _put(client, batch_id, file_id, wrong, data[wrong : wrong + 100])
        # then it is told where to continue, and nothing is written
        assert conflict.status_code == 409
        assert conflict.json()["received"] == half
    # given bytes on disk past `received` from an attempt whose database update never committed
    part = next(upload_dir.rglob(f"{file_id}.part"))
    with open(part, "ab") as stray:
        stray.write(b"garbage from a dropped request")
    # when the rest is sent from the received offset
    done = _put(client, batch_id, file_id, half, data[half:])
    # then the file is complete and byte-identical, and it is stored on finish
    assert done.status_code == 200 and done.json()["received"] == len(data) and done.json()["status"] == "received"
    assert part.read_bytes() == data
    summary = _finish(client, clinic, batch_id)
    assert summary["studies"][0]["instances_accepted"] == 1
    assert _orthanc_instance_count(clinic) == 1


@pytest.mark.orthanc
def test_a_declaration_retried_after_its_answer_was_lost_names_the_same_file(client, clinic, upload_dir):
    # given a file declared and half sent, whose declaration answer the browser never saw
    data = _slices(1)[0]
    half = len(data) // 2
    _signed_in(client, clinic)
    batch_id = _batch(client)
    file_id = _declare(client, batch_id, "IM1", len(data)).json()["id"]
    assert _put(client, batch_id, file_id, 0, data[:half]).status_code == 200
    # when the browser declares it again
    again = _declare(client, batch_id, "IM1", len(data))
    # then it gets the same file with what the server holds, and can finish it from there
    assert again.status_code == 201 and again.json() == {"id": file_id, "received": half}
    assert _put(client, batch_id, file_id, half, data[half:]).status_code == 200
    summary = _finish(client, clinic, batch_id)
    assert summary["studies"][0]["instances_accepted"] == 1
    assert summary["refused"] == [] and summary["failed"] == []
    assert _orthanc_instance_count(clinic) == 1


@pytest.mark.orthanc
def test_a_file_not_fully_received_is_reported_as_failed(client, clinic):
    # given one complete slice and one of which only 1000 bytes arrived
    good, cut = _slices(2)
    _signed_in(client, clinic)
    batch_id = _batch(client)
    _send(client, batch_id, "IM1", good)
    file_id = _declare(client, batch_id, "IM2", len(cut)).json()["id"]
    _put(client, batch_id, file_id, 0, cut[:1000])
    # when the batch is finished
    summary = _finish(client, clinic, batch_id)
    # then the complete one is stored and the other named as incomplete, in plain words
    assert summary["failed"] == [{"file": "IM2", "reason": f"upload incomplete: 1000 of {len(cut)} bytes"}]
    assert summary["studies"][0]["instances_accepted"] == 1
    assert _orthanc_instance_count(clinic) == 1


@pytest.mark.orthanc
def test_finish_answers_202_at_once_and_the_batch_reports_progress_until_its_summary(client, clinic, upload_dir):
    # given a batch of two slices
    slices = _slices(2)
    _signed_in(client, clinic)
    batch_id = _batch(client)
    file_id = _send(client, batch_id, "IM1", slices[0])
    _send(client, batch_id, "IM2", slices[1])
    # when it is finished
    accepted = client.post(f"{API}{batch_id}/finish", content_type="application/json")
    # then the answer comes before any file is checked, with where to follow the work
    assert accepted.status_code == 202
    assert accepted.json() == {
        "id": batch_id,
        "status": "finishing",
        "status_url": f"{API}{batch_id}",
        "files_total": 2,
        "files_done": 0,
        "entries_done": 0,
        "summary": None,
    }
    assert accepted["Location"] == f"{API}{batch_id}"
    assert client.get(f"{API}{batch_id}").json()["status"] == "finishing"
    assert _orthanc_instance_count(clinic) == 0
    # and the batch takes no more files or chunks, and nothing of those is kept
    assert _declare(client, batch_id, "IM9", 10).status_code == 409
    closed = _put(client, batch_id, file_id, 0, b"x")
    assert closed.status_code == 409 and closed.json()["detail"] == "This upload is already finished; start a new one."
    assert client.get(f"{API}{batch_id}/files/{file_id}").json()["received"] == len(slices[0])
    with tenant_context(tenant_ids=[clinic.pk]):
        assert UploadFile.objects.filter(batch_id=batch_id).count() == 2
    # when the worker has run, then the batch reports every file done and its summary
    upload_finish(tenant_id=clinic.pk, batch_id=batch_id)
    state = client.get(f"{API}{batch_id}").json()
    assert (state["status"], state["files_total"], state["files_done"]) == ("processed", 2, 2)
    assert state["summary"]["studies"][0]["instances_accepted"] == 2
    assert _orthanc_instance_count(clinic) == 2


@pytest.mark.orthanc
def test_finishing_twice_queues_once_and_stores_nothing_again(client, clinic, django_capture_on_commit_callbacks):
    _signed_in(client, clinic)
    batch_id = _batch(client)
    file_id = _send(client, batch_id, "IM1", _slices(1)[0])
    # when the finish is sent twice (a lost answer, a second tab), then the work is queued once
    with django_capture_on_commit_callbacks() as first:
        assert client.post(f"{API}{batch_id}/finish", content_type="application/json").status_code == 202
    with django_capture_on_commit_callbacks() as again:
        assert client.post(f"{API}{batch_id}/finish", content_type="application/json").status_code == 202
    assert len(first) == 1 and again == []
    # when the task runs twice (the broker delivers it again after a worker was lost)
    upload_finish(tenant_id=clinic.pk, batch_id=batch_id)
    summary = client.get(f"{API}{batch_id}").json()["summary"]
    upload_finish(tenant_id=clinic.pk, batch_id=batch_id)
    # then the summary stands as it was, the instance was stored and audited once
    assert client.get(f"{API}{batch_id}").json()["summary"] == summary
    assert summary["studies"][0]["instances_accepted"] == 1
    assert _orthanc_instance_count(clinic) == 1
    with tenant_context(tenant_ids=[clinic.pk]):
        transferred = AuditEvent.objects.filter(tenant_id=clinic.pk, event_id=AuditEventId.INSTANCES_TRANSFERRED)
        assert transferred.count() == 1
    # and finishing a processed batch answers its summary at once
    done = client.post(f"{API}{batch_id}/finish", content_type="application/json")
    assert done.status_code == 200 and done.json()["status"] == "processed" and done.json()["summary"] == summary
    # and a finished batch takes no more files or chunks
    assert _declare(client, batch_id, "IM9", 10).status_code == 409
    assert _put(client, batch_id, file_id, 0, b"x").status_code == 409


# --- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.orthanc
def test_a_zip_bomb_and_a_zip_slip_are_refused_with_a_security_alert_and_nothing_stored(client, clinic):
    # given a zip with 8 MB of zeros beside a slice (about 1000:1) and a zip whose entry escapes its folder
    good = _slices(1)[0]
    bomb = _zip([("IM1", good), ("padding.bin", bytes(8 * 1024 * 1024))])
    slip = _zip([("../../etc/IM1", good)])
    _signed_in(client, clinic)
    batch_id = _batch(client)
    _send(client, batch_id, "bomb.zip", bomb, chunk_bytes=1024 * 1024)
    _send(client, batch_id, "slip.zip", slip)
    # when the batch is finished
    summary = _finish(client, clinic, batch_id)
    # then both archives are refused whole, each with its reason, and nothing reached Orthanc
    refused = {item["file"]: item["reason"] for item in summary["refused"]}
    assert set(refused) == {"bomb.zip", "slip.zip"}
    assert "zip bomb" in refused["bomb.zip"]
    assert "unsafe path '../../etc/IM1'" in refused["slip.zip"]
    assert summary["studies"] == []
    assert _orthanc_instance_count(clinic) == 0
    # and each is recorded as a Security Alert (110113)
    alerts = _security_alerts(clinic)
    assert sorted(alert.detail["kind"] for alert in alerts) == ["zip_bomb", "zip_slip"]
    assert {alert.detail["path"] for alert in alerts} == {"upload"}


@pytest.mark.orthanc
def test_when_every_file_is_refused_the_summary_gives_each_reason_and_nothing_is_stored(client, clinic):
    # given a text file picked on its own (not beside images in a folder) and a damaged slice
    _signed_in(client, clinic)
    batch_id = _batch(client)
    _send(client, batch_id, "notes.txt", b"not an image\n")
    _send(client, batch_id, "IM1", _slices(1)[0][:300])
    summary = _finish(client, clinic, batch_id)
    assert summary["studies"] == [] and summary["skipped"] == [] and summary["failed"] == []
    reasons = {item["file"]: item["reason"] for item in summary["refused"]}
    assert reasons["notes.txt"].startswith("not a DICOM file")
    assert "IM1" in reasons
    assert _orthanc_instance_count(clinic) == 0
    # and honest mistakes are not security alerts
    assert _security_alerts(clinic) == []


@pytest.mark.parametrize(
    ("name", "size", "file", "reason"),
    [
        ("IM1", 0, "IM1", "the file is empty"),
        ("huge.zip", 5 * 1024**3, "huge.zip", "the file is 5 GB; the limit is 4 GB per file"),
        ("IM\x001", 10, "IM1", "the file name holds a NUL character"),
        # JSON's "\ud800" decodes to a lone surrogate, which no database column can hold
        ("IM\ud8001", 10, "IM?1", "the file name is not valid Unicode text"),
        ("a" * 1025, 10, "a" * 200, "the file name is longer than 1024 characters"),
    ],
)
def test_a_file_that_can_never_be_taken_is_refused_before_any_byte_is_sent(client, name, size, file, reason):
    clinic = tenant_row()
    _signed_in(client, clinic)
    batch_id = _batch(client)
    response = _declare(client, batch_id, name, size)
    assert response.status_code == 400
    assert response.json() == {"file": file, "reason": reason}
    with tenant_context(tenant_ids=[clinic.pk]):
        assert UploadFile.objects.filter(batch_id=batch_id).count() == 0


def test_chunks_are_checked_before_they_are_written(client, upload_dir):
    clinic = tenant_row()
    _signed_in(client, clinic)
    batch_id = _batch(client)
    file_id = _declare(client, batch_id, "IM1", 10).json()["id"]
    # past the declared size
    too_long = _put(client, batch_id, file_id, 0, b"x" * 11)
    assert too_long.status_code == 400
    reason = "the chunk would end at byte 11, past the file's declared 10 bytes"
    assert too_long.json() == {"file": "IM1", "reason": reason}
    # not sent as a chunk
    assert _put(client, batch_id, file_id, 0, b"x", content_type="application/json").status_code == 415
    # without an offset
    no_offset = client.put(f"{API}{batch_id}/files/{file_id}", data=b"x", content_type=CHUNK_TYPE)
    assert no_offset.status_code == 400 and "Upload-Offset" in no_offset.json()["detail"]
    # with an offset that is no byte count: a digit only to str.isdigit, or more digits than int() takes
    for offset in ("\u00b2", "1" * 5000):
        bad_offset = _put(client, batch_id, file_id, offset, b"x")
        assert bad_offset.status_code == 400 and "Upload-Offset" in bad_offset.json()["detail"]
    # nothing was written or counted
    assert list(upload_dir.rglob("*.part")) == []
    assert client.get(f"{API}{batch_id}/files/{file_id}").json()["received"] == 0


def test_a_chunk_cut_off_mid_body_counts_for_nothing(upload_dir):
    # given a declared file of 100 bytes
    clinic = tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic)
    actor = actor_for_user(user=user)
    with tenant_context(tenant_ids=actor.context_tenant_ids, user_id=user.pk):
        upload_file = upload_file_create(actor=actor, batch=upload_batch_create(actor=actor), name="IM1", size=100)
        # when the connection drops after 40 of the chunk's 100 bytes
        with pytest.raises(UploadChunkIncomplete):
            upload_chunk_append(actor=actor, upload_file=upload_file, offset=0, length=100, body=io.BytesIO(b"x" * 40))
        # then nothing is counted, so the client resends the chunk from the start
        assert UploadFile.objects.get(pk=upload_file.pk).received == 0
        resent = upload_chunk_append(
            actor=actor, upload_file=upload_file, offset=0, length=100, body=io.BytesIO(b"y" * 100)
        )
    # and the resent chunk replaces the stray bytes
    assert resent.received == 100 and resent.status == UploadStatus.RECEIVED
    assert next(upload_dir.rglob("*.part")).read_bytes() == b"y" * 100


def test_a_16_mib_chunk_is_streamed_to_disk_and_a_bigger_one_is_refused(client, upload_dir):
    # given a 16 MiB file beside the images of a folder (far above Django's in-memory body limit)
    clinic = tenant_row()
    _signed_in(client, clinic)
    batch_id = _batch(client)
    blob = bytes(range(256)) * (16 * 1024 * 4)
    file_id = _declare(client, batch_id, "CD/viewer.bin", len(blob) + 1).json()["id"]
    # when a chunk one byte over the limit is sent, then it is refused unread
    assert _put(client, batch_id, file_id, 0, blob + b"x").status_code == 413
    # when the file is sent as one 16 MiB chunk and one byte, then both are taken
    assert _put(client, batch_id, file_id, 0, blob).json()["received"] == len(blob)
    assert _put(client, batch_id, file_id, len(blob), b"x").json()["status"] == "received"
    assert next(upload_dir.rglob("*.part")).read_bytes() == blob + b"x"
    # and on finish it is skipped as a folder extra, which is no failure
    summary = _finish(client, clinic, batch_id)
    assert summary["skipped"] == [{"file": "CD/viewer.bin", "reason": "not a DICOM file"}]


# --- who may upload ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.RADIOLOGIST, Role.BILLING_ADMIN, Role.REFERRING_PHYSICIAN])
def test_people_without_an_uploading_role_are_refused_and_nothing_is_created(client, role):
    clinic = tenant_row()
    _signed_in(client, clinic, role=role)
    response = client.post(API, content_type="application/json")
    assert response.status_code == 403, response.content
    assert response.json()["detail"]
    assert _batches(clinic) == 0


def test_a_staff_batch_cannot_be_continued_by_a_radiologist_of_the_clinic(client):
    clinic = tenant_row()
    _signed_in(client, clinic)
    batch_id = _batch(client)
    radiologist = Client()
    _signed_in(radiologist, clinic, role=Role.RADIOLOGIST)
    assert _declare(radiologist, batch_id, "IM1", 10).status_code == 403
    assert radiologist.post(f"{API}{batch_id}/finish", content_type="application/json").status_code == 403
    assert radiologist.get(f"{API}{batch_id}").status_code == 403
    with tenant_context(tenant_ids=[clinic.pk]):
        assert UploadFile.objects.filter(batch_id=batch_id).count() == 0
        assert UploadBatch.objects.get(pk=batch_id).status == UploadStatus.OPEN


def test_a_read_only_token_cannot_upload(client):
    clinic = tenant_row()
    _, raw = api_token(tenant=clinic, scopes=[TokenScope.STUDIES_READ])
    response = client.post(API, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403 and "studies:write" in response.json()["detail"]
    assert _batches(clinic) == 0


def test_signed_out_callers_are_refused(client):
    assert client.post(API, content_type="application/json").status_code == 401


def test_a_browser_session_must_send_the_csrf_token():
    clinic = tenant_row()
    browser = _signed_in(Client(enforce_csrf_checks=True), clinic)
    response = browser.post(API, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert _batches(clinic) == 0


def test_another_clinics_batch_or_file_is_the_same_404_as_a_missing_one(client):
    # given a batch with a file in one clinic
    north, south = tenant_row(), tenant_row()
    _signed_in(client, north)
    batch_id = _batch(client)
    file_id = _declare(client, batch_id, "IM1", 10).json()["id"]
    # when staff of another clinic, and a colleague of the same clinic, reach for it by id
    for other in (_signed_in(Client(), south), _signed_in(Client(), north)):
        missing = str(uuid.uuid4())
        answers = [
            (_declare(other, batch_id, "IM2", 10), _declare(other, missing, "IM2", 10)),
            (other.get(f"{API}{batch_id}/files/{file_id}"), other.get(f"{API}{missing}/files/{file_id}")),
            (_put(other, batch_id, file_id, 0, b"x"), _put(other, batch_id, missing, 0, b"x")),
            (
                other.post(f"{API}{batch_id}/finish", content_type="application/json"),
                other.post(f"{API}{missing}/finish", content_type="application/json"),
            ),
            (other.get(f"{API}{batch_id}"), other.get(f"{API}{missing}")),
        ]
        # then each answer is exactly that of an id that does not exist
        for theirs, nobodys in answers:
            assert theirs.status_code == nobodys.status_code == 404
            assert theirs.json() == nobodys.json() == {"detail": "Not found."}
    # and nothing changed
    with tenant_context(tenant_ids=[north.pk]):
        assert UploadFile.objects.filter(batch_id=batch_id).count() == 1
        assert UploadFile.objects.get(pk=file_id).received == 0
        assert UploadBatch.objects.get(pk=batch_id).status == UploadStatus.OPEN


# --- the page ---------------------------------------------------------------------------------------------------


def test_the_upload_page_offers_labelled_pickers_to_clinic_staff(client):
    clinic = tenant_row()
    _signed_in(client, clinic)
    response = client.get("/upload/")
    page = response.content.decode()
    assert response.status_code == 200
    assert '<label for="upload-files-input">Choose files</label>' in page
    assert '<label for="upload-folder-input">Choose a folder</label>' in page
    assert '<label for="upload-processing-progress">Processed</label>' in page
    assert "webkitdirectory" in page and "upload.js" in page
    assert "csrftoken" in response.cookies


def test_the_upload_page_explains_why_billing_cannot_upload(client):
    clinic = tenant_row()
    _signed_in(client, clinic, role=Role.BILLING_ADMIN)
    page = client.get("/upload/").content.decode()
    assert 'role="alert"' in page and "patient data" in page
    assert "upload-files-input" not in page


def test_the_upload_page_needs_a_sign_in(client):
    response = client.get("/upload/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/upload/"
