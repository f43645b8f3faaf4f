"""Fixtures for DICOMweb tests: a clinic with an indexed CT in its Orthanc, and a private Redis audit namespace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
import redis
from django.conf import settings as django_settings

from saas.audit import aggregation
from saas.dicomweb.selectors import study_cache
from saas.studies.models import Instance, Patient, Series, Study
from saas.studies.services import orthanc_sync
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.enums import TokenScope
from tenants.middleware import actor_cache
from tenants.services import tenant_create
from tests.factories import api_token
from tests.studies.conftest import stow


@pytest.fixture(autouse=True)
def audit_namespace(settings):
    """Each test counts its audit aggregates in a namespace of its own on the tests' Redis database."""
    settings.READROOM_AUDIT_REDIS_URL = django_settings.CELERY_BROKER_URL
    prefix = settings.READROOM_AUDIT_REDIS_PREFIX = f"test-audit-{uuid.uuid4().hex[:12]}"
    yield settings
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    pattern = "{" + prefix + ":*"
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    # Nothing of a rolled-back test is written to the audit log when pytest exits.
    aggregation._touched.clear()


@pytest.fixture(autouse=True)
def fresh_decision_caches():
    """What one test's reads cached is never another test's (its tokens, people and studies are rolled back)."""
    actor_cache.clear()
    study_cache.clear()
    yield
    actor_cache.clear()
    study_cache.clear()


def index_orthanc(tenant) -> None:
    """What the Celery sync does, in the test's transaction."""
    with tenant_context(tenant_ids=[tenant.pk]):
        orthanc_sync(tenant=tenant, on_archive=lambda instance: None, on_completed=lambda study, completion: None)


@dataclass
class ClinicWithCt:
    tenant: object
    token: str
    datasets: list

    @property
    def study_uid(self) -> str:
        return self.datasets[0].StudyInstanceUID

    @property
    def series_uid(self) -> str:
        return self.datasets[0].SeriesInstanceUID

    @property
    def base(self) -> str:
        return f"/dicomweb/{self.tenant.slug}"

    def instance_path(self, index: int = 0) -> str:
        dataset = self.datasets[index]
        return f"{self.base}/studies/{self.study_uid}/series/{self.series_uid}/instances/{dataset.SOPInstanceUID}"

    def auth(self) -> dict:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.token}"}


@pytest.fixture
def clinic_with_ct(client, unique_slug) -> ClinicWithCt:
    """A clinic whose Orthanc holds a three-slice CT (sent by STOW-RS) that the index knows."""
    tenant, _ = tenant_create(slug=unique_slug("wado"), name="Reading Clinic")
    _, write = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_WRITE])
    _, read = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    datasets = ct_series(patient_id="WADO-1", patient_name="Synthetic^Reader", accession_number="ACC-W1", slices=3)
    response = stow(client, tenant.slug, write, [dataset_bytes(dataset) for dataset in datasets])
    assert response.status_code == 200, response.content
    index_orthanc(tenant)
    return ClinicWithCt(tenant=tenant, token=read, datasets=datasets)


def index_rows(
    tenant,
    *,
    patient_id,
    patient_name,
    study_date="20260101",
    modalities=("CT",),
    series=1,
    instances=2,
    **study_fields,
):
    """Index rows as the sync writes them (no Orthanc), for matching tests."""
    from pydicom.uid import generate_uid

    with tenant_context(tenant_ids=[tenant.pk]):
        patient, _ = Patient.objects.get_or_create(
            tenant=tenant, patient_id=patient_id, defaults={"patient_name": patient_name}
        )
        study = Study.objects.create(
            tenant=tenant,
            patient=patient,
            study_instance_uid=generate_uid(),
            study_date=study_date,
            modalities=list(modalities),
            series_count=series,
            instance_count=series * instances,
            **study_fields,
        )
        for series_number in range(1, series + 1):
            series_row = Series.objects.create(
                tenant=tenant,
                study=study,
                series_instance_uid=generate_uid(),
                modality=modalities[(series_number - 1) % len(modalities)],
                series_number=series_number,
                series_description=f"Series {series_number}",
                instance_count=instances,
            )
            for instance_number in range(1, instances + 1):
                Instance.objects.create(
                    tenant=tenant,
                    study=study,
                    series=series_row,
                    sop_instance_uid=generate_uid(),
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    instance_number=instance_number,
                )
    return study
