"""The viewer page, /viewer/<slug>/<StudyInstanceUID>/: what it tells the browser viewer before any request."""

from __future__ import annotations

import re

import pytest

from saas.studies.models import Series
from tenants.context import tenant_context
from tenants.enums import Role
from tests.factories import person, study_row, tenant_row

pytestmark = pytest.mark.django_db


def _overlays(response) -> str:
    match = re.search(rb'data-overlays="([^"]*)"', response.content)
    assert match, "the page names whether the study has segmentation overlays"
    return match.group(1).decode()


def test_the_page_says_whether_the_study_has_segmentations_and_names_no_patient(client):
    # given a study with one CT series, and a radiologist credentialed for its clinic
    tenant = tenant_row()
    study = study_row(tenant=tenant, patient_id="PAGE-1", patient_name="Page^Patient")
    with tenant_context(tenant_ids=[tenant.pk]):
        Series.objects.create(tenant=tenant, study=study, series_instance_uid="1.2.3.10", modality="CT")
    client.force_login(person(role=Role.RADIOLOGIST, tenant=tenant))
    url = f"/viewer/{tenant.slug}/{study.study_instance_uid}/"
    # when the page is opened, then it says there is nothing to overlay (the viewer may draw without WebGL)
    response = client.get(url)
    assert response.status_code == 200
    assert _overlays(response) == "false"
    # and once the AI's SEG series is indexed, the page says so (the viewer keeps WebGL, which draws them)
    with tenant_context(tenant_ids=[tenant.pk]):
        Series.objects.create(tenant=tenant, study=study, series_instance_uid="1.2.3.11", modality="SEG")
    assert _overlays(client.get(url)) == "true"
    # and the page names neither the patient nor their id
    assert b"Page^Patient" not in response.content and b"PAGE-1" not in response.content
    assert response["Cache-Control"] == "private, no-store"
