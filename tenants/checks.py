"""System check: every tenant-scoped model is reached only through tenant-scoped managers."""

from django.apps import apps
from django.core import checks

from tenants.scoping import TenantScopedManager, TenantScopedModel


@checks.register(checks.Tags.models)
def check_tenant_scoped_managers(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    for model in apps.get_models():
        has_tenant_column = any(field.column == "tenant_id" for field in model._meta.concrete_fields)
        if not (issubclass(model, TenantScopedModel) or has_tenant_column):
            continue
        for manager in [*model._meta.managers, model._meta.base_manager]:
            if not isinstance(manager, TenantScopedManager):
                errors.append(
                    checks.Error(
                        f"{model._meta.label}.{manager.name} is not a TenantScopedManager.",
                        hint="Tenant data must only be reachable through tenant-scoped managers "
                        "(a model's Meta must inherit TenantScopedModel.Meta).",
                        obj=model,
                        id="tenants.E001",
                    )
                )
    return errors
