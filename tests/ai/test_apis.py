"""The clinic administrators' view of AI analyses: failures listed, retry refused where it cannot apply."""

import pytest

from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis
from tenants.context import tenant_context
from tenants.enums import Role
from tests.ai.conftest import take_tasks
from tests.factories import person, study_row, tenant_row

pytestmark = pytest.mark.django_db


def _analysis(tenant, *, status: str, model: str = "ct_focal_lesion") -> Analysis:
    study = study_row(tenant=tenant, patient_id="P-API", patient_name="Api^Patient")
    with tenant_context(tenant_ids=[tenant.pk]):
        return Analysis.objects.create(
            tenant=tenant,
            study=study,
            study_version=1,
            model_name=model,
            model_version="1.0.0",
            pool="cpu",
            idempotency_key=f"sv-{study.pk}|{model}|1.0.0",
            status=status,
            error="gave up after 4 retries: GET answered 503" if status == AnalysisStatus.FAILED else "",
        )


def test_a_clinic_administrator_sees_the_failed_analyses_of_their_clinic_only(client):
    # Given a failed and a succeeded analysis here, and a failed one at another clinic
    clinic, other = tenant_row(), tenant_row()
    failed = _analysis(clinic, status=AnalysisStatus.FAILED)
    _analysis(clinic, status=AnalysisStatus.SUCCEEDED)
    _analysis(other, status=AnalysisStatus.FAILED)
    client.force_login(person(role=Role.CLINIC_ADMIN, tenant=clinic))
    # When the administrator asks for failures
    response = client.get("/api/v1/ai/analyses/?status=failed")
    # Then only this clinic's failure is listed, with the reason
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["id"] for row in rows] == [str(failed.pk)]
    assert rows[0]["error"].startswith("gave up after 4 retries")
    assert rows[0]["study_instance_uid"] == failed.study.study_instance_uid


def test_an_unknown_status_filter_is_refused_by_name(client):
    clinic = tenant_row()
    client.force_login(person(role=Role.CLINIC_ADMIN, tenant=clinic))
    response = client.get("/api/v1/ai/analyses/?status=exploded")
    assert response.status_code == 400
    assert response.json() == {"status": ["must be one of pending, dispatched, succeeded, failed"]}


def test_clinic_staff_may_not_list_analyses(client):
    clinic = tenant_row()
    _analysis(clinic, status=AnalysisStatus.FAILED)
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=clinic))
    assert client.get("/api/v1/ai/analyses/").status_code == 403


def test_retrying_another_clinics_analysis_is_the_same_404_and_changes_nothing(client):
    clinic, other = tenant_row(), tenant_row()
    theirs = _analysis(other, status=AnalysisStatus.FAILED)
    client.force_login(person(role=Role.CLINIC_ADMIN, tenant=clinic))
    response = client.post(f"/api/v1/ai/analyses/{theirs.pk}/retry/")
    missing = client.post("/api/v1/ai/analyses/00000000-0000-0000-0000-000000000000/retry/")
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()
    with tenant_context(tenant_ids=[other.pk]):
        theirs.refresh_from_db()
    assert theirs.status == AnalysisStatus.FAILED and theirs.attempts == 0


def test_only_a_failed_analysis_can_be_retried(client):
    clinic = tenant_row()
    done = _analysis(clinic, status=AnalysisStatus.SUCCEEDED)
    client.force_login(person(role=Role.CLINIC_ADMIN, tenant=clinic))
    response = client.post(f"/api/v1/ai/analyses/{done.pk}/retry/")
    assert response.status_code == 400
    assert "only a failed analysis can be retried" in response.content.decode()
    with tenant_context(tenant_ids=[clinic.pk]):
        done.refresh_from_db()
    assert done.status == AnalysisStatus.SUCCEEDED


def test_a_retry_answers_at_once_with_the_analysis_pending_and_queues_its_dispatch(
    client, django_capture_on_commit_callbacks
):
    # Given a failed analysis at this clinic
    clinic = tenant_row()
    failed = _analysis(clinic, status=AnalysisStatus.FAILED)
    client.force_login(person(role=Role.CLINIC_ADMIN, tenant=clinic))
    # When the administrator retries it
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/v1/ai/analyses/{failed.pk}/retry/")
    # Then the answer comes without building the input: pending, the error cleared, a dispatch queued after commit
    assert response.status_code == 202
    assert response.json()["status"] == AnalysisStatus.PENDING and response.json()["error"] == ""
    assert take_tasks("ai.dispatch_analysis") == [{"tenant_id": clinic.pk, "analysis_id": str(failed.pk)}]
    with tenant_context(tenant_ids=[clinic.pk]):
        failed.refresh_from_db()
        assert failed.status == AnalysisStatus.PENDING and failed.study.ai_status == "pending"
