"""Finishing a browser upload in a real Celery worker: 202 and polling, and a worker killed (-9) mid-archive.

The live platform (gunicorn) takes the upload over HTTP with an API token, as a script would; one Celery worker
process consumes the `django` queue of this session's broker database and can be killed like a crashed pod.
"""

from __future__ import annotations

import io
import time
import zipfile

import pytest
import requests
from django.utils import timezone

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.models import UploadFile
from saas.studies.synthetic import ct_series, dataset_bytes
from saas.studies.uploads import upload_batches_requeue_stalled
from tenants.context import tenant_context
from tenants.orthanc import orthanc_endpoint
from tests.conftest import celery_tasks_in_flight, committed
from tests.faults.conftest import wait_for
from tests.studies.upload_worker import django_worker

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]

CHUNK_TYPE = "application/offset+octet-stream"


@pytest.fixture(scope="module")
def upload_worker(live_platform, django_db_blocker):
    worker = django_worker("upload-worker")
    worker.start()
    try:
        with django_db_blocker.unblock():
            yield worker
    finally:
        worker.stop()


class Uploader:
    """The page's protocol over HTTP: batch, declare, chunks, finish, poll."""

    def __init__(self, url: str, token: str) -> None:
        self.api = f"{url}/api/v1/uploads/"
        self.origin = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def batch(self) -> str:
        response = self.session.post(self.api, json={}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def send(self, batch_id: str, name: str, data: bytes, *, chunk_bytes: int = 1024 * 1024) -> None:
        declared = self.session.post(f"{self.api}{batch_id}/files/", json={"name": name, "size": len(data)}, timeout=30)
        assert declared.status_code == 201, declared.text
        for offset in range(0, len(data), chunk_bytes):
            response = self.session.put(
                f"{self.api}{batch_id}/files/{declared.json()['id']}",
                data=data[offset : offset + chunk_bytes],
                headers={"Upload-Offset": str(offset), "Content-Type": CHUNK_TYPE},
                timeout=30,
            )
            assert response.status_code == 200, response.text

    def finish(self, batch_id: str) -> requests.Response:
        return self.session.post(f"{self.api}{batch_id}/finish", json={}, timeout=30)

    def state(self, status_url: str) -> dict:
        response = self.session.get(f"{self.origin}{status_url}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def processed(self, status_url: str, *, timeout: float, seen: list | None = None) -> dict:
        def done():
            state = self.state(status_url)
            if seen is not None:
                seen.append(state)
            return state if state["status"] == "processed" else None

        return wait_for(done, timeout=timeout, interval=0.2, what="the batch to be processed")


def _slices(count: int, *, patient_id: str) -> list[bytes]:
    series = ct_series(
        patient_id=patient_id,
        patient_name="Synthetic^Worker",
        accession_number=f"ACC-{patient_id}",
        study_description="CT CHEST",
        study_date="20260305",
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
    answer = requests.get(f"{endpoint.http_url}/statistics", auth=endpoint.auth, timeout=30)
    return int(answer.json()["CountInstances"])


def _orthanc_sop_instance_uids(tenant) -> list[str]:
    endpoint = orthanc_endpoint(tenant)
    answer = requests.get(f"{endpoint.http_url}/instances?expand", auth=endpoint.auth, timeout=30)
    return [item["MainDicomTags"]["SOPInstanceUID"] for item in answer.json()]


def _audit(tenant, event_id: AuditEventId) -> list[AuditEvent]:
    def read():
        with tenant_context(tenant_ids=[tenant.pk]):
            return list(AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=event_id).order_by("pk"))

    return committed(read)


def test_finish_answers_202_and_a_worker_stores_the_batch_with_each_refusal_in_the_summary(
    upload_worker, live_platform
):
    # given a batch of two slices, a text file picked on its own and a zip whose entry escapes its folder
    tenant, token = live_platform.tenant_with_token(prefix="upload-worker")
    uploader = Uploader(live_platform.url, token)
    slices = _slices(3, patient_id="WRK-1")
    batch_id = uploader.batch()
    uploader.send(batch_id, "IM1", slices[0])
    uploader.send(batch_id, "IM2", slices[1])
    uploader.send(batch_id, "notes.txt", b"Patient arrived late.\n")
    uploader.send(batch_id, "export.zip", _zip([("../../etc/IM3", slices[2])]))
    # when it is finished
    started = time.monotonic()
    accepted = uploader.finish(batch_id)
    answered_in = time.monotonic() - started
    # then the answer is 202 with where to follow the work, and the worker processes it
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["Location"] == accepted.json()["status_url"] == f"/api/v1/uploads/{batch_id}"
    assert accepted.json()["files_total"] == 4 and answered_in < 5
    seen: list[dict] = []
    state = uploader.processed(accepted.json()["status_url"], timeout=60, seen=seen)
    assert all(earlier["summary"] is None for earlier in seen[:-1])
    assert (state["files_done"], state["files_total"]) == (4, 4)
    # and the summary lists the study, and each refused file with its reason in plain words
    summary = state["summary"]
    studies = [
        (study["patient_id"], study["study_description"], study["instances_accepted"]) for study in summary["studies"]
    ]
    assert studies == [("WRK-1", "CT CHEST", 2)]
    refused = {item["file"]: item["reason"] for item in summary["refused"]}
    assert set(refused) == {"notes.txt", "export.zip"}
    assert refused["notes.txt"].startswith("not a DICOM file")
    assert "unsafe path '../../etc/IM3'" in refused["export.zip"]
    # and only the two valid slices reached Orthanc; the zip's slice did not
    stored = [row["sop_instance_uid"] for row in _outcomes(tenant, batch_id) if row["status"] == "stored"]
    assert sorted(_orthanc_sop_instance_uids(tenant)) == sorted(stored) and len(stored) == 2
    # when it is finished again, then the summary comes back at once and nothing is stored or audited again
    again = uploader.finish(batch_id)
    assert again.status_code == 200 and again.json()["summary"] == summary
    wait_for(
        lambda: not celery_tasks_in_flight({"studies.upload_finish"}), timeout=60, interval=0.2, what="no finish left"
    )
    assert len(_orthanc_sop_instance_uids(tenant)) == 2
    [transferred] = _audit(tenant, AuditEventId.INSTANCES_TRANSFERRED)
    assert transferred.detail["stored"] == 2 and transferred.actor_username.startswith("token:")
    [alert] = _audit(tenant, AuditEventId.SECURITY_ALERT)
    assert alert.detail["kind"] == "zip_slip" and alert.detail["path"] == "upload"


def _outcomes(tenant, batch_id: str) -> list[dict]:
    def read():
        with tenant_context(tenant_ids=[tenant.pk]):
            return [row for upload_file in UploadFile.objects.filter(batch_id=batch_id) for row in upload_file.outcomes]

    return committed(read)


def test_a_worker_killed_mid_archive_loses_nothing_and_counts_each_instance_once(upload_worker, live_platform):
    # given a batch of one 300-slice archive and 10 single slices of the same study
    tenant, token = live_platform.tenant_with_token(prefix="upload-kill")
    uploader = Uploader(live_platform.url, token)
    slices = _slices(310, patient_id="WRK-KILL")
    batch_id = uploader.batch()
    uploader.send(batch_id, "study.zip", _zip([(f"IM{number}", data) for number, data in enumerate(slices[:300])]))
    for number, data in enumerate(slices[300:]):
        uploader.send(batch_id, f"single/IM{number}", data)
    accepted = uploader.finish(batch_id)
    assert accepted.status_code == 202, accepted.text
    status_url = accepted.json()["status_url"]

    # when the worker is killed with -9 while it is inside the archive (20 of its slices already in Orthanc). The
    # archive is the batch's first file; Orthanc's own count is watched, not the page's progress, which is written
    # once a second and so can miss a whole archive that a fast machine stores in under a second.
    def inside_the_archive():
        count = _orthanc_instance_count(tenant)
        return count if count >= 20 else None

    wait_for(inside_the_archive, timeout=60, interval=0.01, what="the worker inside the archive")
    upload_worker.kill()
    stored_before_restart = len(_orthanc_sop_instance_uids(tenant))
    assert 20 <= stored_before_restart < 300, f"the archive was done before the kill: {stored_before_restart} stored"
    # then the batch is still finishing, its archive not counted and its bytes kept
    state = uploader.state(status_url)
    assert (state["status"], state["files_done"], state["summary"]) == ("finishing", 0, None)
    # when a worker is back and the housekeeping queues the batch again (no sign of life since the kill)
    upload_worker.start()
    requeued = committed(lambda: upload_batches_requeue_stalled(tenant=tenant, quiet_since=timezone.now()))
    assert requeued == [batch_id]
    # then every instance is accepted exactly once, in the summary, in Orthanc and in the audit
    state = uploader.processed(status_url, timeout=120)
    assert [study["instances_accepted"] for study in state["summary"]["studies"]] == [310]
    assert state["summary"]["refused"] == state["summary"]["failed"] == []
    orthanc = _orthanc_sop_instance_uids(tenant)
    assert len(orthanc) == len(set(orthanc)) == 310
    stored_rows = [row for row in _outcomes(tenant, batch_id) if row["status"] == "stored"]
    assert len(stored_rows) == len({row["sop_instance_uid"] for row in stored_rows}) == 310
    [transferred] = _audit(tenant, AuditEventId.INSTANCES_TRANSFERRED)
    assert transferred.detail["stored"] == 310
