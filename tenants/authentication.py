"""DRF authentication that reuses the actor TenantContextMiddleware already resolved."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication, CSRFCheck
from rest_framework.exceptions import PermissionDenied


class ActorAuthentication(BaseAuthentication):
    """Bearer tokens and browser sessions; session requests must pass the CSRF check."""

    def authenticate(self, request):
        actor = getattr(request._request, "actor", None)
        if actor is None or not actor.is_authenticated:
            return None
        if actor.token is not None:
            return (actor, actor)
        self._enforce_csrf(request)
        return (actor.user, actor)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="readroom"'

    def _enforce_csrf(self, request) -> None:
        def dummy_get_response(request):  # pragma: no cover - never called by CSRFCheck
            return None

        check = CSRFCheck(dummy_get_response)
        check.process_request(request)
        reason = check.process_view(request, None, (), {})
        if reason:
            raise PermissionDenied(f"CSRF failed: {reason}")
