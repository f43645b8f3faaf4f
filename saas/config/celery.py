"""The Django side's Celery application (ingest, archive, audit flushing, AI dispatch)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.config.settings.local")

app = Celery("readroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
