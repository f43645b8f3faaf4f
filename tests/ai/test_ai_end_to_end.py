"""AI end to end with real processes: Celery worker and beat (Django side) and an inference worker pool.

A CT with a 15 mm lesion reaches the clinic's Orthanc; the change feed indexes it, completion dispatches
it, the inference worker runs the model, and the result comes back as SEG + SR, findings and the
`ai_critical` flag. A worker killed with -9 mid-job still ends in exactly one recorded result.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from django.conf import settings

from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis, Finding
from saas.audit.models import AuditEvent
from saas.studies.models import Study
from saas.studies.orthanc import orthanc_client
from tenants.context import tenant_context
from tenants.provisioning.storage import shared_s3_client as s3_client
from tests.ai.conftest import PATIENT_ID, PATIENT_NAME, lesion_ct, store_all
from tests.conftest import celery_tasks_in_flight, committed
from tests.faults.conftest import Process, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]

VENV_BIN = Path(sys.executable).parent
# Short enough that a job held by a killed worker comes back within the test, longer than any job here.
JOB_TIME_LIMIT_S = 40
VISIBILITY_TIMEOUT_S = 45


@pytest.fixture(scope="module")
def ai_platform(django_db_setup, django_db_blocker):
    database = settings.DATABASES["default"]["NAME"]
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "saas.config.settings.test",
        "READROOM_TEST_DATABASE": database,
        "PYTHONUNBUFFERED": "1",
    }
    worker_environment = {
        key: value for key, value in environment.items() if not key.startswith(("DATABASE", "AWS_", "STRIPE"))
    } | {
        "INFERENCE_BROKER_URL": settings.CELERY_BROKER_URL,
        "INFERENCE_TORCH_THREADS": "1",
        "INFERENCE_JOB_TIME_LIMIT_S": str(JOB_TIME_LIMIT_S),
        "INFERENCE_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
    }
    worker = Process(
        "ai-django-worker",
        [str(VENV_BIN / "celery"), "-A", "saas.config", "worker", "-l", "info", "--concurrency", "2",
         "-Q", "django,sync", "-n", f"ai-e2e-{database}@%h", "--without-mingle", "--without-gossip"],
        env=environment,
        ready=lambda process: " ready." in process.log_since_start(),
    )  # fmt: skip
    beat_schedule = Path(settings.VAR_DIR) / "test" / f"ai-beat-{database}"
    beat = Process(
        "ai-beat",
        [str(VENV_BIN / "celery"), "-A", "saas.config", "beat", "-l", "info", "-s", str(beat_schedule)],
        env=environment,
        ready=lambda process: "beat: Starting" in process.log_since_start(),
    )
    inference = Process(
        "ai-inference-worker",
        [str(VENV_BIN / "celery"), "-A", "inference_workers.app", "worker", "-l", "info", "-Q", "inference.cpu",
         "--concurrency", "1", "-n", f"ai-e2e-cpu-{database}@%h", "--without-mingle", "--without-gossip"],
        env=worker_environment,
        ready=lambda process: " ready." in process.log_since_start(),
        ready_timeout=120,
    )  # fmt: skip
    processes = (worker, beat, inference)
    for process in processes:
        process.spawn()
    try:
        for process in processes:
            process.wait_ready()
        with django_db_blocker.unblock():
            yield inference
    finally:
        for process in reversed(processes):
            process.stop()


def _ai_clinic(unique_slug):
    from tenants.services import tenant_ai_set, tenant_create

    def create():
        tenant, _ = tenant_create(slug=unique_slug("ai-e2e"), name="AI End to End Clinic")
        return tenant_ai_set(tenant=tenant, enabled=True)

    return committed(create)


def _analysis(tenant) -> Analysis | None:
    def read():
        with tenant_context(tenant_ids=[tenant.pk]):
            return Analysis.objects.select_related("study").filter(study__tenant=tenant).first()

    return committed(read)


def _succeeded(tenant) -> Analysis | None:
    analysis = _analysis(tenant)
    return analysis if analysis is not None and analysis.status == AnalysisStatus.SUCCEEDED else None


def _orthanc_modalities(tenant, study_uid: str) -> list[str]:
    answer = orthanc_client(tenant).post(
        "/tools/find", json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
    )
    return sorted(series["MainDicomTags"].get("Modality", "") for series in answer.json())


AI_TASKS = {"ai.dispatch_study", "ai.dispatch_analysis", "inference.run", "ai.record_result"}
AI_QUEUES = ("django", "inference.cpu", "inference.gpu")


def test_a_ct_with_a_15_mm_lesion_is_triaged_critical_with_seg_and_sr(ai_platform, unique_slug):
    # Given an AI-enabled clinic and a CT with one 15 mm lesion
    tenant = _ai_clinic(unique_slug)
    datasets = lesion_ct(slices=40)
    study_uid = str(datasets[0].StudyInstanceUID)
    # When the study reaches the clinic's Orthanc
    store_all(tenant, datasets)
    # Then within the deadline the analysis is recorded and the study flagged critical with its reason
    analysis = wait_for(lambda: _succeeded(tenant), timeout=150, interval=1.0, what="the AI result")

    def study_and_findings():
        with tenant_context(tenant_ids=[tenant.pk]):
            study = Study.objects.get(study_instance_uid=study_uid)
            return study, list(Finding.objects.filter(study=study))

    study, findings = committed(study_and_findings)
    assert study.ai_critical and "focal_lesion" in study.ai_critical_reason
    assert len(findings) == 1 and findings[0].critical and 11.0 <= findings[0].diameter_mm <= 20.0
    # And a SEG and an SR exist in that clinic's Orthanc
    assert _orthanc_modalities(tenant, study_uid) == ["CT", "SEG", "SR"]
    # And the input object in S3 carries no patient name or id: only the four arrays of the schema
    body = s3_client().get_object(Bucket=tenant.s3_bucket, Key=analysis.input_key)["Body"].read()
    assert PATIENT_NAME.encode() not in body and PATIENT_ID.encode() not in body
    assert study_uid.encode() not in body
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["orientation", "origin", "spacing", "voxels"]


def test_a_worker_killed_mid_job_still_yields_exactly_one_result(ai_platform, unique_slug):
    inference = ai_platform
    tenant = _ai_clinic(unique_slug)
    # A bigger volume, so the forward pass lasts long enough to be interrupted
    datasets = lesion_ct(slices=96, rows=256, pixel_spacing=1.4)
    store_all(tenant, datasets)
    analysis = wait_for(
        lambda: (a := _analysis(tenant)) is not None and a.status == AnalysisStatus.DISPATCHED and a,
        timeout=120,
        interval=0.3,
        what="the job to be dispatched",
    )
    job_id = f"t{tenant.pk}.{analysis.pk}.{analysis.attempts}"
    state = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    # When the worker has started the job, it is killed with -9 (no result sent, the job not acknowledged)
    wait_for(lambda: state.get(f"inference:deliveries:{job_id}:0"), timeout=120, interval=0.05, what="job start")
    inference.kill()
    killed_at = time.monotonic()
    assert not state.exists(f"inference:done:{analysis.idempotency_key}"), "the job finished before the kill"
    inference.start()
    # Then the job comes back after the visibility timeout and ends in one recorded result
    recorded = wait_for(lambda: _succeeded(tenant), timeout=VISIBILITY_TIMEOUT_S + 150, interval=1.0, what="result")
    assert time.monotonic() - killed_at >= VISIBILITY_TIMEOUT_S - 5
    assert int(state.get(f"inference:deliveries:{job_id}:0")) == 2

    def recorded_once():
        with tenant_context(tenant_ids=[tenant.pk]):
            results = AuditEvent.objects.filter(tenant_id=tenant.pk, detail__operation="ai_result").count()
            return Analysis.objects.count(), results, Finding.objects.filter(analysis=recorded).count()

    # Once no AI message is queued or held unacknowledged by a worker, no duplicate can still arrive
    wait_for(
        lambda: not celery_tasks_in_flight(AI_TASKS, AI_QUEUES), timeout=60, interval=0.2, what="AI queues drained"
    )
    analyses, results, findings = committed(recorded_once)
    assert (analyses, results) == (1, 1)
    assert findings == 1
    assert _orthanc_modalities(tenant, str(datasets[0].StudyInstanceUID)) == ["CT", "SEG", "SR"]
