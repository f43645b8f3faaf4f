"""Celery tasks of the AI domain: dispatch on `study_completed` (and on a retry), record the workers' results."""

from __future__ import annotations

import logging

from saas.ai.services import (
    analysis_dispatch,
    analysis_record_result,
    job_ref,
    result_payload,
    study_ai_dispatch,
)
from saas.config.celery import app
from saas.studies.orthanc import OrthancError
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.tasks import TenantTask

logger = logging.getLogger(__name__)


# An Orthanc that does not answer is retried with backoff; anything else fails the analysis by name.
ORTHANC_RETRIES = {
    "ignore_result": True,
    "autoretry_for": (OrthancError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 8,
}


@app.task(base=TenantTask, name="ai.dispatch_study", atomic=False, **ORTHANC_RETRIES)
def dispatch_study(*, tenant_id: int, study_id: int, version: int) -> None:
    with tenant_context(tenant_ids=[tenant_id]):
        tenant = Tenant.objects.get(pk=tenant_id)
        study_ai_dispatch(tenant=tenant, study_id=study_id, version=version)


@app.task(base=TenantTask, name="ai.dispatch_analysis", atomic=False, **ORTHANC_RETRIES)
def dispatch_analysis(*, tenant_id: int, analysis_id: str) -> None:
    """A retried analysis, sent again by the worker rather than in the administrator's request."""
    with tenant_context(tenant_ids=[tenant_id]):
        tenant = Tenant.objects.get(pk=tenant_id)
        analysis_dispatch(tenant=tenant, analysis_id=analysis_id)


@app.task(name="ai.record_result", **ORTHANC_RETRIES)
def record_result(raw: dict) -> None:
    """Sent by the inference workers (by name, on the `django` queue); the tenant comes from the job id."""
    try:
        result = result_payload(raw)
    except ValueError as error:
        # A malformed message cannot be attributed to a tenant: log the field, never the payload.
        logger.error("ai result refused: %s", error)
        return
    ref = job_ref(result.job_id)
    if ref is None:
        logger.error("ai result with a job id of unknown form: dropped")
        return
    with tenant_context(tenant_ids=[ref.tenant_id]):
        tenant = Tenant.objects.filter(pk=ref.tenant_id).first()
        if tenant is None:
            logger.error("ai result for unknown tenant %s: dropped", ref.tenant_id)
            return
        analysis_record_result(tenant=tenant, result=result)
