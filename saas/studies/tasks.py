"""Celery tasks of the studies domain: follow each Orthanc's change feed, archive, sweep."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta

import redis
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from saas.config.celery import app
from saas.studies.events import study_completed
from saas.studies.orthanc import OrthancError
from saas.studies.services import (
    ArchiveError,
    completion_announced,
    completions_unannounced,
    instances_archive,
    instances_awaiting_archive,
    orthanc_sync,
)
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.selectors import tenants_active
from tenants.tasks import TenantTask

logger = logging.getLogger(__name__)

# One archive task per series and at most this many instances: few enough messages and transactions
# for a 2,000-slice study, small enough that both worker processes share a study's uploads.
ARCHIVE_BATCH = 50
# After a sync indexed new instances, the next one comes this long past the tenant's StableAge.
STABLE_CHECK_S = 1.5
# Instances not archived this long after arrival are picked up again by the sweeper (S3 outage,
# a lost task), unless an archive task still holds a claim on them (see _ArchiveClaims).
ARCHIVE_SWEEP_AGE = timedelta(seconds=30)
# How long a claim outlives its last sign of life (queued, started, retry scheduled). A task killed with
# its worker is queued again by the next sweep after that (within 75 s with beat's 30 s sweep); a batch
# still waiting in a longer backlog may be queued twice, which costs little: archived instances are skipped.
ARCHIVE_CLAIM_SECONDS = 45
ARCHIVE_SWEEP_LIMIT = 5000
# A completion is sent right after its commit; one still unsent this long after is handed on by the sweep.
COMPLETION_ANNOUNCE_GRACE = timedelta(seconds=60)
ARCHIVE_RETRY_BACKOFF_MAX = 60
ARCHIVE_MAX_RETRIES = 10


class _ArchiveClaims:
    """Which instances an archive task is queued, running or waiting to retry for, per tenant, in the broker's Redis.

    A sorted set per tenant: instance id -> the moment the claim lapses. The sweeper queues only
    unclaimed instances, so a backlog is never queued twice; a claim lapses on its own when its task
    died with a killed worker (the broker would only give that message back after its visibility
    timeout, an hour). Losing the claims costs duplicate uploads at most: archiving is idempotent.
    """

    _clients: dict[tuple[int, str], redis.Redis] = {}
    _lock = threading.Lock()

    @classmethod
    def _client(cls) -> redis.Redis:
        url = settings.CELERY_BROKER_URL
        key = (os.getpid(), url)
        with cls._lock:
            client = cls._clients.get(key)
            if client is None:
                client = cls._clients[key] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return client

    @staticmethod
    def _key(tenant_id: int) -> str:
        # The database name keeps two deployments (or test databases) on one Redis apart.
        return f"readroom:archive-claims:{settings.DATABASES['default']['NAME']}:{tenant_id}"

    @classmethod
    def extend(cls, tenant_id: int, instance_ids: Iterable[int], *, seconds: float) -> None:
        mapping = {str(instance_id): time.time() + seconds for instance_id in instance_ids}
        if mapping:
            pipeline = cls._client().pipeline()
            pipeline.zadd(cls._key(tenant_id), mapping)
            # The set itself goes away with a tenant that stopped receiving.
            pipeline.expire(cls._key(tenant_id), int(seconds) + 86400)
            pipeline.execute()

    @classmethod
    def release(cls, tenant_id: int, instance_ids: Iterable[int]) -> None:
        members = [str(instance_id) for instance_id in instance_ids]
        if members:
            cls._client().zrem(cls._key(tenant_id), *members)

    @classmethod
    def unclaimed(cls, tenant_id: int, instance_ids: Sequence[int]) -> list[int]:
        if not instance_ids:
            return []
        client = cls._client()
        client.zremrangebyscore(cls._key(tenant_id), "-inf", time.time())
        scores = client.zmscore(cls._key(tenant_id), [str(instance_id) for instance_id in instance_ids])
        return [instance_id for instance_id, score in zip(instance_ids, scores, strict=True) if score is None]


def _archive_enqueue(tenant_id: int, instance_ids: Sequence[int]) -> None:
    for start in range(0, len(instance_ids), ARCHIVE_BATCH):
        batch = list(instance_ids[start : start + ARCHIVE_BATCH])
        # Claimed before it is sent: the sweeper must never see a queued batch as unclaimed.
        _ArchiveClaims.extend(tenant_id, batch, seconds=ARCHIVE_CLAIM_SECONDS)
        archive_instances.delay(tenant_id=tenant_id, instance_ids=batch)


def _on_indexed(instances) -> None:
    """A sync batch committed: archive its new instances, one task per series (and ARCHIVE_BATCH)."""
    by_series: dict[tuple[int, int], list[int]] = {}
    for instance in instances:
        by_series.setdefault((instance.tenant_id, instance.series_id), []).append(instance.pk)
    for (tenant_id, _), instance_ids in by_series.items():
        _archive_enqueue(tenant_id, instance_ids)


def _for_each_active_tenant(task) -> None:
    """Beat's fan-out: one message of `task` per active tenant."""
    for tenant_id in tenants_active().values_list("pk", flat=True):
        task.delay(tenant_id=tenant_id)


