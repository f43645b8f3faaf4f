"""Writes of the studies domain: indexing from Orthanc's change feed, completion, archive, eviction."""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from saas.studies.enums import StudyStatus
from saas.studies.models import Instance, Patient, Series, Study, StudyCompletion, SyncCursor
from saas.studies.orthanc import OrthancError, orthanc_client
from saas.studies.validation import SOP_CLASS_ALLOWLIST, Refusal, validate_instance
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.provisioning.storage import shared_s3_client as s3_client

logger = logging.getLogger(__name__)

CHANGES_PER_BATCH = 200


class ArchiveError(RuntimeError):
    """An instance could not be archived or verified; retried by the task and the sweeper."""


def archive_key(*, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    return f"studies/{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}.dcm"


def _text(tags: dict, name: str, limit: int) -> str:
    value = tags.get(name, "")
    if isinstance(value, list):
        value = "\\".join(str(item) for item in value)
    return str(value or "").strip()[:limit]


def _int(tags: dict, name: str) -> int | None:
    try:
        return int(str(tags.get(name, "")).strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class SyncOutcome:
    changes: int
    indexed: int
    completed: int
    done: bool


def _orthanc_get(tenant: Tenant, path: str):
    try:
        return orthanc_client(tenant).get(path).raise_for_status().json()
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:
            return None
        raise OrthancError(f"Orthanc answered HTTP {error.response.status_code} for {path}") from error
    except httpx.HTTPError as error:
        raise OrthancError(f"Orthanc did not answer: {error.__class__.__name__}") from error


def instance_index(*, tenant: Tenant, orthanc_instance_id: str, on_archive) -> Instance | None:
    """Index one instance Orthanc holds (idempotent); a new SOP Instance UID reopens a completed study."""
    summary = _orthanc_get(tenant, f"/instances/{orthanc_instance_id}")
    if summary is None:
        # Deleted again before we got to it (eviction, refusal): nothing to index.
        return None
    tags = _orthanc_get(tenant, f"/instances/{orthanc_instance_id}/simplified-tags") or {}
    # One call for how it arrived (Origin) and its transfer syntax.
    metadata = _orthanc_get(tenant, f"/instances/{orthanc_instance_id}/metadata?expand") or {}
    sop_class_uid = _text(tags, "SOPClassUID", 64)
    if sop_class_uid not in SOP_CLASS_ALLOWLIST:
        _refuse_stored_instance(
            tenant=tenant,
            orthanc_instance_id=orthanc_instance_id,
            sop_class_uid=sop_class_uid,
            reason="SOP class not accepted",
        )
        return None
    refusal = _validate_dicom_protocol_arrival(
        tenant=tenant, orthanc_instance_id=orthanc_instance_id, origin=metadata.get("Origin", "")
    )
    if refusal is not None:
        _refuse_stored_instance(
            tenant=tenant, orthanc_instance_id=orthanc_instance_id, sop_class_uid=sop_class_uid, reason=refusal
        )
        return None
    now = timezone.now()
    sop_instance_uid = _text(tags, "SOPInstanceUID", 64)
    existing = Instance.objects.filter(tenant=tenant, sop_instance_uid=sop_instance_uid).first()
    if existing is not None:
        # Already indexed (a resent copy, or a rehydration from the archive): point at Orthanc's copy.
        if existing.orthanc_instance_id != orthanc_instance_id:
            Instance.objects.filter(pk=existing.pk).update(orthanc_instance_id=orthanc_instance_id)
        return existing
    patient, _ = Patient.objects.get_or_create(tenant=tenant, patient_id=_text(tags, "PatientID", 64))
    patient_fields = {
        "patient_name": _text(tags, "PatientName", 324),
        "birth_date": _text(tags, "PatientBirthDate", 8),
        "sex": _text(tags, "PatientSex", 16),
    }
    if any(getattr(patient, field) != value for field, value in patient_fields.items()):
        Patient.objects.filter(pk=patient.pk).update(**patient_fields)
    study_uid = _text(tags, "StudyInstanceUID", 64)
    study = Study.objects.select_for_update().filter(tenant=tenant, study_instance_uid=study_uid).first()
    if study is None:
        study = Study.objects.create(
            tenant=tenant,
            patient=patient,
            study_instance_uid=study_uid,
            accession_number=_text(tags, "AccessionNumber", 64),
            study_date=_text(tags, "StudyDate", 8),
            study_time=_text(tags, "StudyTime", 16),
            study_description=_text(tags, "StudyDescription", 128),
            referring_physician=_text(tags, "ReferringPhysicianName", 324),
            requested_procedure_priority=_text(tags, "RequestedProcedurePriority", 16),
            orthanc_study_id=(_orthanc_get(tenant, f"/instances/{orthanc_instance_id}/study") or {}).get("ID", ""),
            first_received_at=now,
            last_received_at=now,
        )
    elif study.status != StudyStatus.RECEIVING:
        # A late instance: the study is open again and will complete as its next version.
        study.status = StudyStatus.RECEIVING
        study.version += 1
        study.completed_at = None
        study.archived_at = None
    series_uid = _text(tags, "SeriesInstanceUID", 64)
    series, series_created = Series.objects.get_or_create(
        tenant=tenant,
        series_instance_uid=series_uid,
        defaults={
            "study": study,
            "modality": _text(tags, "Modality", 16),
            "body_part": _text(tags, "BodyPartExamined", 64),
            "series_number": _int(tags, "SeriesNumber"),
            "series_description": _text(tags, "SeriesDescription", 128),
            "orthanc_series_id": summary.get("ParentSeries", ""),
        },
    )
    instance = Instance.objects.create(
        tenant=tenant,
        study=study,
        series=series,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
        instance_number=_int(tags, "InstanceNumber"),
        transfer_syntax_uid=_text(metadata, "TransferSyntax", 64),
        size_bytes=int(summary.get("FileSize") or 0),
        orthanc_instance_id=orthanc_instance_id,
        received_at=now,
        s3_key=archive_key(
            study_instance_uid=study_uid, series_instance_uid=series_uid, sop_instance_uid=sop_instance_uid
        ),
    )
    Series.objects.filter(pk=series.pk).update(instance_count=F("instance_count") + 1)
    modality, body_part = series.modality, series.body_part
    study.modalities = sorted({*study.modalities, modality} - {""})
    study.body_parts = sorted({*study.body_parts, body_part} - {""})
    study.instance_count += 1
    study.series_count += 1 if series_created else 0
    study.last_received_at = now
    study.save()
    transaction.on_commit(lambda: on_archive(instance))
    return instance


def _validate_dicom_protocol_arrival(*, tenant: Tenant, orthanc_instance_id: str, origin: str) -> str | None:
    """C-STORE reaches Orthanc before any platform check, so its instances are validated here.

    Every other path validated the bytes before storing them (Orthanc marks those RestApi).
    """
    if origin != "DicomProtocol":
        return None
    try:
        response = orthanc_client(tenant).get(f"/instances/{orthanc_instance_id}/file")
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise OrthancError(f"Orthanc did not return instance {orthanc_instance_id}: {error}") from error
    result = validate_instance(f"C-STORE {orthanc_instance_id}", response.content)
    return result.reason if isinstance(result, Refusal) else None


def _refuse_stored_instance(*, tenant: Tenant, orthanc_instance_id: str, sop_class_uid: str, reason: str) -> None:
    """An instance that reached Orthanc over C-STORE but is not accepted here is removed again."""
    try:
        orthanc_client(tenant).delete(f"/instances/{orthanc_instance_id}").raise_for_status()
    except httpx.HTTPError as error:
        raise OrthancError(f"could not remove refused instance {orthanc_instance_id}: {error}") from error
    audit_record(
        event_id=AuditEventId.STUDY_DELETED,
        action=AuditAction.DELETE,
        outcome=AuditOutcome.MINOR_FAILURE,
        tenant_id=tenant.pk,
        detail={"reason": reason[:200], "sop_class_uid": sop_class_uid, "orthanc_id": orthanc_instance_id},
    )


def study_complete(*, tenant: Tenant, orthanc_study_id: str, on_completed) -> Study | None:
    """Orthanc found the study stable: complete it once per version, when the index holds all of it."""
    statistics = _orthanc_get(tenant, f"/studies/{orthanc_study_id}/statistics")
    study_summary = _orthanc_get(tenant, f"/studies/{orthanc_study_id}")
    if statistics is None or study_summary is None:
        return None
    study_uid = study_summary.get("MainDicomTags", {}).get("StudyInstanceUID", "")
    study = Study.objects.select_for_update().filter(tenant=tenant, study_instance_uid=study_uid).first()
    if study is None or study.status != StudyStatus.RECEIVING:
        return None
    # The platform's own rule on top of Orthanc's StableAge: every instance Orthanc holds is indexed.
    if study.instance_count < int(statistics.get("CountInstances", 0)):
        return None
    now = timezone.now()
    study.status = StudyStatus.COMPLETE
    study.completed_at = now
    study.orthanc_study_id = orthanc_study_id
    study.save(update_fields=["status", "completed_at", "orthanc_study_id"])
    completion, created = StudyCompletion.objects.get_or_create(
        tenant=tenant, study=study, version=study.version, defaults={"instance_count": study.instance_count}
    )
    if created:
        transaction.on_commit(lambda: on_completed(study, completion))
    study_mark_archived_if_done(study=study)
    return study


def study_mark_archived_if_done(*, study: Study) -> bool:
    if study.status != StudyStatus.COMPLETE:
        return False
    if Instance.objects.filter(study=study, archived_at__isnull=True).exists():
        return False
    updated = Study.objects.filter(pk=study.pk, status=StudyStatus.COMPLETE, version=study.version).update(
        status=StudyStatus.ARCHIVED, archived_at=timezone.now()
    )
    return bool(updated)


def orthanc_sync(*, tenant: Tenant, on_archive, on_completed, max_batches: int = 50) -> SyncOutcome | None:
    """Index the next changes of a tenant's Orthanc. Returns None when another worker holds the cursor.

    The cursor moves in the same transaction as the index rows it covers, so a crash at any point
    replays from the last committed change and never skips one; indexing is idempotent by SOP
    Instance UID, so a replay never double-counts.
    """
    totals = {"changes": 0, "indexed": 0, "completed": 0}
    done = False
    for _ in range(max_batches):
        # One transaction per batch: a failure on batch N keeps batches 1..N-1 committed.
        with tenant_context(tenant_ids=[tenant.pk]):
            SyncCursor.objects.get_or_create(tenant=tenant)
            cursor = SyncCursor.objects.select_for_update(skip_locked=True).filter(tenant=tenant).first()
            if cursor is None:
                return None
            feed = _orthanc_get(tenant, f"/changes?since={cursor.last_change}&limit={CHANGES_PER_BATCH}")
            for change in feed.get("Changes", []):
                totals["changes"] += 1
                if change["ChangeType"] == "NewInstance":
                    totals["indexed"] += bool(
                        instance_index(tenant=tenant, orthanc_instance_id=change["ID"], on_archive=on_archive)
                    )
                elif change["ChangeType"] == "StableStudy":
                    totals["completed"] += bool(
                        study_complete(tenant=tenant, orthanc_study_id=change["ID"], on_completed=on_completed)
                    )
            cursor.last_change = feed.get("Last", cursor.last_change)
            cursor.updated_at = timezone.now()
            cursor.save(update_fields=["last_change", "updated_at"])
            done = feed.get("Done", True)
        if done:
            break
    return SyncOutcome(done=done, **totals)


def instance_archive(*, tenant: Tenant, instance_id: int) -> bool:
    """Copy one instance from Orthanc to the tenant's bucket; mark it archived once S3 confirmed our SHA-256."""
    instance = Instance.objects.select_related("study").filter(pk=instance_id).first()
    if instance is None or instance.archived_at is not None:
        return False
    try:
        response = orthanc_client(tenant).get(f"/instances/{instance.orthanc_instance_id}/file")
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise ArchiveError(f"instance {instance.pk}: Orthanc did not return the file: {error}") from error
    data = response.content
    digest = hashlib.sha256(data).digest()
    checksum = base64.b64encode(digest).decode()
    client = s3_client()
    try:
        client.put_object(
            Bucket=tenant.s3_bucket,
            Key=instance.s3_key,
            Body=data,
            ChecksumSHA256=checksum,
            ContentType="application/dicom",
        )
        head = client.head_object(Bucket=tenant.s3_bucket, Key=instance.s3_key, ChecksumMode="ENABLED")
    except (BotoCoreError, ClientError) as error:
        raise ArchiveError(f"instance {instance.pk}: S3 did not store it: {error}") from error
    if head.get("ChecksumSHA256") != checksum or head.get("ContentLength") != len(data):
        raise ArchiveError(f"instance {instance.pk}: S3 did not confirm the SHA-256 checksum")
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk, archived_at__isnull=True).update(
            sha256=digest.hex(), size_bytes=len(data), archived_at=timezone.now()
        )
        study = Study.objects.select_for_update().get(pk=instance.study_id)
        study_mark_archived_if_done(study=study)
    return True


def instances_awaiting_archive(*, older_than: datetime):
    return Instance.objects.filter(archived_at__isnull=True, received_at__lt=older_than).values_list("pk", flat=True)


def archive_object_sha256(*, tenant: Tenant, key: str) -> str:
    try:
        body = s3_client().get_object(Bucket=tenant.s3_bucket, Key=key)["Body"]
    except (BotoCoreError, ClientError) as error:
        raise ArchiveError(f"{key}: {error}") from error
    hasher = hashlib.sha256()
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        hasher.update(chunk)
    return hasher.hexdigest()


def study_evict(*, tenant: Tenant, study: Study) -> bool:
    """Remove an archived study from the hot tier; its instances stay in S3."""
    if study.status != StudyStatus.ARCHIVED or study.evicted_at is not None:
        return False
    try:
        orthanc_client(tenant).delete(f"/studies/{study.orthanc_study_id}").raise_for_status()
    except httpx.HTTPStatusError as error:
        if error.response.status_code != 404:
            raise OrthancError(f"study {study.pk}: Orthanc refused the deletion: {error}") from error
    except httpx.HTTPError as error:
        raise OrthancError(f"study {study.pk}: Orthanc did not answer: {error}") from error
    Study.objects.filter(pk=study.pk).update(evicted_at=timezone.now())
    audit_record(
        event_id=AuditEventId.STUDY_DELETED,
        action=AuditAction.DELETE,
        tenant_id=tenant.pk,
        study_instance_uids=[study.study_instance_uid],
        detail={"operation": "evict_to_archive", "instances": study.instance_count},
    )
    return True


def study_rehydrate(*, tenant: Tenant, study: Study) -> int:
    """Bring an evicted study back from S3 into the tenant's Orthanc, checking every hash."""
    # The row lock makes concurrent readers of an evicted study wait for one restore.
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.evicted_at is None:
        return 0
    client = s3_client()
    restored = 0
    for instance in Instance.objects.filter(study=study).order_by("pk"):
        try:
            data = client.get_object(Bucket=tenant.s3_bucket, Key=instance.s3_key)["Body"].read()
        except (BotoCoreError, ClientError) as error:
            raise ArchiveError(f"instance {instance.pk}: not readable from S3: {error}") from error
        if hashlib.sha256(data).hexdigest() != instance.sha256:
            raise ArchiveError(f"instance {instance.pk}: the archived copy does not match its SHA-256")
        try:
            answer = orthanc_client(tenant).post_instances(data)
        except httpx.HTTPError as error:
            raise OrthancError(f"instance {instance.pk}: Orthanc did not take it back: {error}") from error
        Instance.objects.filter(pk=instance.pk).update(orthanc_instance_id=answer["ID"])
        restored += 1
    study_id = (_orthanc_get(tenant, f"/instances/{answer['ID']}/study") or {}).get("ID", "") if restored else ""
    Study.objects.filter(pk=study.pk).update(evicted_at=None, orthanc_study_id=study_id or study.orthanc_study_id)
    audit_record(
        event_id=AuditEventId.IMPORT,
        action=AuditAction.CREATE,
        tenant_id=tenant.pk,
        study_instance_uids=[study.study_instance_uid],
        detail={"operation": "rehydrate_from_archive", "instances": restored},
    )
    return restored
