"""The diagnostic viewer page at /viewer/<slug>/<StudyInstanceUID>/ (IHE IID style deep link).

The page holds no patient data: it names the clinic and the study, and the browser viewer
(frontend/, built by Vite into /static/viewer/) reads everything else over /dicomweb/<slug>/,
where each access is checked and audited. The page itself is checked the same way as DICOMweb:
a signed-in user with patient-data access to that clinic (membership or radiologist credential),
and the study resolved through the clinic's index, so another clinic's UID is the same 404 page
as a missing one.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET
from rest_framework import exceptions as drf_exceptions

from saas.dicomweb.selectors import study_by_uid
from tenants.access import access_tenant_patient_data
from tenants.enums import TokenScope


@login_required
@require_GET
def viewer_page(request, slug: str, study_instance_uid: str):
    try:
        tenant = access_tenant_patient_data(request.actor, slug, scope=TokenScope.STUDIES_READ)
    except drf_exceptions.PermissionDenied as error:
        raise PermissionDenied(str(error.detail)) from error
    study = study_by_uid(tenant=tenant, study_instance_uid=study_instance_uid)
    response = render(
        request,
        "portal/viewer.html",
        {"tenant": tenant, "study_instance_uid": study.study_instance_uid},
    )
    # The page names a study; keep it out of shared caches and the back-forward cache of other users.
    response["Cache-Control"] = "private, no-store"
    return response
