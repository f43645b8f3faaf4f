"""Writes on the DICOMweb read path: bringing an evicted study back online, and auditing each access."""

from __future__ import annotations

import logging

from rest_framework.exceptions import APIException

from saas.audit.aggregation import AuditAggregationUnavailable, audit_aggregate_add
from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.services import AuditWriteFailed, audit_record
from saas.studies.models import Study
from saas.studies.orthanc import OrthancError
from saas.studies.services import ArchiveError, study_rehydrate
from tenants.actors import Actor
from tenants.models import Tenant

logger = logging.getLogger(__name__)


class StudyRestoreFailed(APIException):
    status_code = 503
    default_detail = "This study is archived and could not be brought back just now; try again shortly."


class AccessNotAudited(APIException):
    status_code = 503
    default_detail = "The access could not be recorded in the audit log, so nothing was served; try again shortly."


def study_bring_online(*, tenant: Tenant, study: Study) -> Study:
    """Rehydrate an evicted study from S3 before serving it; concurrent requests wait for one restore."""
    if study.evicted_at is None:
        return study
    # The row lock makes the viewer's parallel requests queue behind one restore, which then
    # commits evicted_at = NULL for them to see.
    locked = Study.objects.select_for_update().select_related("patient").get(pk=study.pk)
    if locked.evicted_at is None:
        return locked
    try:
        study_rehydrate(tenant=tenant, study=locked)
    except (ArchiveError, OrthancError) as error:
        logger.error("tenant %s: study %s could not be rehydrated: %s", tenant.pk, study.pk, error)
        raise StudyRestoreFailed() from error
    locked.refresh_from_db()
    return locked


def dicomweb_access_record(
    *, actor: Actor, tenant: Tenant, study: Study, event_id: AuditEventId, counts: dict[str, int]
) -> None:
    """Count one query (110112) or retrieval (110103) of a study: Redis now, one audit row per window later.

    When Redis is down the event is written to the audit log at once instead; when that fails too
    the request is refused, because patient data is never served unaudited.
    """
    try:
        audit_aggregate_add(
            event_id=event_id,
            tenant_id=tenant.pk,
            actor=actor,
            study_instance_uid=study.study_instance_uid,
            patient_id=study.patient.patient_id,
            counts=counts,
        )
        return
    except AuditAggregationUnavailable as error:
        logger.warning("audit aggregation unavailable, writing the event directly: %s", error)
    try:
        audit_record(
            event_id=event_id,
            action=AuditAction.EXECUTE if event_id == AuditEventId.QUERY else AuditAction.READ,
            tenant_id=tenant.pk,
            actor=actor,
            patient_ids=[study.patient.patient_id],
            study_instance_uids=[study.study_instance_uid],
            detail={"interface": "dicomweb", "requests": 1, "counts": counts},
        )
    except AuditWriteFailed as error:
        raise AccessNotAudited() from error
