"""Django app configuration for dicomweb."""

from django.apps import AppConfig


class DicomwebConfig(AppConfig):
    name = "saas.dicomweb"
    label = "dicomweb"
