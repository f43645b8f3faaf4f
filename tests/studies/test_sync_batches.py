"""The change feed indexed a batch at a time: counters from the rows, a replayed feed counts nothing twice."""

import base64
import json
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from pydicom.uid import generate_uid

from saas.studies.models import Instance, Series, Study, StudyCompletion, SyncCursor
from saas.studies.synthetic import ct_series, dataset_bytes
from saas.studies.tasks import completion_sweep_tenant
from tenants.context import tenant_context
from tests.studies.conftest import stow

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _two_series_study():
    study_instance_uid = generate_uid()
    common = {"patient_id": "BAT-1", "patient_name": "Synthetic^Batch", "accession_number": "ACC-B1"}
    chest = ct_series(
        **common, study_instance_uid=study_instance_uid, series_number=1, body_part="CHEST", slices=3, seed=1
    )
    abdomen = ct_series(
        **common, study_instance_uid=study_instance_uid, series_number=2, body_part="ABDOMEN", slices=2, seed=2
    )
    return study_instance_uid, chest, abdomen


def _counts(clinic, study_instance_uid):
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=study_instance_uid)
        series = dict(Series.objects.filter(study=study).values_list("series_instance_uid", "instance_count"))
        rows = Instance.objects.filter(study=study).count()
    return (study.instance_count, study.series_count, sorted(study.body_parts), series, rows)


def test_a_study_of_two_series_is_indexed_in_one_batch_with_its_counts(client, clinic, write_token, pipeline):
    # given a study of two series (3 + 2 slices) sent in one STOW-RS request
    study_instance_uid, chest, abdomen = _two_series_study()
    response = stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in chest + abdomen])
    assert response.status_code == 200, response.content
    # when the change feed is indexed once
    outcome = pipeline.sync()
    # then all five instances are new to the index, each series and the study count them once
    assert outcome.indexed == 5
    assert _counts(clinic, study_instance_uid) == (
        5,
        2,
        ["ABDOMEN", "CHEST"],
        {chest[0].SeriesInstanceUID: 3, abdomen[0].SeriesInstanceUID: 2},
        5,
    )
    # and every new instance was handed to the archive once
    with tenant_context(tenant_ids=[clinic.pk]):
        indexed_ids = sorted(
            Instance.objects.filter(study__study_instance_uid=study_instance_uid).values_list("pk", flat=True)
        )
    assert sorted(pipeline.archive_queue) == indexed_ids


def test_a_feed_replayed_from_the_start_indexes_and_counts_nothing_twice(client, clinic, write_token, pipeline):
    # given the two-series study indexed, then two more slices of it indexed in a later batch
    study_instance_uid, chest, abdomen = _two_series_study()
    stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in chest[:2] + abdomen])
    pipeline.sync()
    stow(client, clinic.slug, write_token, [dataset_bytes(chest[2])])
    pipeline.sync()
    before = _counts(clinic, study_instance_uid)
    queued = list(pipeline.archive_queue)
    # when a crash left the cursor at the start of the feed and the whole feed is indexed again
    with tenant_context(tenant_ids=[clinic.pk]):
        SyncCursor.objects.filter(tenant=clinic).update(last_change=0)
    outcome = pipeline.sync()
    # then the replay read every change but indexed nothing new, counted nothing again, archived nothing again
    assert outcome.changes > 0 and outcome.indexed == 0
    assert before[0] == 5 and _counts(clinic, study_instance_uid) == before
    assert pipeline.archive_queue == queued


def test_a_change_log_that_restarted_below_the_cursor_is_read_from_its_start(client, clinic, write_token, pipeline):
    # given a cursor far past what Orthanc's change log holds (its database was created anew, e.g. restored)
    study_instance_uid, chest, abdomen = _two_series_study()
    with tenant_context(tenant_ids=[clinic.pk]):
        SyncCursor.objects.update_or_create(tenant=clinic, defaults={"last_change": 10**9})
    stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in chest + abdomen])
    # when the feed is followed, then nothing Orthanc holds is skipped
    pipeline.sync()
    assert _counts(clinic, study_instance_uid)[0] == 5
    with tenant_context(tenant_ids=[clinic.pk]):
        assert SyncCursor.objects.get(tenant=clinic).last_change < 10**9


def test_a_completion_whose_event_was_lost_after_its_commit_is_sent_by_the_sweep(client, clinic, write_token, pipeline):
    # given a completed study whose study_completed event never reached the broker (the worker was killed
    # between the sync's commit and the sending): the pipeline here records completions without sending
    series = ct_series(patient_id="OUT-1", patient_name="Synthetic^Outbox", accession_number="ACC-O1", slices=2)
    stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in series])
    pipeline.sync_until_completed(1)
    with tenant_context(tenant_ids=[clinic.pk]):
        completion = StudyCompletion.objects.get(study__study_instance_uid=series[0].StudyInstanceUID)
    assert completion.announced_at is None
    # when beat's sweep runs after the grace period
    with tenant_context(tenant_ids=[clinic.pk]):
        StudyCompletion.objects.filter(pk=completion.pk).update(completed_at=timezone.now() - timedelta(minutes=5))
    completion_sweep_tenant.apply(kwargs={"tenant_id": clinic.pk}).get()
    # then the event is on the broker for the study's version, and the completion is marked as sent, once
    sent = _take_queued("ai.dispatch_study", study_id=completion.study_id)
    assert [message["version"] for message in sent] == [completion.version]
    with tenant_context(tenant_ids=[clinic.pk]):
        assert StudyCompletion.objects.get(pk=completion.pk).announced_at is not None
    completion_sweep_tenant.apply(kwargs={"tenant_id": clinic.pk}).get()
    assert _take_queued("ai.dispatch_study", study_id=completion.study_id) == []


def _take_queued(task: str, **match) -> list[dict]:
    """Remove this task's queued messages whose keyword arguments match from the test broker; their kwargs."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    taken = []
    try:
        for raw in broker.lrange("django", 0, -1):
            message = json.loads(raw)
            if message["headers"]["task"] != task:
                continue
            _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            if all(kwargs.get(name) == value for name, value in match.items()):
                broker.lrem("django", 1, raw)
                taken.append(kwargs)
    finally:
        broker.close()
    return taken
