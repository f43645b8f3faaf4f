"""Portal pages: the start page and the tenant switcher."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.services import audit_record
from saas.studies.enums import StudyStatus
from saas.studies.selectors import StudySearch, studies_search, study_status_counts
from tenants.middleware import ACTIVE_TENANT_SESSION_KEY


@login_required
def home(request):
    actor = request.actor
    clinics = [
        {"tenant": tenant, "roles": sorted(actor.roles_in(tenant.pk)), "active": tenant == actor.active_tenant}
        for tenant in actor.tenants
    ]
    return render(request, "portal/home.html", {"clinics": clinics})


@login_required
@require_POST
def tenant_switch(request):
    actor = request.actor
    try:
        tenant_id = int(request.POST.get("tenant", ""))
    except ValueError as error:
        raise Http404("Not found.") from error
    if tenant_id not in actor.roles_by_tenant:
        raise Http404("Not found.")
    request.session[ACTIVE_TENANT_SESSION_KEY] = tenant_id
    next_url = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = "/"
    return redirect(next_url)


STUDIES_PER_PAGE = 25


def _date(value: str, field: str, errors: dict) -> date | None:
    if not value:
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        errors[field] = "Use a date like 2026-01-31."
        return None
    if parsed.year < 1900:
        # Study dates are compared as DICOM DA text (YYYYMMDD): a year before 1000 has no such form.
        errors[field] = "Use a date from 1900 on, like 2026-01-31."
        return None
    return parsed


def _text(request, name: str, limit: int, errors: dict) -> str:
    value = request.GET.get(name, "").strip()[:limit]
    if "\x00" in value:
        # PostgreSQL text cannot hold a NUL: no study could match it.
        errors[name] = "Remove the NUL character from the search."
        return ""
    return value


@login_required
def study_list(request):
    """The clinic's studies (a radiologist: every clinic they are credentialed for), searchable."""
    actor = request.actor
    visible_tenants = frozenset(
        tenant_id for tenant_id in actor.context_tenant_ids if actor.may_see_patient_data(tenant_id)
    )
    if not visible_tenants:
        raise PermissionDenied("Your role gives no access to patient data.")
    errors: dict[str, str] = {}
    status = request.GET.get("status", "")
    if status and status not in StudyStatus.values:
        errors["status"] = f"Unknown status; choose one of {', '.join(StudyStatus.values)}."
        status = ""
    date_from = _date(request.GET.get("from", ""), "from", errors)
    date_to = _date(request.GET.get("to", ""), "to", errors)
    if date_from and date_to and date_from > date_to:
        errors["to"] = "The end of the date range comes before its start."
    search = StudySearch(
        text=_text(request, "q", 100, errors),
        accession_number=_text(request, "accession", 64, errors),
        date_from=date_from,
        date_to=date_to,
        status=status,
        tenant_ids=visible_tenants,
    )
    page = Paginator(studies_search(search=search), STUDIES_PER_PAGE).get_page(request.GET.get("page"))
    counts = study_status_counts(rows=studies_search(search=replace(search, status="")))
    studies = list(page.object_list)
    for tenant_id in {study.tenant_id for study in studies}:
        shown = [study for study in studies if study.tenant_id == tenant_id]
        audit_record(
            event_id=AuditEventId.QUERY,
            action=AuditAction.EXECUTE,
            tenant_id=tenant_id,
            actor=actor,
            patient_ids={study.patient.patient_id for study in shown},
            study_instance_uids={study.study_instance_uid for study in shown},
            detail={"page": "study_list", "rows": len(shown)},
        )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/studies.html",
        {
            "page": page,
            "studies": studies,
            "counts": counts,
            "search": search,
            "errors": errors,
            "statuses": StudyStatus.choices,
            "query": query.urlencode(),
            "show_clinic": len(visible_tenants) > 1,
        },
        status=400 if errors else 200,
    )
