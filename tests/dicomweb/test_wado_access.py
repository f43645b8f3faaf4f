"""Who may retrieve: a studies:read token, a patient-data role or a radiologist credential; foreign UIDs are 404s."""

import json

import pytest

from saas.audit.aggregation import audit_aggregates_pending
from tenants.enums import Role, TokenScope
from tests.dicomweb.conftest import index_rows
from tests.factories import api_token, person, tenant_row

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
