"""The tenant-scoped base model, manager and viewset: the only way application code reaches tenant rows.

The filter built here mirrors the row-level security policy of the same table (see
`tenants.rls`), so a bug in either wall is still caught by the other.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.db.models import Q

from tenants.context import require_context


class TenantScopedQuerySet(models.QuerySet):
    """QuerySet of a tenant-scoped model; subclasses add filters, never replace the scoping."""


class TenantScopedManager(models.Manager.from_queryset(TenantScopedQuerySet)):
    """Returns only the rows of the tenants in the current context (and the actor's own rows)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Django's related managers (study.series.all()) subclass the default manager and narrow
        # super().get_queryset() by the relation: they keep the scoping, so they are let through.
        if cls.__module__ == "django.db.models.fields.related_descriptors":
            return
        if "get_queryset" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides get_queryset(): tenant scoping cannot be replaced; "
                "add a queryset method instead."
            )

    def get_queryset(self) -> TenantScopedQuerySet:
        return super().get_queryset().filter(scope_filter(self.model))

    def dangerously_unscoped(self) -> TenantScopedQuerySet:
        """All rows the database role may see, ignoring the Python wall (RLS still applies)."""
        return super().get_queryset()


def scope_filter(model: type[models.Model]) -> Q:
    context = require_context()
    condition = Q(tenant_id__in=sorted(context.tenant_ids))
    for model_field, context_attribute in getattr(model, "tenant_scope_extra", ()):
        value = getattr(context, context_attribute)
        if value is not None:
            condition |= Q(**{model_field: value})
    if getattr(model, "tenant_platform_rows", False) and context.platform_scope:
        condition |= Q(tenant_id__isnull=True)
    return condition


class TenantScopedModel(models.Model):
    """Base of every model that holds a tenant's data (patient data above all)."""

    # (model field, TenantContext attribute) pairs that also make a row visible, mirrored in RLS.
    tenant_scope_extra: ClassVar[tuple[tuple[str, str], ...]] = ()

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")

    objects = TenantScopedManager()

    class Meta:
        abstract = True
        # Related-object access goes through the scoped manager too.
        base_manager_name = "objects"
