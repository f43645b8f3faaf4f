"""The clinic portal's study list: own clinic only (a radiologist: credentialed clinics), search, counts, pages."""

import pytest

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.enums import StudyStatus
from tenants.context import tenant_context
from tenants.enums import Role
from tenants.services import credential_grant
from tests.factories import person, study_row, tenant_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_clinics():
    north, south = tenant_row(name="North Clinic"), tenant_row(name="South Clinic")
    study_row(
        tenant=north, patient_id="N-1", patient_name="Alpha^Ann", study_date="20260110", accession_number="ACC-N1"
    )
    study_row(
        tenant=north, patient_id="N-2", patient_name="Beta^Bob", study_date="20260220", status=StudyStatus.COMPLETE
    )
    study_row(tenant=south, patient_id="S-1", patient_name="Gamma^Gil", study_date="20260115")
    return north, south


def _patients(response):
    return [study.patient.patient_id for study in response.context["studies"]]


def test_clinic_staff_see_only_their_clinics_studies_with_counts(client, two_clinics):
    north, _ = two_clinics
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=north))
    response = client.get("/studies/")
    assert response.status_code == 200
    assert sorted(_patients(response)) == ["N-1", "N-2"]
    assert response.context["counts"] == {"receiving": 1, "complete": 1, "archived": 0}
    assert "Gamma" not in response.content.decode()


def test_a_radiologist_sees_every_credentialed_clinic(client, two_clinics):
    north, south = two_clinics
    radiologist = person(role=Role.RADIOLOGIST, tenant=north)
    credential_grant(radiologist=radiologist, tenant=south)
    client.force_login(radiologist)
    response = client.get("/studies/")
    assert sorted(_patients(response)) == ["N-1", "N-2", "S-1"]
    assert "South Clinic" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "alpha"}, ["N-1"]),
        ({"q": "N-2"}, ["N-2"]),
        ({"accession": "acc-n1"}, ["N-1"]),
        ({"from": "2026-02-01"}, ["N-2"]),
        ({"to": "2026-01-31"}, ["N-1"]),
        ({"status": "complete"}, ["N-2"]),
    ],
)
def test_search_by_name_id_accession_dates_and_status(client, two_clinics, query, expected):
    north, _ = two_clinics
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=north))
    assert _patients(client.get("/studies/", query)) == expected


def test_a_bad_date_is_refused_with_the_expected_format(client, two_clinics):
    north, _ = two_clinics
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=north))
    response = client.get("/studies/", {"from": "31/01/2026"})
    assert response.status_code == 400
    assert "Use a date like 2026-01-31." in response.content.decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"q": "Doe\x00"}, "Remove the NUL character from the search."),
        ({"accession": "\x00"}, "Remove the NUL character from the search."),
        ({"from": "2026-03-01", "to": "2026-02-01"}, "The end of the date range comes before its start."),
        ({"to": "0999-12-31"}, "Use a date from 1900 on, like 2026-01-31."),
    ],
)
def test_searches_no_study_can_match_are_a_400_that_says_why(client, two_clinics, query, message):
    north, _ = two_clinics
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=north))
    response = client.get("/studies/", query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_pages_of_25(client):
    clinic = tenant_row()
    for number in range(30):
        study_row(tenant=clinic, patient_id=f"P-{number:02d}", patient_name="Many^Studies")
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=clinic))
    first, second = client.get("/studies/"), client.get("/studies/", {"page": 2})
    assert (len(_patients(first)), len(_patients(second))) == (25, 5)


def test_billing_administrators_see_no_patient_data(client, two_clinics):
    north, _ = two_clinics
    client.force_login(person(role=Role.BILLING_ADMIN, tenant=north))
    assert client.get("/studies/").status_code == 403


def test_the_list_is_audited_as_a_query_naming_the_patients_shown(client, two_clinics):
    north, _ = two_clinics
    user = person(role=Role.CLINIC_STAFF, tenant=north)
    client.force_login(user)
    client.get("/studies/")
    with tenant_context(tenant_ids=[north.pk]):
        event = AuditEvent.objects.get(tenant_id=north.pk, event_id=AuditEventId.QUERY, actor_id=user.pk)
    assert event.patient_ids == ["N-1", "N-2"]
