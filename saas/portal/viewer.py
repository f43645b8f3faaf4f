"""The diagnostic viewer page at /viewer/<slug>/<StudyInstanceUID>/ (IHE IID style deep link) and its findings.

The page holds no patient data: it names the clinic and the study, and says whether the study has
segmentations (the viewer draws those only with WebGL, and picks its renderer before any request);
the browser viewer (frontend/, built by Vite into /static/viewer/) reads everything else over /dicomweb/<slug>/,
where each access is checked and audited. The page itself is checked the same way as DICOMweb:
a signed-in user with patient-data access to that clinic (membership or radiologist credential),
and the study resolved through the clinic's index, so another clinic's UID is the same 404 page
as a missing one.

`findings.json` beside the page lists the AI findings of the study's current version for the
viewer's findings panel; it is checked like the page and counted in the audit log like a
DICOMweb retrieval of the study (the per-window aggregation, so opening a study costs no write).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from rest_framework import exceptions as drf_exceptions

from saas.ai.selectors import study_findings
from saas.audit.enums import AuditEventId
from saas.dicomweb.selectors import study_by_uid
from saas.dicomweb.services import AccessNotAudited, dicomweb_access_record
from saas.studies.selectors import study_has_segmentations
from tenants.access import access_tenant_patient_data
from tenants.enums import TokenScope


def _tenant_and_study(request, slug: str, study_instance_uid: str):
    try:
        tenant = access_tenant_patient_data(request.actor, slug, scope=TokenScope.STUDIES_READ)
    except drf_exceptions.PermissionDenied as error:
        raise PermissionDenied(str(error.detail)) from error
    return tenant, study_by_uid(tenant=tenant, study_instance_uid=study_instance_uid)


@login_required
@require_GET
def viewer_page(request, slug: str, study_instance_uid: str):
    tenant, study = _tenant_and_study(request, slug, study_instance_uid)
    response = render(
        request,
        "portal/viewer.html",
        {
            "tenant": tenant,
            "study_instance_uid": study.study_instance_uid,
            "has_segmentations": study_has_segmentations(study=study),
        },
    )
    # The page names a study; keep it out of shared caches and the back-forward cache of other users.
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def viewer_findings(request, slug: str, study_instance_uid: str):
    tenant, study = _tenant_and_study(request, slug, study_instance_uid)
    findings = study_findings(study)
    try:
        dicomweb_access_record(
            actor=request.actor,
            tenant=tenant,
            study=study,
            event_id=AuditEventId.INSTANCES_ACCESSED,
            counts={"ai_findings": 1},
        )
    except AccessNotAudited as error:
        # Patient data is never served unaudited (the same rule, and the same answer, as DICOMweb).
        return JsonResponse({"detail": str(error.detail)}, status=error.status_code)
    response = JsonResponse({"findings": findings})
    # A new study version brings new findings: the browser asks again every time.
    response["Cache-Control"] = "private, no-store"
    return response
