"""One ingest batch (a STOW-RS request, a browser upload): validate, store in the tenant's Orthanc, audit once.

Every ingest path goes through here, so each applies the same validation, the same refusal
reasons and the same audit events; indexing and archiving then follow from Orthanc's change feed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum

from django.db import transaction

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from saas.studies.enums import IngestPath
from saas.studies.orthanc import OrthancError, orthanc_store
from saas.studies.selectors import IngestHomes, instance_conflict
from saas.studies.validation import (
    AcceptedInstance,
    Refusal,
    RefusalKind,
    Skipped,
    ValidationLimits,
    validate_instance,
)
from tenants.actors import Actor
from tenants.models import Tenant

logger = logging.getLogger(__name__)


class ItemStatus(StrEnum):
    STORED = "stored"
    REFUSED = "refused"
    # Valid, but the store did not take it now: the sender should retry.
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ItemOutcome:
    file: str
    status: ItemStatus
    reason: str = ""
    instance: AcceptedInstance | None = None
    refusal: Refusal | None = None


@dataclass
class IngestBatch:
    tenant: Tenant
    # None when the platform itself ingests (demo seed); audited as the system.
    actor: Actor | None
    path: IngestPath
    limits: ValidationLimits = field(default_factory=ValidationLimits)
    outcomes: list[ItemOutcome] = field(default_factory=list)
    _homes: IngestHomes = field(default_factory=IngestHomes, repr=False)

    def add_bytes(self, file: str, data: bytes, *, study_instance_uid: str | None = None) -> ItemOutcome:
        return self.add_result(validate_instance(file, data, limits=self.limits), study_instance_uid=study_instance_uid)

    def add_result(
        self, result: AcceptedInstance | Refusal | Skipped, *, study_instance_uid: str | None = None
    ) -> ItemOutcome:
        if isinstance(result, Skipped):
            return self._keep(ItemOutcome(result.file, ItemStatus.SKIPPED, result.reason))
        if isinstance(result, Refusal):
            return self._keep(ItemOutcome(result.file, ItemStatus.REFUSED, result.reason, refusal=result))
        if study_instance_uid and result.study_instance_uid != study_instance_uid:
            reason = f"belongs to study {result.study_instance_uid}, not {study_instance_uid}"
            return self._keep(ItemOutcome(result.file, ItemStatus.REFUSED, reason, instance=result))
        where = {
            "sop_instance_uid": result.sop_instance_uid,
            "study_instance_uid": result.study_instance_uid,
            "series_instance_uid": result.series_instance_uid,
        }
        if reason := instance_conflict(tenant=self.tenant, homes=self._homes, **where):
            refusal = Refusal(file=result.file, reason=reason, kind=RefusalKind.DUPLICATE_SOP_INSTANCE)
            return self._keep(ItemOutcome(result.file, ItemStatus.REFUSED, reason, instance=result, refusal=refusal))
        try:
            orthanc_store(self.tenant, result.data)
        except OrthancError as error:
            logger.warning("ingest tenant=%s sop=%s: %s", self.tenant.pk, result.sop_instance_uid, error)
            reason = "the clinic's image store did not take it; send it again"
            return self._keep(ItemOutcome(result.file, ItemStatus.FAILED, reason, instance=result))
        self._homes.stored(**where)
        return self._keep(ItemOutcome(result.file, ItemStatus.STORED, instance=result))

    def _keep(self, outcome: ItemOutcome) -> ItemOutcome:
        """Remember the outcome without the image bytes; the caller gets them once, in the return value.

        A batch may be a multi-gigabyte upload or STOW request: holding every stored image until
        finish(), which needs only identifiers, would hold all of it in memory at once.
        """
        kept = outcome
        if outcome.instance is not None:
            kept = replace(outcome, instance=replace(outcome.instance, data=b""))
        self.outcomes.append(kept)
        return outcome

    @property
    def stored(self) -> list[AcceptedInstance]:
        return [outcome.instance for outcome in self.outcomes if outcome.status == ItemStatus.STORED]

    def finish(self) -> None:
        """Audit what was stored and what looked hostile, and have the change feed indexed soon."""
        stored = self.stored
        refused = [outcome for outcome in self.outcomes if outcome.status == ItemStatus.REFUSED]
        for outcome in refused:
            if outcome.refusal is not None and outcome.refusal.hostile:
                audit_record(
                    event_id=AuditEventId.SECURITY_ALERT,
                    action=AuditAction.EXECUTE,
                    outcome=AuditOutcome.SERIOUS_FAILURE,
                    tenant_id=self.tenant.pk,
                    actor=self.actor,
                    detail={"path": str(self.path), "kind": str(outcome.refusal.kind), "file": outcome.file[:200]},
                )
        if stored:
            audit_record(
                event_id=AuditEventId.INSTANCES_TRANSFERRED,
                action=AuditAction.CREATE,
                tenant_id=self.tenant.pk,
                actor=self.actor,
                patient_ids={instance.patient_id for instance in stored} - {""},
                study_instance_uids={instance.study_instance_uid for instance in stored},
                detail={"path": str(self.path), "stored": len(stored), "refused": len(refused)},
            )
            from saas.studies.tasks import sync_tenant

            tenant_id = self.tenant.pk
            transaction.on_commit(lambda: sync_tenant.delay(tenant_id=tenant_id))
