"""The tenant context: which tenants the current unit of work may see, in Python and in PostgreSQL.

The same context is held in a ContextVar (read by the scoped managers, the first wall) and in
transaction-local PostgreSQL settings (read by the row-level security policies, the second
wall). It only exists inside a transaction, so a connection handed to the next request or task
carries nothing over.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.db import connections, transaction


class TenantContextMissing(RuntimeError):
    """Tenant data was reached with no tenant context set: a programming error, never a user error."""


@dataclass(frozen=True)
class TenantContext:
    tenant_ids: frozenset[int] = field(default_factory=frozenset)
    user_id: int | None = None
    token_hash: str | None = None
    # Only the audit service sets this, to write and verify the platform chain (tenant_id NULL).
    platform_scope: bool = False


EMPTY_CONTEXT = TenantContext()
_current: ContextVar[TenantContext | None] = ContextVar("readroom_tenant_context", default=None)


def current_context() -> TenantContext | None:
    return _current.get()


def require_context() -> TenantContext:
    context = _current.get()
    if context is None:
        raise TenantContextMissing(
            "No tenant context is set: wrap this code in tenants.context.tenant_context(...) "
            "(requests get one from TenantContextMiddleware, Celery tasks from TenantTask)."
        )
    return context


def _apply(context: TenantContext, *, using: str) -> None:
    tenant_ids = "{" + ",".join(str(tenant_id) for tenant_id in sorted(context.tenant_ids)) + "}"
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT set_config('readroom.tenant_ids', %s, true),"
            " set_config('readroom.user_id', %s, true),"
            " set_config('readroom.token_hash', %s, true),"
            " set_config('readroom.platform_scope', %s, true)",
            [
                tenant_ids,
                "" if context.user_id is None else str(context.user_id),
                context.token_hash or "",
                "on" if context.platform_scope else "",
            ],
        )


@contextmanager
def tenant_context(
    *,
    tenant_ids: Iterable[int] = (),
    user_id: int | None = None,
    token_hash: str | None = None,
    platform_scope: bool = False,
    using: str = "default",
) -> Iterator[TenantContext]:
    """Run the block in one transaction (or savepoint) that sees exactly these tenants."""
    context = TenantContext(
        tenant_ids=frozenset(int(tenant_id) for tenant_id in tenant_ids),
        user_id=user_id,
        token_hash=token_hash,
        platform_scope=platform_scope,
    )
    previous = _current.get()
    with transaction.atomic(using=using):
        _apply(context, using=using)
        token = _current.set(context)
        try:
            yield context
        except BaseException:
            # The savepoint rollback undoes our set_config together with the block's work.
            _current.reset(token)
            raise
        _current.reset(token)
        # set_config(..., true) outlives a released savepoint, so hand the outer block its context back.
        _apply(previous or EMPTY_CONTEXT, using=using)
