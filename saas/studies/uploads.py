"""Browser uploads: batches of files received in resumable chunks, then validated and ingested by a worker.

Chunks are appended to `READROOM_UPLOAD_DIR/<tenant_id>/<file_id>.part`; the database's `received` is only
advanced once the bytes are on disk (fsync), so after any crash or dropped connection the client resumes from
`received` and whatever lies beyond it in the part file is overwritten.

Finishing a batch closes it and queues `upload_tasks.upload_finish`: a 1 GB archive or thousands of files take
longer than any proxy waits for one request. The worker commits one file at a time (the page polls the batch for
"file N of M"), then builds the summary per study and audits the transfer once. Open batches nobody touched for a
day are removed with their part files by `upload_batches_cleanup` (beat, and `manage.py cleanup_uploads`).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

import pydicom
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from rest_framework.exceptions import NotAuthenticated, PermissionDenied

from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.services import audit_record
from saas.studies.enums import IngestPath, UploadStatus
from saas.studies.ingest import IngestBatch, ItemOutcome, ItemStatus
from saas.studies.models import UploadBatch, UploadFile
from saas.studies.validation import AcceptedInstance, Refusal, RefusalKind, ValidationLimits, expand_upload
from tenants.access import access_tenant_patient_data
from tenants.actors import Actor
from tenants.context import tenant_context
from tenants.enums import Role, TokenScope
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# People who may send studies into a clinic; radiologists, referrers and billing only read or bill.
UPLOAD_ROLES = (Role.CLINIC_ADMIN, Role.CLINIC_STAFF)
MAX_NAME_CHARS = 1024
# One PUT is read within one request (and one row lock): bounded so a slow link never holds it for long.
MAX_CHUNK_BYTES = 16 * 1024 * 1024
_COPY_BYTES = 1024 * 1024
# How often a finishing worker writes its progress (and sign of life) while it checks the entries of one file.
PROGRESS_INTERVAL_S = 1.0
# A finishing batch with no sign of life this long lost its worker (kill -9, a lost message; Redis would hand an
# unacknowledged message back only after its one-hour visibility timeout): housekeeping queues it again.
FINISH_STALLED_AFTER = timedelta(minutes=10)
# An open batch untouched this long was left by a closed browser: a clinic resuming next morning still finds it.
UPLOAD_ABANDONED_AFTER = timedelta(hours=24)


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
    unencodable = not name.isascii() and any(0xD800 <= ord(character) <= 0xDFFF for character in name)
    if not name or "\0" in name or unencodable or len(name) > MAX_NAME_CHARS:
        shown = name.replace("\0", "").encode("utf-8", "replace").decode("utf-8")[:200]
        if not name:
            reason = "the file has no name"
        elif "\0" in name:
            reason = "the file name holds a NUL character"
        elif unencodable:
            # A lone UTF-16 surrogate (JSON's "\ud800") is no character: it cannot be stored or shown.
            reason = "the file name is not valid Unicode text"
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
    # A declaration retried because its answer was lost (or the same file dropped again) names the file
    # already declared: the client then resumes at the offset the server holds instead of a second copy.
    existing = UploadFile.objects.filter(batch=batch, name=name, size=size, status=UploadStatus.OPEN).first()
    if existing is not None:
        return existing
    return UploadFile.objects.create(tenant_id=batch.tenant_id, batch=batch, name=name, size=size)


@transaction.atomic
def upload_chunk_append(
    *, actor: Actor, upload_file: UploadFile, offset: int, length: int, body: BinaryIO
) -> UploadFile:
    """Append `length` bytes read from `body` at `offset`, which must be where the received bytes end."""
    # The row lock serialises chunks of one file (a client retrying while its first attempt still runs).
    upload_file = upload_files_of(actor=actor, batch_id=upload_file.batch_id).select_for_update().get(pk=upload_file.pk)
    # Read under the file's lock: a finish request locks every file before it closes the batch, so a chunk either
    # lands before the batch closes or sees it closed, never half-way into a file the worker is reading.
    batch_status = UploadBatch.objects.filter(pk=upload_file.batch_id).values_list("status", flat=True).first()
    if upload_file.status == UploadStatus.PROCESSED or batch_status != UploadStatus.OPEN:
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
def upload_batch_finish(*, actor: Actor, batch: UploadBatch) -> UploadBatch:
    """Close the batch to new files and chunks and queue its validation and storing; answer the batch.

    Only the request that moves the batch from open to finishing queues the work: finishing again (a retry after
    a lost answer, a second tab) queues nothing and answers the batch as it stands.
    """
    upload_tenant(actor)
    batch = upload_batches_of(actor=actor).select_for_update().get(pk=batch.pk)
    if batch.status != UploadStatus.OPEN:
        return batch
    # Locking every file waits for chunks still being written; any chunk after this commit sees the batch closed.
    files = list(UploadFile.objects.filter(batch=batch).select_for_update().only("pk"))
    batch.status = UploadStatus.FINISHING
    batch.files_total = len(files)
    batch.files_done = batch.entries_done = 0
    batch.progress_at = timezone.now()
    batch.finished_by_token = actor.token
    batch.finished_by_role = actor.active_role
    batch.finished_from_ip = actor.source_ip
    batch.save(
        update_fields=[
            "status",
            "files_total",
            "files_done",
            "entries_done",
            "progress_at",
            "finished_by_token",
            "finished_by_role",
            "finished_from_ip",
        ]
    )
    _finish_enqueue(tenant_id=batch.tenant_id, batch_id=batch.pk)
    return batch


def _finish_enqueue(*, tenant_id: int, batch_id: UUID) -> None:
    from saas.studies.upload_tasks import upload_finish  # the tasks module imports this one

    transaction.on_commit(lambda: upload_finish.delay(tenant_id=tenant_id, batch_id=str(batch_id)))


def upload_batch_process(*, tenant: Tenant, batch_id: UUID | str) -> UploadBatch | None:
    """Validate and store every file of a finishing batch, one committed file at a time; then summarise it once.

    Safe to run again after a worker died, and beside a duplicate run: a file's outcomes are committed together
    with its PROCESSED status, checked again under its row lock, so each file is counted by exactly one run. A
    file whose commit was lost is simply ingested again: Orthanc answers AlreadyStored for a SOP Instance UID it
    holds (stored, once), and the lost attempt's outcomes were never counted.
    """
    with tenant_context(tenant_ids=[tenant.pk]):
        batch = UploadBatch.objects.filter(tenant_id=tenant.pk, pk=batch_id).first()
        if batch is None or batch.status != UploadStatus.FINISHING:
            return batch
        pending = list(
            UploadFile.objects.filter(batch_id=batch.pk)
            .exclude(status=UploadStatus.PROCESSED)
            .order_by("created_at", "name", "pk")
            .values_list("pk", flat=True)
        )
    limits = _limits()
    for file_id in pending:
        _file_process(tenant=tenant, batch_id=batch.pk, file_id=file_id, limits=limits)
    return _batch_summarise(tenant=tenant, batch_id=batch.pk)


def _file_process(*, tenant: Tenant, batch_id: UUID, file_id: UUID, limits: ValidationLimits) -> None:
    with tenant_context(tenant_ids=[tenant.pk]):
        upload_file = UploadFile.objects.filter(pk=file_id).exclude(status=UploadStatus.PROCESSED).first()
        if upload_file is None:
            return
        UploadBatch.objects.filter(pk=batch_id).update(entries_done=0, progress_at=timezone.now())
    # No transaction while the file is checked and stored (minutes for a 1 GB archive): no lock need be held, the
    # batch is closed to chunks, and the progress written meanwhile must be visible to the page at once.
    # The transfer is audited once for the whole batch, from the committed outcomes (_batch_summarise).
    ingest = IngestBatch(tenant=tenant, actor=None, path=IngestPath.UPLOAD, limits=limits)
    rows = _ingest_file(upload_file, ingest=ingest, limits=limits, on_entry=_progress_writer(tenant.pk, batch_id))
    with tenant_context(tenant_ids=[tenant.pk]):
        upload_file = UploadFile.objects.select_for_update().filter(pk=file_id).first()
        if upload_file is None or upload_file.status == UploadStatus.PROCESSED:
            return  # a duplicate run committed this file first: its outcomes stand, these were stored as well
        upload_file.outcomes = rows
        upload_file.status = UploadStatus.PROCESSED
        upload_file.updated_at = timezone.now()
        upload_file.save(update_fields=["outcomes", "status", "updated_at"])
        done = UploadFile.objects.filter(batch_id=batch_id, status=UploadStatus.PROCESSED).count()
        UploadBatch.objects.filter(pk=batch_id).update(
            files_done=done, entries_done=len(rows), progress_at=timezone.now()
        )
        # A processed file is never read again (a rerun skips it): its bytes can go as soon as its outcome is kept.
        path = upload_part_path(upload_file)
        transaction.on_commit(lambda: _remove([path]))


def _progress_writer(tenant_id: int, batch_id: UUID) -> Callable[[int], None]:
    last = time.monotonic()

    def write(entries: int) -> None:
        nonlocal last
        if time.monotonic() - last < PROGRESS_INTERVAL_S:
            return
        last = time.monotonic()
        with tenant_context(tenant_ids=[tenant_id]):
            UploadBatch.objects.filter(pk=batch_id).update(entries_done=entries, progress_at=timezone.now())

    return write


def _batch_summarise(*, tenant: Tenant, batch_id: UUID) -> UploadBatch | None:
    with tenant_context(tenant_ids=[tenant.pk]):
        # The batch row lock makes two runs that both reach this point summarise (and audit) once.
        batch = (
            UploadBatch.objects.select_for_update(of=("self",))
            .select_related("created_by", "finished_by_token")
            .filter(pk=batch_id)
            .first()
        )
        if batch is None or batch.status != UploadStatus.FINISHING:
            return batch
        files = list(UploadFile.objects.filter(batch=batch).order_by("created_at", "name", "pk"))
        if any(upload_file.status != UploadStatus.PROCESSED for upload_file in files):
            return batch  # another run is still on a file; it summarises when done
        rows = [row for upload_file in files for row in upload_file.outcomes]
        IngestBatch(
            tenant=tenant,
            actor=_finishing_actor(tenant, batch),
            path=IngestPath.UPLOAD,
            limits=_limits(),
            outcomes=[_ingest_outcome(row) for row in rows],
        ).finish()
        batch.summary = _summary(rows)
        batch.status = UploadStatus.PROCESSED
        batch.files_done = len(files)
        batch.finished_at = batch.progress_at = timezone.now()
        batch.save(update_fields=["summary", "status", "files_done", "finished_at", "progress_at"])
        # Part files are removed per file already; these are left by a run that died between commit and unlink.
        paths = [upload_part_path(upload_file) for upload_file in files]
        transaction.on_commit(lambda: _remove(paths))
    return batch


def _finishing_actor(tenant: Tenant, batch: UploadBatch) -> Actor:
    """The person or token that asked to finish, as the audit records them (role and address of that request)."""
    return Actor(
        user=batch.created_by,
        token=batch.finished_by_token,
        active_tenant=tenant,
        roles_by_tenant={tenant.pk: frozenset({batch.finished_by_role} - {""})},
        tenants=(tenant,),
        source_ip=batch.finished_from_ip,
    )


def _ingest_file(
    upload_file: UploadFile, *, ingest: IngestBatch, limits: ValidationLimits, on_entry: Callable[[int], None]
) -> list[dict]:
    if upload_file.received < upload_file.size:
        reason = f"upload incomplete: {upload_file.received} of {upload_file.size} bytes"
        return [_failed_row(upload_file.name, reason)]
    rows: list[dict] = []
    try:
        # The open file, not its bytes: expand_upload reads an archive entry by entry, so a big zip never sits
        # in memory whole.
        with open(upload_part_path(upload_file), "rb") as stream:
            for result in expand_upload(upload_file.name, stream, limits=limits, inside_folder="/" in upload_file.name):
                rows.append(_outcome_row(ingest.add_result(result)))
                on_entry(len(rows))
    except FileNotFoundError:
        logger.error("upload file %s of tenant %s has no part file", upload_file.pk, upload_file.tenant_id)
        return [_failed_row(upload_file.name, "the uploaded copy was lost on the server; send it again")]
    except DatabaseError:
        raise  # the database is away: the task retries, this file was not counted
    except Exception as error:
        # One file the checks choke on must not hold the whole batch in a retry loop: it is reported, with what it
        # stored before. Only the error's class is logged: its message may quote the file's tags.
        logger.error(
            "upload file %s of tenant %s could not be checked: %s",
            upload_file.pk,
            upload_file.tenant_id,
            error.__class__.__name__,
        )
        return [*rows, _failed_row(upload_file.name, "the server could not check this file; send it again")]
    return rows


def _outcome_row(outcome: ItemOutcome) -> dict:
    row = {
        "file": outcome.file,
        "status": str(outcome.status),
        "reason": outcome.reason,
        "study_instance_uid": "",
        "sop_instance_uid": "",
    }
    if outcome.status == ItemStatus.STORED and outcome.instance is not None:
        row["study_instance_uid"] = outcome.instance.study_instance_uid
        row["sop_instance_uid"] = outcome.instance.sop_instance_uid
        row["patient_id"] = outcome.instance.patient_id
        # Read now, from the bytes in hand: the summary is built after every file, when they are long gone.
        row.update(_study_tags(outcome.instance.data))
    if outcome.refusal is not None:
        row["refusal_kind"] = str(outcome.refusal.kind)
    return row


def _failed_row(file: str, reason: str) -> dict:
    return {
        "file": file,
        "status": str(ItemStatus.FAILED),
        "reason": reason,
        "study_instance_uid": "",
        "sop_instance_uid": "",
    }


def _ingest_outcome(row: dict) -> ItemOutcome:
    """A committed outcome row as IngestBatch.finish audits it (identifiers only; the image bytes are gone)."""
    status = ItemStatus(row["status"])
    instance = None
    if status == ItemStatus.STORED:
        instance = AcceptedInstance(
            file=row["file"],
            data=b"",
            sop_class_uid="",
            sop_instance_uid=row["sop_instance_uid"],
            study_instance_uid=row["study_instance_uid"],
            series_instance_uid="",
            transfer_syntax_uid="",
            patient_id=row.get("patient_id", ""),
            modality="",
        )
    refusal = None
    if row.get("refusal_kind"):
        refusal = Refusal(row["file"], row["reason"], RefusalKind(row["refusal_kind"]))
    return ItemOutcome(row["file"], status, row["reason"], instance=instance, refusal=refusal)


def _summary(rows: list[dict]) -> dict:
    studies: dict[str, dict] = {}
    for row in rows:
        if row["status"] != ItemStatus.STORED:
            continue
        study = studies.get(row["study_instance_uid"])
        if study is None:
            study = studies[row["study_instance_uid"]] = {
                "study_instance_uid": row["study_instance_uid"],
                "patient_id": row.get("patient_id", ""),
                "patient_name": row.get("patient_name", ""),
                "study_date": row.get("study_date", ""),
                "study_description": row.get("study_description", ""),
                "instances_accepted": 0,
            }
        study["instances_accepted"] += 1
    return {
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


# Housekeeping ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadCleanup:
    batch_ids: tuple[str, ...] = ()
    files: int = 0
    bytes_received: int = 0


def _open_batches_untouched_since(tenant: Tenant, moment: datetime) -> QuerySet[UploadBatch]:
    # A batch is touched when it is created and whenever one of its files is declared or takes a chunk.
    touched = Greatest("created_at", Coalesce(Max("files__updated_at"), "created_at"))
    return (
        UploadBatch.objects.filter(tenant_id=tenant.pk, status=UploadStatus.OPEN)
        .annotate(touched=touched)
        .filter(touched__lt=moment)
    )


def upload_batches_cleanup(*, tenant: Tenant, untouched_since: datetime, actor_username: str = "") -> UploadCleanup:
    """Remove the clinic's open batches untouched since `untouched_since`: their rows and part files; audited.

    Only open batches: one being finished or processed is never touched. Candidates are locked (skipping one a
    finish request holds right now) and their last activity is read again under the locks, so a chunk that
    arrived meanwhile keeps its batch; a chunk that comes after finds the batch gone (404) and writes nothing.
    The audit names batches and counts, never files: their names may carry a patient's name.
    """
    with tenant_context(tenant_ids=[tenant.pk]):
        candidates = list(_open_batches_untouched_since(tenant, untouched_since).values_list("pk", flat=True))
        if not candidates:
            return UploadCleanup()
        locked = list(
            UploadBatch.objects.select_for_update(skip_locked=True)
            .filter(pk__in=candidates, status=UploadStatus.OPEN)
            .values_list("pk", flat=True)
        )
        # Waits for a chunk being written into one of them (one short transaction).
        list(UploadFile.objects.select_for_update().filter(batch_id__in=locked).only("pk"))
        removed = list(
            _open_batches_untouched_since(tenant, untouched_since).filter(pk__in=locked).values_list("pk", flat=True)
        )
        if not removed:
            return UploadCleanup()
        files = UploadFile.objects.filter(batch_id__in=removed)
        paths = [upload_part_path(upload_file) for upload_file in files.only("pk", "tenant_id")]
        cleanup = UploadCleanup(
            batch_ids=tuple(sorted(str(pk) for pk in removed)),
            files=len(paths),
            bytes_received=files.aggregate(total=Sum("received"))["total"] or 0,
        )
        UploadBatch.objects.filter(pk__in=removed).delete()
        audit_record(
            # Not a DICOM study deletion: these bytes never became instances; the platform removed its own leftovers.
            event_id=AuditEventId.APPLICATION_ACTIVITY,
            action=AuditAction.DELETE,
            tenant_id=tenant.pk,
            actor_username=actor_username,
            detail={
                "operation": "upload_cleanup",
                "batches": list(cleanup.batch_ids),
                "files": cleanup.files,
                "bytes_received": cleanup.bytes_received,
                "untouched_since": untouched_since.isoformat(),
            },
        )
        # Only once the deletion is committed: a rolled-back cleanup leaves a resumable batch with its bytes.
        transaction.on_commit(lambda: _remove(paths))
    logger.info("upload cleanup tenant=%s: %s batches, %s files removed", tenant.pk, len(removed), cleanup.files)
    return cleanup


def upload_batches_requeue_stalled(*, tenant: Tenant, quiet_since: datetime) -> list[str]:
    """Queue again the finishing of batches with no sign of life since `quiet_since`; their worker died.

    Harmless beside a run that is only slow: upload_batch_process settles duplicates file by file.
    """
    with tenant_context(tenant_ids=[tenant.pk]):
        stalled = list(
            UploadBatch.objects.select_for_update(skip_locked=True)
            .filter(tenant_id=tenant.pk, status=UploadStatus.FINISHING)
            .filter(Q(progress_at__lt=quiet_since) | Q(progress_at__isnull=True))
            .values_list("pk", flat=True)
        )
        # Marked alive, so that a task waiting in a long queue is not queued again at every sweep.
        UploadBatch.objects.filter(pk__in=stalled).update(progress_at=timezone.now())
        for batch_id in stalled:
            _finish_enqueue(tenant_id=tenant.pk, batch_id=batch_id)
    if stalled:
        logger.warning("upload finishing queued again for tenant=%s: %s", tenant.pk, [str(pk) for pk in stalled])
    return [str(pk) for pk in stalled]
