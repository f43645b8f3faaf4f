"""QIDO-RS study search: tenant and scope checks, the same 404 for another clinic, and a 110112 audit."""

import pytest
import requests

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.enums import Role, TokenScope
from tenants.orthanc import orthanc_endpoint
from tenants.services import credential_grant, tenant_create
from tests.dicomweb.conftest import index_orthanc
from tests.factories import api_token, person, tenant_row

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


@pytest.fixture
def clinic_with_study(unique_slug):
    tenant, _ = tenant_create(slug=unique_slug("qido"), name="Query Clinic")
    endpoint = orthanc_endpoint(tenant)
    series = ct_series(patient_id="QIDO-1", patient_name="Synthetic^Query", accession_number="ACC-Q1", slices=2)
    for dataset in series:
        response = requests.post(
            f"{endpoint.http_url}/instances", data=dataset_bytes(dataset), auth=endpoint.auth, timeout=30
        )
        response.raise_for_status()
    # QIDO-RS answers from the index, which the change-feed sync fills.
    index_orthanc(tenant)
    return tenant, series[0].StudyInstanceUID


def _get(client, slug, raw=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"} if raw else {}
    return client.get(f"/dicomweb/{slug}/studies", params, **headers)


def test_a_read_token_finds_its_clinics_study_and_the_query_is_audited(client, clinic_with_study):
    tenant, study_uid = clinic_with_study
    _, raw = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    response = _get(client, tenant.slug, raw, PatientID="QIDO-1")
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom+json"
    assert [match["0020000D"]["Value"][0] for match in response.json()] == [study_uid]
    with tenant_context(tenant_ids=[tenant.pk]):
        audit = AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.QUERY).get()
    assert audit.study_instance_uids == [study_uid] and audit.token_id is not None


def test_a_write_only_token_is_refused_for_queries(client, clinic_with_study):
    tenant, _ = clinic_with_study
    _, raw = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_WRITE])
    response = _get(client, tenant.slug, raw)
    assert response.status_code == 403 and "studies:read" in response.json()["detail"]


def test_another_clinics_token_gets_the_same_404_as_a_missing_clinic(client, clinic_with_study):
    tenant, _ = clinic_with_study
    _, other_raw = api_token(tenant=tenant_row(), scopes=[TokenScope.STUDIES_READ])
    foreign, missing = _get(client, tenant.slug, other_raw), _get(client, "no-such-clinic", other_raw)
    assert (
        (foreign.status_code, foreign.json())
        == (missing.status_code, missing.json())
        == (404, {"detail": "Not found."})
    )


def test_people_need_a_patient_data_role_in_that_clinic(client, clinic_with_study):
    tenant, study_uid = clinic_with_study
    client.force_login(person(role=Role.BILLING_ADMIN, tenant=tenant))
    assert _get(client, tenant.slug).status_code == 403
    client.force_login(person(role=Role.RADIOLOGIST, tenant=tenant))
    assert [m["0020000D"]["Value"][0] for m in _get(client, tenant.slug).json()] == [study_uid]
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=tenant_row()))
    assert _get(client, tenant.slug).status_code == 404


def test_unknown_parameters_and_bad_limits_are_refused_by_name(client, clinic_with_study):
    tenant, _ = clinic_with_study
    _, raw = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    unknown = _get(client, tenant.slug, raw, PatientsWeight="80")
    bad_limit = _get(client, tenant.slug, raw, limit="100000")
    assert unknown.status_code == 400 and "PatientsWeight" in unknown.json()["detail"]
    assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["detail"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "\u00b2"}, "limit"),  # a digit to str.isdigit, not to int()
        ({"offset": "\u00b2"}, "offset"),
        ({"offset": "99999999999999999999"}, "offset"),  # past what a database OFFSET takes
        ({"PatientName": "Smith\x00"}, "PatientName"),
        ({"AccessionNumber": "\x00"}, "AccessionNumber"),
    ],
)
def test_values_no_query_can_use_are_a_400_naming_the_parameter(client, clinic_with_study, params, named):
    tenant, _ = clinic_with_study
    _, raw = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    response = _get(client, tenant.slug, raw, **params)
    assert response.status_code == 400 and named in response.json()["detail"], response.content


def test_a_radiologist_reading_for_another_clinic_is_audited_in_that_clinics_role(client, clinic_with_study):
    # given a person who is billing administrator of their own (active) clinic and a radiologist for this one
    tenant, study_uid = clinic_with_study
    reader = person(role=Role.BILLING_ADMIN, tenant=tenant_row())
    credential_grant(radiologist=reader, tenant=tenant)
    client.force_login(reader)
    # when they search this clinic's studies
    assert [m["0020000D"]["Value"][0] for m in _get(client, tenant.slug).json()] == [study_uid]
    # then this clinic's audit row names the role they acted in here
    with tenant_context(tenant_ids=[tenant.pk]):
        event = AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.QUERY).latest("id")
    assert (event.actor_username, event.actor_role) == (reader.username, Role.RADIOLOGIST.value)
