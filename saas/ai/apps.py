"""Django app configuration for AI analysis (dispatch to the inference workers, results as DICOM)."""

from django.apps import AppConfig


class AiConfig(AppConfig):
    name = "saas.ai"
    label = "ai"
    default_auto_field = "django.db.models.BigAutoField"
