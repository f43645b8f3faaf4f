"""The change feed indexed a batch at a time: counters from the rows, a replayed feed counts nothing twice."""

import base64
import json
from datetime import timedelta

import pytest
import redis
import requests
from django.conf import settings
from django.utils import timezone
from pydicom.uid import generate_uid

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.models import Instance, Series, Study, StudyCompletion, SyncCursor
from saas.studies.orthanc import orthanc_store
from saas.studies.synthetic import ct_series, dataset_bytes
from saas.studies.tasks import completion_sweep_tenant
from tenants.context import tenant_context
from tenants.orthanc import orthanc_endpoint
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


def test_numbers_beyond_an_integer_string_and_a_nul_in_a_text_do_not_stop_the_tenants_feed(
    client, clinic, write_token, pipeline
):
    # given a non-conformant sender's slice: InstanceNumber and SeriesNumber beyond 32 bits, a NUL in its description
    odd, plain = ct_series(patient_id="ODD-1", patient_name="Synthetic^Odd", accession_number="ACC-ODD", slices=2)
    odd.InstanceNumber, odd.SeriesNumber = "3000000000", "-99999999999"
    odd.StudyDescription = "CT\x00ABDOMEN"
    assert stow(client, clinic.slug, write_token, [dataset_bytes(odd)]).status_code == 200
    # when the feed is indexed, then the slice is indexed without those numbers
    assert pipeline.sync().indexed == 1
    with tenant_context(tenant_ids=[clinic.pk]):
        instance = Instance.objects.select_related("series", "study").get(sop_instance_uid=odd.SOPInstanceUID)
    assert (instance.instance_number, instance.series.series_number) == (None, None)
    assert "\x00" not in instance.study.study_description
    # and what comes after it in the feed is indexed too
    plain.SeriesInstanceUID = odd.SeriesInstanceUID
    assert stow(client, clinic.slug, write_token, [dataset_bytes(plain)]).status_code == 200
    assert pipeline.sync().indexed == 1


def _orthanc_has(clinic, orthanc_instance_id: str) -> bool:
    endpoint = orthanc_endpoint(clinic)
    answer = requests.get(f"{endpoint.http_url}/instances/{orthanc_instance_id}", auth=endpoint.auth, timeout=10)
    return answer.status_code == 200


def test_copies_that_reuse_an_indexed_instance_uid_elsewhere_are_removed_from_orthanc_and_audited(
    client, clinic, write_token, pipeline
):
    # given a slice stored by STOW-RS and indexed
    first, later = ct_series(patient_id="DUP-1", patient_name="Synthetic^Dup", accession_number="ACC-DUP", slices=2)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(first)]).status_code == 200
    pipeline.sync()
    # when copies reusing its UID under two other studies reach Orthanc without the ingest check (as by C-STORE),
    # then the slice after them
    copies = ct_series(patient_id="DUP-2", patient_name="Synthetic^Dup", accession_number="ACC-DUP2", slices=2)
    for copy in copies:
        copy.StudyInstanceUID = generate_uid()
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    copy_ids = [orthanc_store(clinic, dataset_bytes(copy))[0] for copy in copies]
    assert all(_orthanc_has(clinic, orthanc_id) for orthanc_id in copy_ids)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(later)]).status_code == 200
    outcome = pipeline.sync()
    # then the copies are gone from Orthanc, each removal audited with the reason, the first slice untouched
    assert outcome.indexed == 1
    assert not any(_orthanc_has(clinic, orthanc_id) for orthanc_id in copy_ids)
    with tenant_context(tenant_ids=[clinic.pk]):
        instance = Instance.objects.select_related("study").get(sop_instance_uid=first.SOPInstanceUID)
        removals = AuditEvent.objects.filter(tenant_id=clinic.pk, event_id=AuditEventId.STUDY_DELETED)
        reasons = [event.detail["reason"] for event in removals]
    assert instance.study.study_instance_uid == first.StudyInstanceUID and _orthanc_has(
        clinic, instance.orthanc_instance_id
    )
    assert reasons == ["SOP Instance UID already stored in another study or series"] * 2
    # and the slice that came after them is indexed into the first slice's study
    assert instance.study.instance_count == 2


def test_a_copy_filed_under_another_studys_series_uid_is_removed_from_orthanc_and_audited(
    client, clinic, write_token, pipeline
):
    # given a slice stored by STOW-RS and indexed
    (first,) = ct_series(patient_id="SER-1", patient_name="Synthetic^Series", accession_number="ACC-SER", slices=1)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(first)]).status_code == 200
    pipeline.sync()
    # when a slice of another study reusing its Series Instance UID reaches Orthanc without the ingest check
    (stray,) = ct_series(patient_id="SER-2", patient_name="Synthetic^Series", accession_number="ACC-SER2", slices=1)
    stray.SeriesInstanceUID = first.SeriesInstanceUID
    stray_id, _ = orthanc_store(clinic, dataset_bytes(stray))
    outcome = pipeline.sync()
    # then it is removed from Orthanc with its reason audited, and the first study's series still holds one slice
    assert outcome.indexed == 0 and not _orthanc_has(clinic, stray_id)
    with tenant_context(tenant_ids=[clinic.pk]):
        series = Series.objects.select_related("study").get(series_instance_uid=first.SeriesInstanceUID)
        reasons = [
            event.detail["reason"]
            for event in AuditEvent.objects.filter(tenant_id=clinic.pk, event_id=AuditEventId.STUDY_DELETED)
        ]
        assert not Instance.objects.filter(sop_instance_uid=stray.SOPInstanceUID).exists()
    assert (series.study.study_instance_uid, series.instance_count) == (first.StudyInstanceUID, 1)
    assert reasons == ["Series Instance UID already stored in another study"]


def test_in_one_batch_the_indexed_copy_wins_over_a_conflicting_copy_that_came_first(
    client, clinic, write_token, pipeline
):
    # given an indexed slice that left Orthanc (as by eviction)
    (first,) = ct_series(patient_id="DUP-3", patient_name="Synthetic^Dup", accession_number="ACC-DUP3", slices=1)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(first)]).status_code == 200
    pipeline.sync()
    with tenant_context(tenant_ids=[clinic.pk]):
        original_id = Instance.objects.get(sop_instance_uid=first.SOPInstanceUID).orthanc_instance_id
    endpoint = orthanc_endpoint(clinic)
    requests.delete(f"{endpoint.http_url}/instances/{original_id}", auth=endpoint.auth, timeout=10).raise_for_status()
    # when a copy under another study arrives, and then the slice itself comes back (as a rehydration brings it)
    (stray,) = ct_series(patient_id="DUP-3", patient_name="Synthetic^Dup", accession_number="ACC-DUP4", slices=1)
    stray.SOPInstanceUID = stray.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    stray_id, _ = orthanc_store(clinic, dataset_bytes(stray))
    assert orthanc_store(clinic, dataset_bytes(first))[0] == original_id
    pipeline.sync()
    # then the stray copy is removed and the slice the index holds stays in Orthanc, pointed at
    assert not _orthanc_has(clinic, stray_id) and _orthanc_has(clinic, original_id)
    with tenant_context(tenant_ids=[clinic.pk]):
        assert Instance.objects.get(sop_instance_uid=first.SOPInstanceUID).orthanc_instance_id == original_id
