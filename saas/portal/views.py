"""Portal pages: the start page and the tenant switcher."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

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
