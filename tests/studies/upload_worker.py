"""A real Celery worker on the `django` queue of the session's test database, for upload tests that finish a batch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import redis
from django.conf import settings

from tests.faults.conftest import Process

VENV_BIN = Path(sys.executable).parent


def django_worker(name: str) -> Process:
    """The worker's Process (not started). Messages left by an earlier session on this broker database go first:
    they name rows of a dropped database. The shared database 15 is left alone."""
    if os.environ.get("READROOM_TEST_REDIS_DB", "15") != "15":
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        broker.delete("django", "unacked", "unacked_index", "unacked_mutex")
        broker.close()
    database = settings.DATABASES["default"]["NAME"]
    return Process(
        name,
        [str(VENV_BIN / "celery"), "-A", "saas.config", "worker", "-l", "info", "--concurrency", "1",
         "-Q", "django", "-n", f"{name}-{database}@%h", "--without-mingle", "--without-gossip"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "saas.config.settings.test",
            "READROOM_TEST_DATABASE": database,
            "PYTHONUNBUFFERED": "1",
        },
        ready=lambda process: " ready." in process.log_since_start(),
    )  # fmt: skip
