"""The viewer's findings list, /viewer/<slug>/<StudyInstanceUID>/findings.json: checked like the page, audited."""

from __future__ import annotations

import pytest

from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis, Finding
from saas.ai.selectors import study_findings
from saas.audit.aggregation import audit_aggregates_pending
from tenants.context import tenant_context
from tenants.enums import Role
from tests.dicomweb.conftest import audit_namespace  # noqa: F401  (a private Redis namespace per test)
from tests.factories import person, study_row, tenant_row

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_namespace")]


def _analysis(study, *, model: str, label: str, confidence: float, critical=False, status=AnalysisStatus.SUCCEEDED):
    with tenant_context(tenant_ids=[study.tenant_id]):
        analysis = Analysis.objects.create(
            tenant_id=study.tenant_id,
            study=study,
            study_version=study.version,
            model_name=model,
            model_version="1.0.0",
            pool="cpu",
            idempotency_key=f"{study.study_instance_uid}|{model}|{label}",
            series_instance_uid="1.2.3.4",
            status=status,
            seg_sop_instance_uid="1.2.3.4.900",
        )
        Finding.objects.create(
            tenant_id=study.tenant_id,
            analysis=analysis,
            study=study,
            label=label,
            confidence=confidence,
            centre_mm=[1.0, 2.0, 3.0],
            diameter_mm=12.5,
            critical=critical,
            series_instance_uid="1.2.3.4",
            sop_instance_uid="1.2.3.4.7",
            segment_number=1,
        )
    return analysis


def _clinic_study_with_findings():
    tenant = tenant_row()
    study = study_row(tenant=tenant, patient_id="FIND-1", patient_name="Finding^Patient")
    _analysis(study, model="ct_focal_lesion", label="focal_lesion", confidence=0.91)
    _analysis(study, model="ct_bleed", label="haemorrhage", confidence=0.6, critical=True)
    # A failed run has no findings to show.
    _analysis(study, model="ct_other", status=AnalysisStatus.FAILED, label="failed_lesion", confidence=0.99)
    return tenant, study


def test_a_radiologist_gets_the_study_findings_and_the_access_is_audited(client):
    # given a study with findings of two models (and a failed run) and a radiologist credentialed for its clinic
    tenant, study = _clinic_study_with_findings()
    client.force_login(person(role=Role.RADIOLOGIST, tenant=tenant))
    assert audit_aggregates_pending() == 0
    # when the viewer asks for the findings
    response = client.get(f"/viewer/{tenant.slug}/{study.study_instance_uid}/findings.json")
    # then it gets what the AI selector lists for the study (which analyses count is saas.ai's rule),
    # critical first, with the slice and the segment the viewer jumps to and outlines
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    findings = response.json()["findings"]
    with tenant_context(tenant_ids=[tenant.pk]):
        assert findings == study_findings(study)
    assert [finding["label"] for finding in findings] == ["haemorrhage", "focal_lesion"]
    assert findings[1]["confidence"] == 0.91
    assert findings[1]["series_instance_uid"] == "1.2.3.4"
    assert findings[1]["sop_instance_uid"] == "1.2.3.4.7"
    assert findings[1]["segment_number"] == 1
    assert findings[1]["seg_sop_instance_uid"] == "1.2.3.4.900"
    # and the read is counted for the audit log like a DICOMweb retrieval of that study
    assert audit_aggregates_pending() == 1


def test_another_clinic_gets_the_same_404_as_a_missing_study_and_nothing_is_audited(client):
    # given a study in one clinic and staff of another clinic
    tenant, study = _clinic_study_with_findings()
    other = tenant_row()
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=other))
    # when they ask for its findings under either slug, or for a study that does not exist
    foreign = client.get(f"/viewer/{tenant.slug}/{study.study_instance_uid}/findings.json")
    own_slug = client.get(f"/viewer/{other.slug}/{study.study_instance_uid}/findings.json")
    missing = client.get(f"/viewer/{other.slug}/1.2.3.4.5.6.7/findings.json")
    # then every answer is the same 404, naming nothing, and no access was counted
    assert foreign.status_code == own_slug.status_code == missing.status_code == 404
    for answer in (foreign, own_slug, missing):
        assert b"Not found" in answer.content
        assert b"focal_lesion" not in answer.content and b"FIND-1" not in answer.content
    assert audit_aggregates_pending() == 0


def test_a_role_without_patient_data_is_refused_and_a_stranger_is_sent_to_sign_in(client):
    tenant, study = _clinic_study_with_findings()
    url = f"/viewer/{tenant.slug}/{study.study_instance_uid}/findings.json"
    # given no sign-in, the answer is the sign-in page (which returns to the URL)
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/?next=")
    # given a billing administrator of the clinic, the answer is 403
    client.force_login(person(role=Role.BILLING_ADMIN, tenant=tenant))
    refused = client.get(url)
    assert refused.status_code == 403
    assert b"focal_lesion" not in refused.content
    assert audit_aggregates_pending() == 0
