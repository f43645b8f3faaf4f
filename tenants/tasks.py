"""The base of every Celery task that touches tenant data: it runs only with a tenant id, in that tenant's context."""

from __future__ import annotations

from typing import Any

from celery import Task

from tenants.context import TenantContextMissing, tenant_context


class TenantTask(Task):
    """Tasks declare `base=TenantTask` and take `tenant_id` as a keyword argument.

    A task sent without it fails at once, loudly, instead of running with no context (which
    would see nothing) or with a guessed one (which could see the wrong clinic).
    """

    abstract = True
    # False for long tasks that commit in steps: the body then opens its own tenant_context per
    # step (the tenant id is still required and checked).
    atomic = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tenant_id = kwargs.get("tenant_id")
        if not isinstance(tenant_id, int) or isinstance(tenant_id, bool):
            raise TenantContextMissing(
                f"Task {self.name} touches tenant data but was sent without an integer tenant_id= (got {tenant_id!r})."
            )
        if not self.atomic:
            return super().__call__(*args, **kwargs)
        with tenant_context(tenant_ids=[tenant_id]):
            return super().__call__(*args, **kwargs)
