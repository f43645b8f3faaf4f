"""Resolving a tenant named in a URL for an actor: the same 404 for "missing" and "not yours"."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import Any

from django.http import Http404
from rest_framework.exceptions import NotAuthenticated, PermissionDenied

from tenants.actors import Actor
from tenants.context import TenantContext, tenant_context
from tenants.models import Tenant
from tenants.viewsets import NOT_FOUND_MESSAGE

# How long a looked-up authorisation fact (who a token or person is, which indexed study a UID names
# in a clinic) may be reused on the high-rate read paths. Whatever it decided stops applying within
# this bound after the database changes: a revoked token, an ended credential, a removed membership.
# README "DICOMweb" states it; tests/dicomweb/test_wado_access.py holds the code to it.
DECISION_CACHE_SECONDS = 5.0


class DecisionCache:
    """A small per-process map that forgets each entry `ttl` seconds after it was stored.

    Per process on purpose: nothing to invalidate across machines, no network round trip, and the
    bound holds whatever the deployment. Only positive answers are stored by its users, so a study
    or a grant that appears is seen at once; only what is taken away waits for the bound.
    """

    def __init__(self, *, ttl: float, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self.clock() >= entry[0]:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def actor_tenant_context(actor: Actor) -> AbstractContextManager[TenantContext]:
    """The tenant context a request of this actor runs in (opened by TenantContextMiddleware, or by a
    view marked `tenant_context_in_view` around the database work it does)."""
    return tenant_context(tenant_ids=actor.context_tenant_ids, user_id=actor.id)


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
