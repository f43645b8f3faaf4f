"""Browser uploads: batches of files received in resumable chunks, then validated and ingested as one IngestBatch.

Chunks are appended to `READROOM_UPLOAD_DIR/<tenant_id>/<file_id>.part`; the database's `received` is only
advanced once the bytes are on disk (fsync), so after any crash or dropped connection the client resumes from
`received` and whatever lies beyond it in the part file is overwritten.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

import pydicom
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.exceptions import NotAuthenticated, PermissionDenied

from saas.studies.enums import IngestPath, UploadStatus
from saas.studies.ingest import IngestBatch, ItemStatus
from saas.studies.models import UploadBatch, UploadFile
from saas.studies.validation import AcceptedInstance, ValidationLimits, expand_upload
from tenants.access import access_tenant_patient_data
from tenants.actors import Actor
from tenants.enums import Role, TokenScope
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# People who may send studies into a clinic; radiologists, referrers and billing only read or bill.
UPLOAD_ROLES = (Role.CLINIC_ADMIN, Role.CLINIC_STAFF)
MAX_NAME_CHARS = 1024
# One PUT is read within one request (and one row lock): bounded so a slow link never holds it for long.
MAX_CHUNK_BYTES = 16 * 1024 * 1024
_COPY_BYTES = 1024 * 1024


class UploadRefused(Exception):
    """A file the server will not take, with a reason the clinic user can act on."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(reason)
        self.file = file
        self.reason = reason


