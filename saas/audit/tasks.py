"""Celery tasks of the audit domain: flush the aggregated DICOMweb audit counts from Redis to the audit log."""

from __future__ import annotations

import logging

from celery.signals import worker_shutdown

from saas.audit.aggregation import audit_aggregates_flush
from saas.config.celery import app

logger = logging.getLogger(__name__)


@app.task(name="audit.flush_aggregates", ignore_result=True)
def flush_aggregates() -> dict:
    """Beat: one audit row per closed (actor, study, event) window; safe to run twice or concurrently."""
    outcome = audit_aggregates_flush()
    return {"claimed": outcome.claimed, "written": outcome.written, "failed": outcome.failed}


@worker_shutdown.connect
def _flush_on_worker_shutdown(**_kwargs) -> None:
    # Best effort: the counts stay in Redis either way, and beat on another worker writes them.
    try:
        audit_aggregates_flush()
    except Exception:  # noqa: BLE001 - shutting down; the log is all that is left
        logger.exception("audit aggregates could not be flushed at worker shutdown")
