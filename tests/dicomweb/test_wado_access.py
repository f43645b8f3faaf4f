"""Who may retrieve: a studies:read token, a patient-data role or a radiologist credential; foreign UIDs are 404s."""

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from saas.audit.aggregation import FLUSH_GRACE_SECONDS, audit_aggregates_flush, audit_aggregates_pending
from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.dicomweb.selectors import study_cache
from tenants.access import DECISION_CACHE_SECONDS
from tenants.context import tenant_context
from tenants.enums import Role, TokenScope
from tenants.middleware import actor_cache
from tenants.models import ApiToken
from tenants.selectors import token_hash
from tenants.services import api_token_revoke, credential_grant
from tests.dicomweb.conftest import index_rows
from tests.factories import api_token, person, tenant_row
from tests.faults.conftest import wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _answer(response) -> tuple[int, str]:
    return response.status_code, json.dumps(response.json())


def test_another_clinics_uids_get_the_same_404_as_missing_ones_and_nothing_is_audited(client, clinic_with_ct):
    clinic = clinic_with_ct
    frame = f"studies/{clinic.study_uid}/series/{clinic.series_uid}/instances/{clinic.datasets[0].SOPInstanceUID}"
    # a token of another clinic asking for this clinic's study, under either clinic's slug
    other = tenant_row()
    _, other_raw = api_token(tenant=other, scopes=[TokenScope.STUDIES_READ])
    foreign_study = index_rows(other, patient_id="OTHER-1", patient_name="Other^Patient")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {other_raw}"}
    answers = [
        client.get(f"{clinic.base}/{frame}/frames/1", **bearer),
        client.get(f"/dicomweb/{other.slug}/{frame}/frames/1", **bearer),
        client.get(f"/dicomweb/{other.slug}/studies/{clinic.study_uid}/metadata", **bearer),
        client.get(f"/dicomweb/{other.slug}/studies/{clinic.study_uid}/series", **bearer),
        client.get(f"/dicomweb/no-such-clinic/{frame}/frames/1", **bearer),
        # and this clinic's own token asking for the other clinic's study under its own slug
        client.get(f"{clinic.base}/studies/{foreign_study.study_instance_uid}/metadata", **clinic.auth()),
        client.get(f"{clinic.base}/studies/1.2.999/metadata", **clinic.auth()),
    ]
    assert {_answer(response) for response in answers} == {(404, '{"detail": "Not found."}')}
    assert audit_aggregates_pending() == 0


@pytest.mark.parametrize(
    "path",
    [
        "studies/%00/metadata",  # a NUL, which the database refuses to even compare
        "studies/{study}/series/%00/thumbnail",
        "studies/{study}/series/{series}%3F/instances/{sop}",  # "?": would cut the path handed to nginx or Orthanc
        "studies/{study}/series/{series}/instances/{sop}%252F..%252F/frames/1",
        "studies/{study}/series/1..2/metadata",
        "studies/1.2.3.",
        "studies/" + "1" * 65 + "/metadata",
    ],
)
def test_a_uid_that_is_not_a_dicom_uid_is_a_404_before_anything_looks_it_up(client, clinic_with_ct, path):
    clinic = clinic_with_ct
    path = path.format(study=clinic.study_uid, series=clinic.series_uid, sop=clinic.datasets[0].SOPInstanceUID)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{clinic.base}/{path}", **clinic.auth())
    assert response.status_code == 404
    assert not [query for query in queries.captured_queries if "studies_" in query["sql"]]
    assert audit_aggregates_pending() == 0


def test_a_write_only_token_may_not_read(client, clinic_with_ct):
    clinic = clinic_with_ct
    _, write_only = api_token(tenant=clinic.tenant, scopes=[TokenScope.STUDIES_WRITE])
    response = client.get(f"{clinic.instance_path(0)}/frames/1", HTTP_AUTHORIZATION=f"Bearer {write_only}")
    assert response.status_code == 403 and "studies:read" in response.json()["detail"]
    assert audit_aggregates_pending() == 0


def test_people_need_a_patient_data_role_or_a_radiologist_credential(client, clinic_with_ct):
    clinic = clinic_with_ct
    metadata = f"{clinic.base}/studies/{clinic.study_uid}/metadata"
    client.force_login(person(role=Role.BILLING_ADMIN, tenant=clinic.tenant))
    refused = client.get(metadata)
    assert refused.status_code == 403 and "patient data" in refused.json()["detail"]
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=tenant_row()))
    assert client.get(metadata).status_code == 404
    client.logout()
    assert client.get(metadata).status_code in (401, 403)
    assert audit_aggregates_pending() == 0
    # a radiologist credentialed for the clinic, whose active clinic may be another one, reads it
    client.force_login(person(role=Role.RADIOLOGIST, tenant=clinic.tenant))
    assert client.get(metadata).status_code == 200
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=clinic.tenant))
    assert client.get(f"{clinic.instance_path(0)}/frames/1").status_code == 200
    assert audit_aggregates_pending() == 2


