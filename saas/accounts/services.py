"""Signing in and out, each attempt written to the audit log (110114)."""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest

from saas.accounts.models import User
from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from tenants.middleware import ACTIVE_TENANT_SESSION_KEY, client_ip
from tenants.selectors import actor_for_user

LOGIN_FAILED_MESSAGE = "Sign-in failed: the username or password is wrong, or the account is disabled."
LOCKED_OUT_MESSAGE = "Too many failed sign-ins: this account is locked from your address for 15 minutes."


def session_login(*, request: HttpRequest, username: str, password: str) -> tuple[User | None, str]:
    """Sign a person in; return the user, or None with the message to show."""
    source_ip = client_ip(request)
    user = authenticate(request, username=username, password=password)
    if user is None:
        locked_out = getattr(request, "axes_locked_out", False)
        audit_record(
            event_id=AuditEventId.SECURITY_ALERT if locked_out else AuditEventId.USER_AUTHENTICATION,
            action=AuditAction.EXECUTE,
            outcome=AuditOutcome.SERIOUS_FAILURE if locked_out else AuditOutcome.MINOR_FAILURE,
            tenant_id=None,
            actor_username=username[:150],
            source_ip=source_ip,
            detail={"method": "password", "reason": "locked out" if locked_out else "bad credentials"},
        )
        return None, LOCKED_OUT_MESSAGE if locked_out else LOGIN_FAILED_MESSAGE
    login(request, user)
    actor = actor_for_user(user=user, source_ip=source_ip)
    if actor.active_tenant is not None:
        request.session[ACTIVE_TENANT_SESSION_KEY] = actor.active_tenant.pk
    audit_record(
        event_id=AuditEventId.USER_AUTHENTICATION,
        action=AuditAction.EXECUTE,
        tenant_id=actor.active_tenant.pk if actor.active_tenant else None,
        actor=actor,
        detail={"method": "password", "operation": "login"},
    )
    return user, ""


def session_logout(*, request: HttpRequest) -> None:
    actor = getattr(request, "actor", None)
    if actor is not None and actor.user is not None:
        audit_record(
            event_id=AuditEventId.USER_AUTHENTICATION,
            action=AuditAction.EXECUTE,
            tenant_id=actor.active_tenant.pk if actor.active_tenant else None,
            actor=actor,
            detail={"method": "session", "operation": "logout"},
        )
    logout(request)
