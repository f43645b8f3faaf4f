"""The `study_completed` event: once per study version, other domains' tasks are enqueued for it.

An explicit list in settings (READROOM_STUDY_COMPLETED_TASKS) rather than signals, so what runs on
completion is visible in one place. Each task receives tenant_id, study_id and version.
"""

from __future__ import annotations

import logging

from django.conf import settings

from saas.config.celery import app

logger = logging.getLogger(__name__)


def study_completed(*, tenant_id: int, study_id: int, version: int) -> None:
    for task_name in settings.READROOM_STUDY_COMPLETED_TASKS:
        app.send_task(task_name, kwargs={"tenant_id": tenant_id, "study_id": study_id, "version": version})
    logger.info("study_completed tenant=%s study=%s version=%s", tenant_id, study_id, version)
