"""Archiving a batch at a time: each instance marked only once S3 holds it, failures retried alone, swept once."""

import base64
import hashlib
import json
from datetime import timedelta

import pytest
import redis
import requests
from django.conf import settings
from django.utils import timezone

from saas.studies import tasks
from saas.studies.enums import StudyStatus
from saas.studies.models import Instance, Study
from saas.studies.services import ArchiveError, instances_archive
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.orthanc import orthanc_endpoint
from tenants.provisioning.storage import s3_client
from tests.studies.conftest import stow

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _indexed_study(client, clinic, write_token, pipeline, *, slices=4):
    series = ct_series(patient_id="ARC-1", patient_name="Synthetic^Archive", accession_number="ACC-A1", slices=slices)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in series]).status_code == 200
    pipeline.sync_until_completed(1)
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=series[0].StudyInstanceUID)
        instances = list(Instance.objects.filter(study=study).order_by("pk"))
    return study, instances


def _state(clinic, study):
    with tenant_context(tenant_ids=[clinic.pk]):
        rows = {
            row.pk: (row.archived_at is not None, row.sha256)
            for row in Instance.objects.filter(study=study).only("pk", "archived_at", "sha256")
        }
        return Study.objects.get(pk=study.pk).status, rows


def _queued_archive_batches(clinic) -> list[list[int]]:
    """The clinic's archive tasks waiting in the broker, taken off the queue (no worker runs in these tests)."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    batches = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        if message["headers"].get("task") != "studies.archive_instances":
            continue
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        if kwargs["tenant_id"] == clinic.pk:
            batches.append(sorted(kwargs["instance_ids"]))
            broker.lrem(queue, 1, raw)
    return batches


def test_an_instance_orthanc_no_longer_returns_fails_alone_and_the_rest_of_its_batch_is_archived(
    client, clinic, write_token, pipeline
):
    # given a completed four-slice study, one of whose instances is gone from Orthanc before the archive ran
    study, instances = _indexed_study(client, clinic, write_token, pipeline)
    lost = instances[1]
    endpoint = orthanc_endpoint(clinic)
    requests.delete(
        f"{endpoint.http_url}/instances/{lost.orthanc_instance_id}", auth=endpoint.auth, timeout=10
    ).raise_for_status()
    # when the batch is archived, then the failure is raised for a retry
    with pytest.raises(ArchiveError, match="1 of 4 instances not archived"):
        instances_archive(tenant=clinic, instance_ids=[instance.pk for instance in instances])
    # and the other three are archived with the SHA-256 of the bytes in S3; the lost one is not, nor the study
    status, rows = _state(clinic, study)
    assert status == StudyStatus.COMPLETE
    assert rows[lost.pk] == (False, "")
    s3 = s3_client()
    for instance in instances:
        if instance.pk == lost.pk:
            continue
        body = s3.get_object(Bucket=clinic.s3_bucket, Key=instance.s3_key)["Body"].read()
        assert rows[instance.pk] == (True, hashlib.sha256(body).hexdigest())
    # when the retry runs, it tries the lost one alone (and fails again) and leaves the archived three as they were
    with pytest.raises(ArchiveError, match="1 of 1 instances not archived"):
        instances_archive(tenant=clinic, instance_ids=[instance.pk for instance in instances])
    assert _state(clinic, study) == (status, rows)


def test_a_batch_archived_twice_is_archived_once_and_completes_the_study(client, clinic, write_token, pipeline):
    # given a completed study whose four instances the sync handed to the archive
    study, instances = _indexed_study(client, clinic, write_token, pipeline)
    assert sorted(pipeline.archive_queue) == [instance.pk for instance in instances]
    # when the batch is archived, and then again (a duplicate task)
    first = pipeline.archive_all()
    status, rows = _state(clinic, study)
    again = instances_archive(tenant=clinic, instance_ids=[instance.pk for instance in instances])
    # then all four were archived by the first run, the second had nothing to do, and the study is archived
    assert (first, again) == (4, 0)
    assert status == StudyStatus.ARCHIVED and all(archived for archived, _ in rows.values())
    assert _state(clinic, study) == (status, rows)


def test_the_sweeper_queues_a_lost_batch_once_and_again_only_after_its_claim_lapsed(
    client, clinic, write_token, pipeline
):
    # given four indexed instances whose archive task was lost (never run), received long enough ago
    study, instances = _indexed_study(client, clinic, write_token, pipeline)
    ids = [instance.pk for instance in instances]
    with tenant_context(tenant_ids=[clinic.pk]):
        Instance.objects.filter(pk__in=ids).update(received_at=timezone.now() - timedelta(minutes=5))
    _queued_archive_batches(clinic)
    # when the sweeper runs twice in a row
    tasks.archive_sweep_tenant(tenant_id=clinic.pk)
    tasks.archive_sweep_tenant(tenant_id=clinic.pk)
    # then the four are queued once, in one task
    assert _queued_archive_batches(clinic) == [ids]
    # when that task is lost too (its worker killed) and its claim has lapsed, the sweeper queues them again
    # (the claim is set to have lapsed a second ago rather than waited out)
    tasks._ArchiveClaims.extend(clinic.pk, ids, seconds=-1)
    tasks.archive_sweep_tenant(tenant_id=clinic.pk)
    assert _queued_archive_batches(clinic) == [ids]
    # when the task runs, then the study is archived and the sweeper has nothing left to queue
    tasks.archive_instances.apply(kwargs={"tenant_id": clinic.pk, "instance_ids": ids}, throw=True)
    assert _state(clinic, study)[0] == StudyStatus.ARCHIVED
    tasks._ArchiveClaims.extend(clinic.pk, ids, seconds=-1)
    tasks.archive_sweep_tenant(tenant_id=clinic.pk)
    assert _queued_archive_batches(clinic) == []
