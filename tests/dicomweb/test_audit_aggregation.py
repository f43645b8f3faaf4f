"""Audit of DICOMweb reads: counted in Redis per actor, study, event and window; one row per window; written once."""

import time

import pytest
import redis

from saas.audit import aggregation
from saas.audit.aggregation import (
    CLAIM_LEASE_SECONDS,
    FLUSH_GRACE_SECONDS,
    audit_aggregate_add,
    audit_aggregates_flush,
    audit_aggregates_pending,
)
from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.models import AuditEvent
from saas.audit.tasks import flush_aggregates
from tenants.context import tenant_context
from tenants.selectors import actor_for_token
from tests.factories import api_token, tenant_row

pytestmark = [pytest.mark.django_db]


def _events(tenant, event_id=AuditEventId.INSTANCES_ACCESSED):
    with tenant_context(tenant_ids=[tenant.pk]):
        return list(AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=event_id).order_by("seq"))


def _after_window(settings) -> float:
    return time.time() + settings.READROOM_AUDIT_WINDOW_SECONDS + FLUSH_GRACE_SECONDS + 1


@pytest.mark.orthanc
def test_many_frame_requests_become_one_audit_row_per_window_after_the_flush(client, clinic_with_ct, settings):
    clinic = clinic_with_ct
    # given a reader scrolling through the series, frame by frame, plus its metadata
    for index in range(3):
        for _ in range(5):
            response = client.get(f"{clinic.instance_path(index)}/frames/1", **clinic.auth())
            assert response.status_code == 200
            b"".join(response.streaming_content)
    client.get(f"{clinic.base}/studies/{clinic.study_uid}/series", **clinic.auth())
    # then nothing reached the audit log on the request path
    assert _events(clinic.tenant) == [] and audit_aggregates_pending() == 2
    # when beat's flush runs after the window closed
    outcome = audit_aggregates_flush(now=_after_window(settings))
    # then one retrieval row and one query row carry the counts
    assert (outcome.written, outcome.failed) == (2, 0)
    [retrieval] = _events(clinic.tenant)
    [query] = _events(clinic.tenant, AuditEventId.QUERY)
    assert retrieval.action == AuditAction.READ and query.action == AuditAction.EXECUTE
    assert retrieval.study_instance_uids == [clinic.study_uid] and retrieval.patient_ids == ["WADO-1"]
    assert retrieval.token_id is not None and retrieval.actor_username.startswith("token:")
    assert retrieval.detail["requests"] == 15 and retrieval.detail["counts"] == {"frames": 15}
    assert retrieval.detail["window_seconds"] == settings.READROOM_AUDIT_WINDOW_SECONDS
    assert query.detail["counts"] == {"qido_series": 1}
    assert audit_aggregates_pending() == 0


def test_each_window_and_each_actor_is_its_own_row(settings):
    tenant = tenant_row()
    first_token, _ = api_token(tenant=tenant)
    second_token, _ = api_token(tenant=tenant)
    first, second = actor_for_token(token=first_token), actor_for_token(token=second_token)
    window = settings.READROOM_AUDIT_WINDOW_SECONDS
    start = (time.time() // window - 10) * window
    for actor, now in ((first, start + 1), (first, start + 2), (first, start + window + 1), (second, start + 3)):
        audit_aggregate_add(
            event_id=AuditEventId.INSTANCES_ACCESSED,
            tenant_id=tenant.pk,
            actor=actor,
            study_instance_uid="1.2.3",
            patient_id="P-1",
            counts={"frames": 2},
            now=now,
        )
    assert audit_aggregates_flush().written == 3
    rows = sorted((row.token_id, row.detail["counts"]["frames"], row.detail["requests"]) for row in _events(tenant))
    assert rows == sorted([(first_token.pk, 4, 2), (first_token.pk, 2, 1), (second_token.pk, 2, 1)])


def test_an_open_window_waits_and_a_second_flush_writes_nothing(settings):
    tenant = tenant_row()
    token, _ = api_token(tenant=tenant)
    audit_aggregate_add(
        event_id=AuditEventId.INSTANCES_ACCESSED,
        tenant_id=tenant.pk,
        actor=actor_for_token(token=token),
        study_instance_uid="1.2.3",
        patient_id="P-1",
        counts={"frames": 1},
    )
    assert audit_aggregates_flush().claimed == 0 and _events(tenant) == []
    assert flush_aggregates() == {"claimed": 0, "written": 0, "failed": 0}
    assert audit_aggregates_flush(now=_after_window(settings)).written == 1
    assert audit_aggregates_flush(now=_after_window(settings)).claimed == 0
    assert len(_events(tenant)) == 1


def test_a_flush_that_dies_after_writing_is_finished_by_the_next_without_a_second_row(settings, monkeypatch):
    tenant = tenant_row()
    token, _ = api_token(tenant=tenant)
    audit_aggregate_add(
        event_id=AuditEventId.INSTANCES_ACCESSED,
        tenant_id=tenant.pk,
        actor=actor_for_token(token=token),
        study_instance_uid="1.2.3",
        patient_id="P-1",
        counts={"frames": 7},
    )
    # given a flusher that wrote the row and died before removing the claimed counts from Redis
    with monkeypatch.context() as patch:

        def die(*_keys):
            raise redis.ConnectionError("killed")

        patch.setattr(redis.Redis, "delete", die)
        with pytest.raises(redis.ConnectionError):
            audit_aggregates_flush(now=_after_window(settings))
    assert len(_events(tenant)) == 1 and audit_aggregates_pending() == 1
    # when another flush runs before the lease ran out, it leaves the claim alone
    assert audit_aggregates_flush(now=_after_window(settings)).claimed == 0
    # and once the lease expired it finishes the job, finding the row by its aggregate id
    outcome = audit_aggregates_flush(now=_after_window(settings) + CLAIM_LEASE_SECONDS + 1)
    assert (outcome.claimed, outcome.written, outcome.already_written) == (1, 0, 1)
    [row] = _events(tenant)
    assert row.detail["counts"] == {"frames": 7} and audit_aggregates_pending() == 0


@pytest.mark.orthanc
def test_when_redis_is_down_each_access_is_written_at_once(client, clinic_with_ct, settings):
    clinic = clinic_with_ct
    settings.READROOM_AUDIT_REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get(f"{clinic.instance_path(0)}/frames/1", **clinic.auth())
    assert response.status_code == 200
    [row] = _events(clinic.tenant)
    assert row.detail["counts"] == {"frames": 1} and row.study_instance_uids == [clinic.study_uid]


def test_the_process_flushes_what_it_counted_when_it_exits(settings):
    tenant = tenant_row()
    token, _ = api_token(tenant=tenant)
    audit_aggregate_add(
        event_id=AuditEventId.QUERY,
        tenant_id=tenant.pk,
        actor=actor_for_token(token=token),
        study_instance_uid="1.2.3",
        patient_id="P-1",
        counts={"qido_series": 1},
    )
    aggregation._flush_at_exit()
    assert len(_events(tenant, AuditEventId.QUERY)) == 1 and audit_aggregates_pending() == 0
