"""Fixtures for the Django side of AI: an AI-enabled clinic, synthetic studies indexed for real, job messages."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
from django.conf import settings

from saas.studies.orthanc import orthanc_store
from saas.studies.synthetic import ct_series, dataset_bytes, dx_image, random_nodule
from tenants.services import tenant_create
from tests.studies.conftest import Pipeline

PATIENT_NAME = "Testperson^Alexandra"
PATIENT_ID = "PID-AI-4711"


@pytest.fixture
def ai_clinic(unique_slug):
    tenant, _ = tenant_create(slug=unique_slug("ai"), name="AI Clinic")
    tenant.ai_enabled = True
    tenant.save(update_fields=["ai_enabled"])
    return tenant


@pytest.fixture
def pipeline(ai_clinic, django_capture_on_commit_callbacks):
    return Pipeline(ai_clinic, django_capture_on_commit_callbacks)


def lesion_ct(
    *,
    slices: int = 40,
    lesion_mm: float = 15.0,
    accession: str = "ACC-AI-1",
    rows: int = 128,
    pixel_spacing: float = 2.8,
):
    """A small axial CT with one focal lesion (no organs: the demo model was not trained on this phantom's organs)."""
    lesions = [((40.0, -30.0, 0.0), lesion_mm, 80.0)] if lesion_mm else []
    return ct_series(
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        accession_number=accession,
        slices=slices,
        rows=rows,
        columns=rows,
        pixel_spacing=(pixel_spacing, pixel_spacing),
        slice_thickness=2.5,
        body_part="ABDOMEN",
        lesions=lesions,
        seed=3,
    )


def chest_dx(*, nodule: bool = True):
    return dx_image(
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        accession_number="ACC-AI-DX",
        nodule=random_nodule(rows=256, columns=256, pixel_spacing=(1.6, 1.6), seed=5) if nodule else None,
        seed=5,
    )


def store_all(tenant, datasets) -> None:
    for dataset in datasets:
        orthanc_store(tenant, dataset_bytes(dataset))


def take_tasks(task_name: str, *, queue: str = "django", timeout: float = 10.0, expect: int = 1) -> list[dict]:
    """Take the messages of one Django-side task off a queue of the test broker; their keyword arguments."""
    connection = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(found) < expect:
        for raw in connection.lrange(queue, 0, -1):
            message = json.loads(raw)
            if message["headers"]["task"] == task_name:
                _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
                connection.lrem(queue, 1, raw)
                found.append(kwargs)
        time.sleep(0.1)
    return found


def take_jobs(job_prefix: str, *, timeout: float = 10.0, expect: int = 1) -> list[dict]:
    """Take the inference jobs of one tenant off the pool queues of the test broker (others stay queued)."""
    connection = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(found) < expect:
        for queue in ("inference.cpu", "inference.gpu"):
            for raw in connection.lrange(queue, 0, -1):
                message = json.loads(raw)
                if message["headers"]["task"] != "inference.run":
                    continue
                args, _, _ = json.loads(base64.b64decode(message["body"]))
                if args[0]["job_id"].startswith(job_prefix):
                    connection.lrem(queue, 1, raw)
                    found.append(args[0])
        time.sleep(0.1)
    return found
