"""DRF permissions of the tenants domain: roles in the active clinic, token scopes."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from tenants.enums import Role


class IsClinicAdmin(BasePermission):
    message = "Only a clinic administrator of the active clinic may do this."

    def has_permission(self, request, view) -> bool:
        actor = getattr(request._request, "actor", None)
        if actor is None or actor.token is not None or actor.active_tenant is None:
            return False
        return actor.has_role(actor.active_tenant.pk, Role.CLINIC_ADMIN)


def require_scope(scope: str) -> type[BasePermission]:
    """Tokens must carry `scope`; people are governed by their roles instead."""

    class HasScope(BasePermission):
        message = f"This API token lacks the '{scope}' scope."

        def has_permission(self, request, view) -> bool:
            actor = getattr(request._request, "actor", None)
            return actor is not None and actor.is_authenticated and actor.has_scope(scope)

    HasScope.__name__ = f"HasScope_{scope.replace(':', '_')}"
    return HasScope
