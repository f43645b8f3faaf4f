"""Django app configuration for tenants."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tenants import checks, schema  # noqa: F401  (the scoping system check, the OpenAPI auth scheme)