@pytest.fixture
def actor_cache_clock(monkeypatch):
    """The actor cache's clock, moved by hand; the cache starts empty."""
    now = [1000.0]
    monkeypatch.setattr(actor_cache, "clock", lambda: now[0])
    actor_cache.clear()
    yield now
    actor_cache.clear()


def test_a_revoked_token_stops_reading_within_the_actor_cache_bound(client, clinic_with_ct, actor_cache_clock):
    clinic = clinic_with_ct
    frame = f"{clinic.instance_path(0)}/frames/1"
    with tenant_context(tenant_ids=[clinic.tenant.pk]):
        token = ApiToken.objects.get(key_hash=token_hash(clinic.token))
    assert client.get(frame, **clinic.auth()).status_code == 200
    # when the clinic revokes the token
    with tenant_context(tenant_ids=[clinic.tenant.pk]):
        api_token_revoke(token=token, actor=None)
    # then everything but a DICOMweb read refuses it at once, and reads stop within the bound
    assert client.get("/api/v1/me/", **clinic.auth()).status_code == 401
    actor_cache_clock[0] += DECISION_CACHE_SECONDS - 0.5
    assert client.get(frame, **clinic.auth()).status_code == 200
    actor_cache_clock[0] += 0.5
    refused = client.get(frame, **clinic.auth())
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert client.get(f"{clinic.base}/studies/{clinic.study_uid}/metadata", **clinic.auth()).status_code == 401


def test_an_expired_token_is_refused_at_once_even_while_cached(client, clinic_with_ct, actor_cache_clock):
    clinic = clinic_with_ct
    token, raw = api_token(tenant=clinic.tenant, expires_in=timedelta(seconds=2))
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    frame = f"{clinic.instance_path(0)}/frames/1"
    assert client.get(frame, **bearer).status_code == 200
    wait_for(lambda: timezone.now() > token.expires_at, timeout=10, interval=0.05, what="the token to expire")
    # the cache's own clock has not moved: the expiry alone refuses it
    assert client.get(frame, **bearer).status_code == 401


def test_an_ended_credential_stops_reading_within_the_bound_and_sign_out_at_once(
    client, clinic_with_ct, actor_cache_clock
):
    clinic = clinic_with_ct
    metadata = f"{clinic.base}/studies/{clinic.study_uid}/metadata"
    radiologist = person(role=Role.RADIOLOGIST, tenant=clinic.tenant)
    client.force_login(radiologist)
    assert client.get(metadata).status_code == 200
    # when the clinic ends the radiologist's credential
    credential_grant(
        radiologist=radiologist,
        tenant=clinic.tenant,
        valid_from=timezone.now() - timedelta(days=1),
        valid_to=timezone.now() - timedelta(seconds=1),
    )
    actor_cache_clock[0] += DECISION_CACHE_SECONDS
    # then the study is the same 404 as any study of a clinic they cannot read
    ended = client.get(metadata)
    assert (ended.status_code, ended.json()) == (404, {"detail": "Not found."})
    # and a person who signs out cannot read even inside the bound: the session is checked every time
    reader = person(role=Role.CLINIC_STAFF, tenant=clinic.tenant)
    client.force_login(reader)
    assert client.get(metadata).status_code == 200
    client.logout()
    assert client.get(metadata).status_code in (401, 403)


def test_a_repeated_read_makes_no_database_round_trip_yet_every_check_and_count_still_runs(
    client, clinic_with_ct, settings
):
    clinic = clinic_with_ct
    frame = f"{clinic.instance_path(0)}/frames/1"
    other = tenant_row()
    _, other_raw = api_token(tenant=other, scopes=[TokenScope.STUDIES_READ])
    assert client.get(frame, **clinic.auth()).status_code == 200
    # when the same reader asks again within the bound
    with CaptureQueriesContext(connection) as queries:
        again = client.get(frame, **clinic.auth())
        b"".join(again.streaming_content)
    # then nothing touched the database
    assert again.status_code == 200 and len(queries) == 0, [query["sql"] for query in queries]
    # and another clinic's token still gets the same 404, under either slug, though the study's lookup is cached
    foreign = [
        client.get(frame, HTTP_AUTHORIZATION=f"Bearer {other_raw}"),
        client.get(
            frame.replace(f"/{clinic.tenant.slug}/", f"/{other.slug}/"), HTTP_AUTHORIZATION=f"Bearer {other_raw}"
        ),
    ]
    assert {_answer(response) for response in foreign} == {(404, '{"detail": "Not found."}')}
    # a UID the index does not hold is looked up again next time, never remembered as missing
    assert client.get(f"{clinic.base}/studies/1.2.999/metadata", **clinic.auth()).status_code == 404
    assert study_cache.get((clinic.tenant.pk, "1.2.999")) is None
    # and both reads were counted for the audit log
    audit_aggregates_flush(now=time.time() + settings.READROOM_AUDIT_WINDOW_SECONDS + FLUSH_GRACE_SECONDS + 1)
    with tenant_context(tenant_ids=[clinic.tenant.pk]):
        [row] = AuditEvent.objects.filter(tenant_id=clinic.tenant.pk, event_id=AuditEventId.INSTANCES_ACCESSED)
    assert row.detail["counts"] == {"frames": 2} and row.detail["requests"] == 2