class UploadOffsetMismatch(Exception):
    """The client's offset is not where the server's copy ends: it must resume from `received`."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the upload continues at byte {received}")
        self.received = received


class UploadClosed(Exception):
    """The batch was already finished: nothing more may be added to it."""


class UploadChunkIncomplete(Exception):
    """The request body ended before its declared length (a dropped connection)."""


def _size(value: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if value >= scale:
            return f"{value / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{value} bytes"


def _limits() -> ValidationLimits:
    return settings.READROOM_VALIDATION_LIMITS


# Access and selectors -----------------------------------------------------------------------------------------


def upload_tenant(actor: Actor) -> Tenant:
    """The clinic this actor may upload into now, else NotAuthenticated, 404 or 403."""
    if not actor.is_authenticated:
        raise NotAuthenticated("Sign in or send an API token (Authorization: Bearer ...).")
    if actor.active_tenant is None:
        raise PermissionDenied("Uploads go into a clinic, and you are not working in one.")
    tenant = access_tenant_patient_data(actor, actor.active_tenant.slug, scope=TokenScope.STUDIES_WRITE)
    # Tokens carry no roles: their `studies:write` scope was checked above.
    if actor.token is None and not actor.has_role(tenant.pk, *UPLOAD_ROLES):
        raise PermissionDenied("Only clinic administrators and clinic staff may upload studies.")
    return tenant


def upload_batches_of(*, actor: Actor) -> QuerySet[UploadBatch]:
    """The actor's own batches in the active clinic: a batch is one person's drop, not a shared inbox."""
    tenant = upload_tenant(actor)
    rows = UploadBatch.objects.filter(tenant_id=tenant.pk)
    # Tokens leave created_by empty; any token of the clinic with studies:write may then resume them.
    return rows.filter(created_by_id=actor.user.pk) if actor.user is not None else rows.filter(created_by__isnull=True)


def upload_files_of(*, actor: Actor, batch_id: UUID | str) -> QuerySet[UploadFile]:
    return UploadFile.objects.filter(batch__in=upload_batches_of(actor=actor), batch_id=batch_id)


def upload_part_path(upload_file: UploadFile) -> Path:
    return Path(settings.READROOM_UPLOAD_DIR) / str(upload_file.tenant_id) / f"{upload_file.pk}.part"


# Services ----------------------------------------------------------------------------------------------------


@transaction.atomic
def upload_batch_create(*, actor: Actor) -> UploadBatch:
    tenant = upload_tenant(actor)
    return UploadBatch.objects.create(tenant=tenant, created_by=actor.user)


def upload_file_check(*, name: str, size: int) -> None:
    """Refuse what can never be taken, before a single byte is sent."""
    if not name or "\0" in name or len(name) > MAX_NAME_CHARS:
        shown = name.replace("\0", "")[:200]
        if not name:
            reason = "the file has no name"
        elif "\0" in name:
            reason = "the file name holds a NUL character"
        else:
            reason = f"the file name is longer than {MAX_NAME_CHARS} characters"
        raise UploadRefused(shown, reason)
    limit = _limits().max_request_bytes
    if size <= 0:
        raise UploadRefused(name, "the file is empty")
    if size > limit:
        raise UploadRefused(name, f"the file is {_size(size)}; the limit is {_size(limit)} per file")


@transaction.atomic
def upload_file_create(*, actor: Actor, batch: UploadBatch, name: str, size: int) -> UploadFile:
    upload_tenant(actor)
    upload_file_check(name=name, size=size)
    # Locked so a file cannot join a batch that is being finished right now.
    batch = upload_batches_of(actor=actor).select_for_update().get(pk=batch.pk)
    if batch.status != UploadStatus.OPEN:
        raise UploadClosed()
    return UploadFile.objects.create(tenant_id=batch.tenant_id, batch=batch, name=name, size=size)


@transaction.atomic
def upload_chunk_append(
    *, actor: Actor, upload_file: UploadFile, offset: int, length: int, body: BinaryIO
) -> UploadFile:
    """Append `length` bytes read from `body` at `offset`, which must be where the received bytes end."""
    # The row lock serialises chunks of one file (a client retrying while its first attempt still runs).
    upload_file = upload_files_of(actor=actor, batch_id=upload_file.batch_id).select_for_update().get(pk=upload_file.pk)
    if upload_file.status == UploadStatus.PROCESSED:
        raise UploadClosed()
    path = upload_part_path(upload_file)
    on_disk = path.stat().st_size if path.exists() else 0
    if on_disk < upload_file.received:
        # The part file lost bytes the database counted (a restored disk): resume from what is really there.
        upload_file.received = on_disk
        upload_file.status = UploadStatus.OPEN
        upload_file.updated_at = timezone.now()
        upload_file.save(update_fields=["received", "status", "updated_at"])
    if offset != upload_file.received:
        raise UploadOffsetMismatch(upload_file.received)
    if offset + length > upload_file.size:
        raise UploadRefused(
            upload_file.name,
            f"the chunk would end at byte {offset + length:,}, past the file's declared {upload_file.size:,} bytes",
        )
    _write_at(path, offset=offset, length=length, body=body)
    upload_file.received = offset + length
    if upload_file.received == upload_file.size:
        upload_file.status = UploadStatus.RECEIVED
    upload_file.updated_at = timezone.now()
    upload_file.save(update_fields=["received", "status", "updated_at"])
    return upload_file


def _write_at(path: Path, *, offset: int, length: int, body: BinaryIO) -> None:
    created = not path.parent.exists()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        # Bytes past `offset` come from an attempt whose database update never committed: they are not counted.
        os.ftruncate(descriptor, offset)
        os.lseek(descriptor, offset, os.SEEK_SET)
        remaining = length
        while remaining:
            try:
                chunk = body.read(min(_COPY_BYTES, remaining))
            except OSError as error:  # the client went away mid-body (Django's UnreadablePostError)
                raise UploadChunkIncomplete() from error
            if not chunk:
                raise UploadChunkIncomplete()
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
            remaining -= len(chunk)
        # `received` is advanced by the caller only after this: the bytes it counts survive a crash.
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if created:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@transaction.atomic
def upload_batch_finish(*, actor: Actor, batch: UploadBatch) -> dict:
    """Validate and store every fully received file of the batch; answer (and keep) the summary per study.

    Finishing again answers the kept summary: the client may retry after a dropped answer without storing twice.
    """
    tenant = upload_tenant(actor)
    batch = upload_batches_of(actor=actor).select_for_update().get(pk=batch.pk)
    if batch.status == UploadStatus.PROCESSED:
        return batch.summary
    # Locking every file waits for chunks still being written, and keeps new ones out (they see PROCESSED).
    files = list(UploadFile.objects.filter(batch=batch).select_for_update().order_by("created_at", "name", "pk"))
    limits = _limits()
    ingest = IngestBatch(tenant=tenant, actor=actor, path=IngestPath.UPLOAD, limits=limits)
    studies: dict[str, dict] = {}
    rows: list[dict] = []
    for upload_file in files:
        upload_file.outcomes = _ingest_file(upload_file, ingest=ingest, studies=studies, limits=limits)
        upload_file.status = UploadStatus.PROCESSED
        upload_file.updated_at = timezone.now()
        upload_file.save(update_fields=["outcomes", "status", "updated_at"])
        rows += upload_file.outcomes
    ingest.finish()
    summary = {
        "studies": sorted(studies.values(), key=lambda study: (study["patient_name"], study["study_instance_uid"])),
        **{
            listed: [{"file": row["file"], "reason": row["reason"]} for row in rows if row["status"] == status]
            for listed, status in (
                ("refused", ItemStatus.REFUSED),
                ("skipped", ItemStatus.SKIPPED),
                ("failed", ItemStatus.FAILED),
            )
        },
    }
    batch.summary = summary
    batch.status = UploadStatus.PROCESSED
    batch.finished_at = timezone.now()
    batch.save(update_fields=["summary", "status", "finished_at"])
    paths = [upload_part_path(upload_file) for upload_file in files]
    # Only once the outcome is committed: a rolled-back finish can then be retried with the bytes still there.
    transaction.on_commit(lambda: _remove(paths))
    return summary


def upload_summary_stored_anything(summary: dict) -> bool:
    return bool(summary.get("studies") or summary.get("skipped"))


def _ingest_file(upload_file: UploadFile, *, ingest: IngestBatch, studies: dict[str, dict], limits) -> list[dict]:
    if upload_file.received < upload_file.size:
        reason = f"upload incomplete: {upload_file.received} of {upload_file.size} bytes"
        return [_outcome_row(upload_file.name, ItemStatus.FAILED, reason)]
    rows = []
    try:
        # The open file, not its bytes: expand_upload reads an archive entry by entry, so a big zip never sits
        # in memory whole.
        with open(upload_part_path(upload_file), "rb") as stream:
            for result in expand_upload(upload_file.name, stream, limits=limits, inside_folder="/" in upload_file.name):
                outcome = ingest.add_result(result)
                if outcome.status == ItemStatus.STORED:
                    _count_study(studies, outcome.instance)
                rows.append(
                    _outcome_row(
                        outcome.file,
                        outcome.status,
                        outcome.reason,
                        instance=outcome.instance if outcome.status == ItemStatus.STORED else None,
                    )
                )
    except FileNotFoundError:
        logger.error("upload file %s of tenant %s has no part file", upload_file.pk, upload_file.tenant_id)
        reason = "the uploaded copy was lost on the server; send it again"
        return [_outcome_row(upload_file.name, ItemStatus.FAILED, reason)]
    return rows


def _outcome_row(file: str, status: ItemStatus, reason: str, *, instance: AcceptedInstance | None = None) -> dict:
    return {
        "file": file,
        "status": str(status),
        "reason": reason,
        "study_instance_uid": instance.study_instance_uid if instance else "",
        "sop_instance_uid": instance.sop_instance_uid if instance else "",
    }


def _count_study(studies: dict[str, dict], instance: AcceptedInstance) -> None:
    study = studies.get(instance.study_instance_uid)
    if study is None:
        study = studies[instance.study_instance_uid] = {
            "study_instance_uid": instance.study_instance_uid,
            "patient_id": instance.patient_id,
            **_study_tags(instance.data),
            "instances_accepted": 0,
        }
    study["instances_accepted"] += 1


def _study_tags(data: bytes) -> dict:
    # Read from the accepted (already validated) copy; the pixel data is never parsed for a summary line.
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        return {
            "patient_name": str(dataset.get("PatientName") or "").strip(),
            "study_date": str(dataset.get("StudyDate") or "").strip(),
            "study_description": str(dataset.get("StudyDescription") or "").strip(),
        }
    except Exception:  # validated already; a summary line must never undo a stored instance
        logger.warning("could not read the summary tags of an uploaded instance", exc_info=True)
        return {"patient_name": "", "study_date": "", "study_description": ""}


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
