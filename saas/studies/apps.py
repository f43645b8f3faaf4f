"""Django app configuration for studies (ingest, index, archive)."""

from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "saas.studies"
    label = "studies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery's autodiscovery finds only `<app>/tasks.py`; the upload tasks live beside it in their own module.
        from saas.studies import upload_tasks  # noqa: F401
