"""Fixtures for ingest tests: a provisioned clinic, STOW-RS bodies, and running the sync in-process."""

import time
import uuid

import pytest

from saas.studies.services import instances_archive, orthanc_sync
from tenants.context import tenant_context
from tenants.enums import TokenScope
from tenants.services import tenant_create
from tests.factories import api_token


@pytest.fixture
def clinic(unique_slug):
    tenant, _ = tenant_create(slug=unique_slug("ingest"), name="Ingest Clinic")
    return tenant


@pytest.fixture
def write_token(clinic):
    _, raw = api_token(tenant=clinic, scopes=[TokenScope.STUDIES_WRITE])
    return raw


def multipart_related(parts: list[bytes], *, content_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = f"rr-{uuid.uuid4().hex}"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(client, slug, raw_token, parts, **extra):
    body, content_type = multipart_related(parts, **extra)
    return client.post(
        f"/dicomweb/{slug}/studies",
        data=body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {raw_token}",
        HTTP_ACCEPT="application/dicom+json",
    )


class Pipeline:
    """Runs what the Celery workers run, in the test's own transaction, and records the events."""

    def __init__(self, tenant, capture_on_commit):
        self.tenant = tenant
        self.capture_on_commit = capture_on_commit
        self.archive_queue = []
        self.completed = []

    def sync(self):
        with tenant_context(tenant_ids=[self.tenant.pk]), self.capture_on_commit(execute=True):
            return orthanc_sync(
                tenant=self.tenant,
                on_archive=lambda instances: self.archive_queue.extend(instance.pk for instance in instances),
                on_completed=lambda study, completion: self.completed.append((study.pk, completion.version)),
            )

    def sync_until_completed(self, count: int, *, timeout: float = 20.0):
        """Orthanc reports a study stable after its StableAge; poll the feed as beat would."""
        deadline = time.monotonic() + timeout
        while len(self.completed) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.completed)} of {count} completions within {timeout} s")
            self.sync()
            time.sleep(0.3)

    def archive_all(self):
        queued, self.archive_queue = self.archive_queue, []
        with tenant_context(tenant_ids=[self.tenant.pk]):
            return instances_archive(tenant=self.tenant, instance_ids=queued)


@pytest.fixture
def pipeline(clinic, django_capture_on_commit_callbacks):
    return Pipeline(clinic, django_capture_on_commit_callbacks)
