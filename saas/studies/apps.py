"""Django app configuration for studies (ingest, index, archive)."""

from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "saas.studies"
    label = "studies"
    default_auto_field = "django.db.models.BigAutoField"
