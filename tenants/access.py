"""Resolving a tenant named in a URL for an actor: the same 404 for "missing" and "not yours"."""

from __future__ import annotations

from django.http import Http404
from rest_framework.exceptions import NotAuthenticated, PermissionDenied

from tenants.actors import Actor
from tenants.models import Tenant
from tenants.viewsets import NOT_FOUND_MESSAGE


def access_tenant_patient_data(actor: Actor, slug: str, *, scope: str) -> Tenant:
    """The tenant whose patient data the actor may reach with `scope`, else NotAuthenticated, 404 or 403."""
    if not actor.is_authenticated:
        raise NotAuthenticated("Sign in or send an API token (Authorization: Bearer ...).")
    tenant = next((tenant for tenant in actor.tenants if tenant.slug == slug), None)
    if tenant is None or tenant.pk not in actor.context_tenant_ids:
        raise Http404(NOT_FOUND_MESSAGE)
    if actor.token is not None:
        if not actor.has_scope(scope):
            raise PermissionDenied(f"This API token lacks the '{scope}' scope.")
        return tenant
    if not actor.may_see_patient_data(tenant.pk):
        raise PermissionDenied("Your role in this clinic gives no access to patient data.")
    return tenant