def _on_completed(study, completion) -> None:
    study_completed(tenant_id=study.tenant_id, study_id=study.pk, version=completion.version)
    with tenant_context(tenant_ids=[study.tenant_id]):
        completion_announced(completion=completion)


@app.task(name="studies.sync_all", ignore_result=True)
def sync_all() -> None:
    """Beat: one sync per active tenant (a tenant already being synced is skipped by its lock)."""
    _for_each_active_tenant(sync_tenant)


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
    outcome = orthanc_sync(tenant=tenant, on_archive=_on_indexed, on_completed=_on_completed)
    if outcome is not None and outcome.indexed:
        # Orthanc reports a study stable StableAge after its last instance (checked about once a
        # second): look again then rather than at beat's next tick, which adds up to its period.
        sync_tenant.apply_async(kwargs={"tenant_id": tenant_id}, countdown=tenant.stable_age_seconds + STABLE_CHECK_S)


@app.task(
    base=TenantTask,
    name="studies.archive_instances",
    # The service commits what S3 confirmed before it raises for the rest: no enclosing transaction.
    atomic=False,
    bind=True,
    ignore_result=True,
    max_retries=ARCHIVE_MAX_RETRIES,
)
def archive_instances(self, *, tenant_id: int, instance_ids: list[int]) -> None:
    _ArchiveClaims.extend(tenant_id, instance_ids, seconds=ARCHIVE_CLAIM_SECONDS)
    try:
        instances_archive(tenant=Tenant.objects.get(pk=tenant_id), instance_ids=instance_ids)
    except (ArchiveError, OrthancError, OperationalError) as error:
        # OperationalError: the marking lost a deadlock to a sync locking the same studies in another order
        # (PostgreSQL picked it), or the database went away; the uploads S3 confirmed are redone cheaply.
        countdown = min(2 ** (self.request.retries + 1), ARCHIVE_RETRY_BACKOFF_MAX)
        # Still claimed while the retry waits, so that the sweeper does not queue the batch a second time.
        _ArchiveClaims.extend(tenant_id, instance_ids, seconds=countdown + ARCHIVE_CLAIM_SECONDS)
        raise self.retry(exc=error, countdown=countdown) from error
    _ArchiveClaims.release(tenant_id, instance_ids)


@app.task(name="studies.completion_sweep", ignore_result=True)
def completion_sweep() -> None:
    _for_each_active_tenant(completion_sweep_tenant)


@app.task(base=TenantTask, name="studies.completion_sweep_tenant", ignore_result=True)
def completion_sweep_tenant(*, tenant_id: int) -> None:
    """Hand on again each study_completed event that a killed worker or a broker outage lost after its commit.

    The tasks it starts are idempotent per study version (AI dispatch sends an input once per model version),
    so an event sent twice (a worker killed between sending and marking) costs nothing.
    """
    for completion in completions_unannounced(older_than=timezone.now() - COMPLETION_ANNOUNCE_GRACE):
        logger.warning(
            "tenant %s: study_completed for study %s version %s was not sent; sending it now",
            tenant_id,
            completion.study_id,
            completion.version,
        )
        _on_completed(completion.study, completion)


@app.task(name="studies.archive_sweep", ignore_result=True)
def archive_sweep() -> None:
    _for_each_active_tenant(archive_sweep_tenant)


@app.task(base=TenantTask, name="studies.archive_sweep_tenant", ignore_result=True)
def archive_sweep_tenant(*, tenant_id: int) -> None:
    waiting = list(instances_awaiting_archive(older_than=timezone.now() - ARCHIVE_SWEEP_AGE)[:ARCHIVE_SWEEP_LIMIT])
    _archive_enqueue(tenant_id, _ArchiveClaims.unclaimed(tenant_id, waiting))
