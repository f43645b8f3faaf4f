"""Resolves the request's actor and runs the whole request in that actor's tenant context."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils import timezone

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from tenants.access import DECISION_CACHE_SECONDS, DecisionCache, actor_tenant_context
from tenants.actors import ANONYMOUS, Actor
from tenants.selectors import actor_for_token, actor_for_user, api_token_resolve, token_hash
from tenants.services import api_token_touch

ACTIVE_TENANT_SESSION_KEY = "readroom_active_tenant_id"

# A viewer reads a 500-slice CT as 500 DICOMweb GETs within seconds, and resolving the actor costs
# up to six database round trips each. For those reads only, a resolved token or a person's roles
# are reused for at most DECISION_CACHE_SECONDS (tenants.access). A token's expiry is still checked
# on every request, and a session is still loaded every time, so signing out, a password change or a
# clinic switch take effect at once. Writes (STOW-RS), pages and the REST API always resolve afresh.
ACTOR_CACHE_PATH_PREFIXES = ("/dicomweb/",)
_ACTOR_CACHE_METHODS = frozenset({"GET", "HEAD"})
actor_cache = DecisionCache(ttl=DECISION_CACHE_SECONDS)

_IN_VIEW_ATTRIBUTE = "readroom_tenant_context_in_view"


def tenant_context_in_view(view):
    """Mark a read-only view that opens `tenants.access.actor_tenant_context` itself around its database
    work, so that a read answered from cached decisions runs no transaction at all. Honoured only on the
    cached read paths; a scoped query outside the view's own context fails (TenantContextMissing), it
    never runs unscoped."""
    setattr(view, _IN_VIEW_ATTRIBUTE, True)
    return view


def client_ip(request: HttpRequest) -> str | None:
    """The address of the person or device at the other end: audited with each access, and the sign-in lockout key.

    REMOTE_ADDR is the TCP peer (gunicorn never rewrites it from headers). Behind a proxy named in
    READROOM_TRUSTED_PROXIES (nginx, the load balancer) the peer is that proxy, so X-Forwarded-For is read from
    its right end, past each trusted proxy, to the first address no trusted proxy vouches for: what a client
    writes into the header itself lies further left and is never taken. Also settings.AXES_CLIENT_IP_CALLABLE.
    """
    peer = request.META.get("REMOTE_ADDR") or None
    trusted = _trusted_proxies()
    if not trusted or peer is None or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _valid_ip(hop):
            # A malformed entry: nothing to its left can be trusted either; the last proxy is what is known.
            return peer
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else peer


@functools.cache
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _trusted_proxies() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return _networks(tuple(settings.READROOM_TRUSTED_PROXIES))


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _within(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _actor_cacheable(request: HttpRequest) -> bool:
    return request.method in _ACTOR_CACHE_METHODS and request.path_info.startswith(ACTOR_CACHE_PATH_PREFIXES)


def _context_in_view(request: HttpRequest) -> bool:
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    return getattr(match.func, _IN_VIEW_ATTRIBUTE, False)


def _token_for(raw_token: str, *, cacheable: bool):
    """The usable token for this secret (or None), and whether it was just read from the database."""
    if not cacheable:
        return api_token_resolve(raw_token), True
    key = ("token", token_hash(raw_token))
    token = actor_cache.get(key)
    if token is not None and token.is_usable_at(timezone.now()):
        return token, False
    token = api_token_resolve(raw_token)
    if token is not None:
        actor_cache.put(key, token)
    return token, True


def _actor_for_person(request: HttpRequest, source_ip: str | None, *, cacheable: bool) -> Actor:
    active_tenant_id = request.session.get(ACTIVE_TENANT_SESSION_KEY)
    if not cacheable:
        return actor_for_user(user=request.user, active_tenant_id=active_tenant_id, source_ip=source_ip)
    key = ("person", request.user.pk, active_tenant_id)
    actor = actor_cache.get(key)
    if actor is None:
        actor = actor_for_user(user=request.user, active_tenant_id=active_tenant_id, source_ip=source_ip)
        actor_cache.put(key, actor)
    # The user row loaded for this request (still active, same password) and this request's address.
    return dataclasses.replace(actor, user=request.user, source_ip=source_ip)


class TenantContextMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        source_ip = client_ip(request)
        cacheable = _actor_cacheable(request)
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token, fresh = _token_for(authorization.removeprefix("Bearer ").strip(), cacheable=cacheable)
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
            if fresh:
                # Only a token just read carries its real last use; a cached one is read again (and
                # touched) at least every DECISION_CACHE_SECONDS while in use.
                api_token_touch(token=token)
            request.actor = actor_for_token(token=token, source_ip=source_ip)
            # Token requests never carry a session: no cookie-based CSRF risk, no session fixation.
            request._dont_enforce_csrf_checks = True
        elif request.user.is_authenticated:
            request.actor = _actor_for_person(request, source_ip, cacheable=cacheable)
        else:
            request.actor = ANONYMOUS
        if cacheable and _context_in_view(request):
            return self.get_response(request)
        with actor_tenant_context(request.actor):
            return self.get_response(request)
