"""Celery tasks of the studies domain: follow each Orthanc's change feed, archive, sweep."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from saas.config.celery import app
from saas.studies.events import study_completed
from saas.studies.orthanc import OrthancError
from saas.studies.services import ArchiveError, instance_archive, instances_awaiting_archive, orthanc_sync
from tenants.models import Tenant
from tenants.selectors import tenants_active
from tenants.tasks import TenantTask

# Instances not archived this long after arrival are picked up again by the sweeper (S3 outage,
# a lost task): archiving is idempotent, so a duplicate run costs a re-upload at most (a backlog
# older than this is queued twice; cheap next to losing a killed worker's task for an hour).
ARCHIVE_SWEEP_AGE = timedelta(seconds=30)


def _enqueue_archive(instance) -> None:
    archive_instance.delay(tenant_id=instance.tenant_id, instance_id=instance.pk)


def _on_completed(study, completion) -> None:
    study_completed(tenant_id=study.tenant_id, study_id=study.pk, version=completion.version)


@app.task(name="studies.sync_all", ignore_result=True)
def sync_all() -> None:
    """Beat: one sync per active tenant (a tenant already being synced is skipped by its lock)."""
    for tenant_id in tenants_active().values_list("pk", flat=True):
        sync_tenant.delay(tenant_id=tenant_id)


@app.task(
    base=TenantTask,
    name="studies.sync_tenant",
    atomic=False,
    ignore_result=True,
    autoretry_for=(OrthancError,),
    retry_backoff=2,
    retry_backoff_max=30,
    max_retries=5,
)
def sync_tenant(*, tenant_id: int) -> None:
    tenant = Tenant.objects.get(pk=tenant_id)
    orthanc_sync(tenant=tenant, on_archive=_enqueue_archive, on_completed=_on_completed)


@app.task(
    base=TenantTask,
    name="studies.archive_instance",
    ignore_result=True,
    autoretry_for=(ArchiveError, OrthancError),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=10,
)
def archive_instance(*, tenant_id: int, instance_id: int) -> None:
    instance_archive(tenant=Tenant.objects.get(pk=tenant_id), instance_id=instance_id)


@app.task(name="studies.archive_sweep", ignore_result=True)
def archive_sweep() -> None:
    for tenant_id in tenants_active().values_list("pk", flat=True):
        archive_sweep_tenant.delay(tenant_id=tenant_id)


@app.task(base=TenantTask, name="studies.archive_sweep_tenant", ignore_result=True)
def archive_sweep_tenant(*, tenant_id: int) -> None:
    for instance_id in instances_awaiting_archive(older_than=timezone.now() - ARCHIVE_SWEEP_AGE)[:5000]:
        archive_instance.delay(tenant_id=tenant_id, instance_id=instance_id)
