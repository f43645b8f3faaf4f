"""Reads of the tenants domain: resolving actors, listing a person's clinics and tokens."""

from __future__ import annotations

import hashlib

from django.db.models import QuerySet
from django.utils import timezone

from tenants.actors import Actor
from tenants.context import tenant_context
from tenants.enums import Role, TenantStatus
from tenants.models import ApiToken, Membership, RadiologistCredential, Tenant


def token_hash(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


def actor_for_user(*, user, active_tenant_id: int | None = None, source_ip: str | None = None) -> Actor:
    """The actor for a signed-in person: clinic roles plus radiologist credentials valid now."""
    now = timezone.now()
    roles: dict[int, set[str]] = {}
    tenants: dict[int, Tenant] = {}
    # Only the person's own rows are visible here (RLS: user_id = readroom_user_id()).
    with tenant_context(user_id=user.pk):
        for membership in Membership.objects.select_related("tenant").filter(user_id=user.pk):
            if membership.tenant.status == TenantStatus.ACTIVE:
                roles.setdefault(membership.tenant_id, set()).add(membership.role)
                tenants[membership.tenant_id] = membership.tenant
        for credential in RadiologistCredential.objects.select_related("tenant").filter(radiologist_id=user.pk):
            if credential.tenant.status == TenantStatus.ACTIVE and credential.is_valid_at(now):
                roles.setdefault(credential.tenant_id, set()).add(Role.RADIOLOGIST.value)
                tenants[credential.tenant_id] = credential.tenant
    ordered = tuple(sorted(tenants.values(), key=lambda tenant: tenant.slug))
    active = tenants.get(active_tenant_id) if active_tenant_id is not None else None
    if active is None and ordered:
        active = ordered[0]
    return Actor(
        user=user,
        active_tenant=active,
        roles_by_tenant={tenant_id: frozenset(role_set) for tenant_id, role_set in roles.items()},
        tenants=ordered,
        source_ip=source_ip,
    )


def api_token_resolve(raw_token: str) -> ApiToken | None:
    """The usable token with this secret, or None (unknown, expired, revoked, tenant suspended)."""
    key_hash = token_hash(raw_token)
    # Only the row whose hash the caller proved knowledge of is visible (RLS: key_hash).
    with tenant_context(token_hash=key_hash):
        token = ApiToken.objects.select_related("tenant").filter(key_hash=key_hash).first()
    if token is None or not token.is_usable_at(timezone.now()) or token.tenant.status != TenantStatus.ACTIVE:
        return None
    return token


def actor_for_token(*, token: ApiToken, source_ip: str | None = None) -> Actor:
    return Actor(
        token=token,
        active_tenant=token.tenant,
        roles_by_tenant={token.tenant_id: frozenset()},
        tenants=(token.tenant,),
        scopes=frozenset(token.scopes),
        source_ip=source_ip,
    )


def api_tokens_of_tenant(*, actor: Actor) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(tenant_id=actor.active_tenant.pk if actor.active_tenant else None)


def tenants_active() -> QuerySet[Tenant]:
    return Tenant.objects.filter(status=TenantStatus.ACTIVE)
