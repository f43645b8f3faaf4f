"""Celery tasks of browser uploads: finish a batch off the request; housekeeping of stalled and abandoned batches."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from saas.config.celery import app
from saas.studies.uploads import (
    FINISH_STALLED_AFTER,
    UPLOAD_ABANDONED_AFTER,
    upload_batch_process,
    upload_batches_cleanup,
    upload_batches_requeue_stalled,
)
from tenants.enums import TenantStatus
from tenants.models import Tenant
from tenants.tasks import TenantTask


@app.task(
    base=TenantTask,
    name="studies.upload_finish",
    # Commits file by file, so the page sees the progress and a rerun resumes after the last committed file.
    atomic=False,
    # Acknowledged only once done: a worker killed mid-batch leaves the message to be delivered again, and the
    # housekeeping below queues the batch again sooner than the broker's visibility timeout would.
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=8,
)
def upload_finish(*, tenant_id: int, batch_id: str) -> None:
    upload_batch_process(tenant=Tenant.objects.get(pk=tenant_id), batch_id=batch_id)


@app.task(name="studies.upload_housekeeping", ignore_result=True)
def upload_housekeeping() -> None:
    """Beat: one housekeeping task per clinic (suspended ones too: their abandoned bytes still fill the disk)."""
    for tenant_id in Tenant.objects.values_list("pk", flat=True):
        upload_housekeeping_tenant.delay(tenant_id=tenant_id)


@app.task(base=TenantTask, name="studies.upload_housekeeping_tenant", atomic=False, ignore_result=True)
def upload_housekeeping_tenant(*, tenant_id: int) -> None:
    tenant = Tenant.objects.get(pk=tenant_id)
    now = timezone.now()
    upload_batches_cleanup(tenant=tenant, untouched_since=now - UPLOAD_ABANDONED_AFTER)
    # A suspended clinic's Orthanc may be stopped: its finishing batches wait until it is active again.
    if tenant.status == TenantStatus.ACTIVE:
        upload_batches_requeue_stalled(tenant=tenant, quiet_since=now - FINISH_STALLED_AFTER)
