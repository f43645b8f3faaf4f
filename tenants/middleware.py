"""Resolves the request's actor and runs the whole request in that actor's tenant context."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from tenants.actors import ANONYMOUS
from tenants.context import tenant_context
from tenants.selectors import actor_for_token, actor_for_user, api_token_resolve
from tenants.services import api_token_touch

ACTIVE_TENANT_SESSION_KEY = "readroom_active_tenant_id"


def client_ip(request: HttpRequest) -> str | None:
    # Behind the load balancer REMOTE_ADDR is set from X-Forwarded-For by the proxy layer (gunicorn
    # --forwarded-allow-ips), never trusted from the client here.
    return request.META.get("REMOTE_ADDR") or None


class TenantContextMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        source_ip = client_ip(request)
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = api_token_resolve(authorization.removeprefix("Bearer ").strip())
            if token is None:
                audit_record(
                    event_id=AuditEventId.USER_AUTHENTICATION,
                    action=AuditAction.EXECUTE,
                    outcome=AuditOutcome.MINOR_FAILURE,
                    tenant_id=None,
                    source_ip=source_ip,
                    detail={"method": "api_token", "reason": "unknown, expired or revoked token"},
                )
                response = JsonResponse({"detail": "The API token is unknown, expired or revoked."}, status=401)
                response["WWW-Authenticate"] = 'Bearer realm="readroom"'
                return response
            api_token_touch(token=token)
            request.actor = actor_for_token(token=token, source_ip=source_ip)
            # Token requests never carry a session: no cookie-based CSRF risk, no session fixation.
            request._dont_enforce_csrf_checks = True
        elif request.user.is_authenticated:
            request.actor = actor_for_user(
                user=request.user,
                active_tenant_id=request.session.get(ACTIVE_TENANT_SESSION_KEY),
                source_ip=source_ip,
            )
        else:
            request.actor = ANONYMOUS
        actor = request.actor
        with tenant_context(tenant_ids=actor.context_tenant_ids, user_id=actor.id):
            return self.get_response(request)
