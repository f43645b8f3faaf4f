"""Writes of the studies domain: indexing from Orthanc's change feed, completion, archive, eviction."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

import httpx
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError
from django.db import connection, transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from saas.studies.enums import StudyStatus
from saas.studies.models import Instance, Patient, Series, Study, StudyCompletion, SyncCursor
from saas.studies.orthanc import OrthancError, orthanc_client, orthanc_get, orthanc_store, orthanc_stream
from saas.studies.selectors import DUPLICATE_SERIES_REASON, DUPLICATE_SOP_INSTANCE_REASON
from saas.studies.validation import SOP_CLASS_ALLOWLIST, Refusal, validate_instance
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.provisioning.storage import shared_s3_client as s3_client

logger = logging.getLogger(__name__)

# Each batch commits (and hands its instances to the archive) on its own: small enough that archiving
# starts while a study is still arriving, large enough that the per-batch queries stay a small part.
CHANGES_PER_BATCH = 100
# Reading a batch's new instances from Orthanc, and archiving them, is mostly waiting on Orthanc and
# S3: a few threads overlap those waits (Orthanc serves 50 HTTP threads, boto3's pool holds 10).
ORTHANC_READ_THREADS = 8
VALIDATION_MEMORY_BYTES = 512 * 1024 * 1024
ARCHIVE_UPLOAD_THREADS = 8
# An instance up to this size is hashed and sent from memory; a larger one (multi-frame, whole-slide)
# spills to a temporary file, so a batch of large objects never holds gigabytes in one worker.
ARCHIVE_SPOOL_BYTES = 8 * 1024 * 1024
ARCHIVE_READ_CHUNK_BYTES = 1024 * 1024
# While changes keep coming the feed is read again after this pause rather than at beat's next tick;
# the sync stops at the first read that finds nothing new.
FEED_FOLLOW_INTERVAL_S = 0.5
# At most this many completions handed on again per tenant and sweep.
COMPLETION_SWEEP_LIMIT = 500


class ArchiveError(RuntimeError):
    """An instance could not be archived or verified; retried by the task and the sweeper."""


def archive_key(*, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    return f"studies/{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}.dcm"


# An Integer String (IS) holds a signed 32-bit value (PS3.5 6.2), as the index's integer columns do.
_IS_RANGE = range(-(2**31), 2**31)


def _text(tags: dict, name: str, limit: int) -> str:
    value = tags.get(name, "")
    if isinstance(value, list):
        value = "\\".join(str(item) for item in value)
    # PostgreSQL text cannot hold NUL: a sender's stray NUL must not stop the tenant's whole sync.
    return str(value or "").replace("\x00", "").strip()[:limit]


def _int(tags: dict, name: str) -> int | None:
    """The tag's integer, or None when it is absent, not one integer, or beyond what an IS may hold.

    Non-conformant senders write InstanceNumber 3000000000; stored as is it would fail the batch's insert on
    every replay and hold up the tenant's feed for good.
    """
    try:
        value = int(str(tags.get(name, "")).strip())
    except ValueError:
        return None
    return value if value in _IS_RANGE else None


@dataclass(frozen=True)
class SyncOutcome:
    changes: int
    # Instances new to the index (a replayed change re-points an indexed one and is not counted).
    indexed: int
    completed: int
    done: bool


@dataclass(frozen=True)
class InstanceArrival:
    """What Orthanc holds about one new instance, read before its batch touches the index."""

    orthanc_instance_id: str
    tags: dict
    sop_class_uid: str
    transfer_syntax_uid: str
    size_bytes: int
    # Why the platform does not accept it ("" when it does): such an instance is removed from Orthanc again.
    refusal: str = ""

    @property
    def sop_instance_uid(self) -> str:
        return _text(self.tags, "SOPInstanceUID", 64)

    @property
    def study_instance_uid(self) -> str:
        return _text(self.tags, "StudyInstanceUID", 64)

    @property
    def series_instance_uid(self) -> str:
        return _text(self.tags, "SeriesInstanceUID", 64)

    @property
    def patient_id(self) -> str:
        return _text(self.tags, "PatientID", 64)

    @property
    def hierarchy(self) -> tuple[str, str]:
        """Where the index files it: (study UID, series UID)."""
        return (self.study_instance_uid, self.series_instance_uid)


def _orthanc_get(tenant: Tenant, path: str, *, params=()):
    """Orthanc's JSON answer, None for a 404 (see orthanc_get)."""
    answer = orthanc_get(tenant, path, params=params)
    return None if answer is None else json.loads(answer)


def _arrival_read(*, tenant: Tenant, orthanc_instance_id: str) -> InstanceArrival | None:
    """Read one new instance from Orthanc and decide whether the platform accepts it; None when it is gone.

    Two calls for an accepted instance (three when it came over C-STORE), one for a refused class.
    """
    # How it arrived (Origin), its class and transfer syntax, in one call.
    metadata = _orthanc_get(tenant, f"/instances/{orthanc_instance_id}/metadata", params=[("expand", "true")])
    if metadata is None:
        # Deleted again before we got to it (eviction, refusal): nothing to index.
        return None
    tags = None
    sop_class_uid = _text(metadata, "SopClassUid", 64)
    if not sop_class_uid:
        # Orthanc records the class when it stores an instance; one stored without it is judged by its tags.
        tags = _orthanc_get(tenant, f"/instances/{orthanc_instance_id}/simplified-tags")
        if tags is None:
            return None
        sop_class_uid = _text(tags, "SOPClassUID", 64)
    arrival = InstanceArrival(
        orthanc_instance_id=orthanc_instance_id,
        tags=tags or {},
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=_text(metadata, "TransferSyntax", 64),
        # Known here only when the file is read for validation; the archive records it in any case.
        size_bytes=0,
    )
    if sop_class_uid not in SOP_CLASS_ALLOWLIST:
        return replace(arrival, refusal="SOP class not accepted")
    if metadata.get("Origin") == "DicomProtocol":
        size_bytes, refusal = _validate_dicom_protocol_arrival(tenant=tenant, orthanc_instance_id=orthanc_instance_id)
        if refusal is not None:
            return replace(arrival, refusal=refusal)
        arrival = replace(arrival, size_bytes=size_bytes)
    if tags is None:
        tags = _orthanc_get(tenant, f"/instances/{orthanc_instance_id}/simplified-tags")
        if tags is None:
            return None
    return replace(arrival, tags=tags)


def _arrivals_read(*, tenant: Tenant, orthanc_instance_ids: Sequence[str]) -> dict[str, InstanceArrival | None]:
    """Read a batch's new instances side by side; Orthanc's answers, not our CPU, set the pace of one read."""
    unique = list(dict.fromkeys(orthanc_instance_ids))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(ORTHANC_READ_THREADS, len(unique))) as pool:
        arrivals = pool.map(lambda orthanc_id: _arrival_read(tenant=tenant, orthanc_instance_id=orthanc_id), unique)
        return dict(zip(unique, arrivals, strict=True))


class ByteBudget:
    """At most `limit` bytes held at once by the threads of one process; a request above it waits to go alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(max(size, 0), self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self._used + size <= self.limit)
            self._used += size
        try:
            yield
        finally:
            with self._changed:
                self._used -= size
                self._changed.notify_all()

    @property
    def used(self) -> int:
        with self._changed:
            return self._used


# C-STORE files read whole for validation by the sync's reader threads: a page of whole-slide or tomosynthesis
# images (up to the 2 GB file limit each) must not be read eight at a time into one worker.
_VALIDATION_MEMORY = ByteBudget(VALIDATION_MEMORY_BYTES)


def _validate_dicom_protocol_arrival(*, tenant: Tenant, orthanc_instance_id: str) -> tuple[int, str | None]:
    """C-STORE reaches Orthanc before any platform check, so its instances are validated here.

    Every other path validated the bytes before storing them (Orthanc marks those RestApi).
    Returns the file's size and the reason it is refused (None when it is accepted).
    """
    path = f"/instances/{orthanc_instance_id}/file"
    with orthanc_stream(tenant, path) as response:
        if response is None:
            raise OrthancError(f"Orthanc did not return instance {orthanc_instance_id}: it is gone")
        announced = int(response.headers.get("Content-Length") or VALIDATION_MEMORY_BYTES)
        with _VALIDATION_MEMORY.hold(announced):
            try:
                # One buffer of the announced length; http.client raises IncompleteRead for a short body.
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                raise OrthancError(f"Orthanc broke off instance {orthanc_instance_id}: {error!r}") from error
            result = validate_instance(f"C-STORE {orthanc_instance_id}", data)
            return len(data), result.reason if isinstance(result, Refusal) else None


def _refuse_stored_instance(*, tenant: Tenant, orthanc_instance_id: str, sop_class_uid: str, reason: str) -> None:
    """An instance that reached Orthanc over C-STORE but is not accepted here is removed again.

    Audited before the deletion (on its own connection, so it stays whatever follows): a worker killed between
    the two leaves the removal to the replay of the feed, which audits it again, never a removal unaudited.
    """
    audit_record(
        event_id=AuditEventId.STUDY_DELETED,
        action=AuditAction.DELETE,
        outcome=AuditOutcome.MINOR_FAILURE,
        tenant_id=tenant.pk,
        detail={"reason": reason[:200], "sop_class_uid": sop_class_uid, "orthanc_id": orthanc_instance_id},
    )
    try:
        orthanc_client(tenant).delete(f"/instances/{orthanc_instance_id}").raise_for_status()
    except httpx.HTTPError as error:
        raise OrthancError(f"could not remove refused instance {orthanc_instance_id}: {error}") from error


def _conflicting_copies_remove(*, tenant: Tenant, arrivals: Sequence[InstanceArrival], reason: str) -> None:
    for arrival in arrivals:
        logger.warning(
            "tenant %s: Orthanc instance %s: %s; removing it", tenant.pk, arrival.orthanc_instance_id, reason
        )
        _refuse_stored_instance(
            tenant=tenant,
            orthanc_instance_id=arrival.orthanc_instance_id,
            sop_class_uid=arrival.sop_class_uid,
            reason=reason,
        )


def _series_conflicts_removed(*, tenant: Tenant, arrivals: list[InstanceArrival]) -> list[InstanceArrival]:
    """The arrivals whose series is not indexed (nor earlier in the batch) in another study.

    The others reached Orthanc without the ingest check (C-STORE, two senders at once) and are removed again:
    filed under the series of another study, the viewer would never show them with their own.
    """
    homes: dict[str, str] = dict(
        Series.objects.filter(
            tenant=tenant, series_instance_uid__in={arrival.series_instance_uid for arrival in arrivals}
        ).values_list("series_instance_uid", "study__study_instance_uid")
    )
    kept, conflicting = [], []
    for arrival in arrivals:
        home = homes.setdefault(arrival.series_instance_uid, arrival.study_instance_uid)
        (kept if home == arrival.study_instance_uid else conflicting).append(arrival)
    _conflicting_copies_remove(tenant=tenant, arrivals=conflicting, reason=DUPLICATE_SERIES_REASON)
    return kept


def _patient_upsert(*, tenant: Tenant, arrival: InstanceArrival) -> Patient:
    patient, _ = Patient.objects.get_or_create(tenant=tenant, patient_id=arrival.patient_id)
    patient_fields = {
        "patient_name": _text(arrival.tags, "PatientName", 324),
        "birth_date": _text(arrival.tags, "PatientBirthDate", 8),
        "sex": _text(arrival.tags, "PatientSex", 16),
    }
    if any(getattr(patient, field) != value for field, value in patient_fields.items()):
        Patient.objects.filter(pk=patient.pk).update(**patient_fields)
    return patient


def _study_open(*, tenant: Tenant, patient: Patient, arrival: InstanceArrival, now: datetime) -> Study:
    """The arrival's study, locked until the batch commits: created by its first instance, reopened by a late one."""
    tags = arrival.tags
    study = (
        Study.objects.select_for_update().filter(tenant=tenant, study_instance_uid=arrival.study_instance_uid).first()
    )
    if study is None:
        return Study.objects.create(
            tenant=tenant,
            patient=patient,
            study_instance_uid=arrival.study_instance_uid,
            accession_number=_text(tags, "AccessionNumber", 64),
            study_date=_text(tags, "StudyDate", 8),
            study_time=_text(tags, "StudyTime", 16),
            study_description=_text(tags, "StudyDescription", 128),
            referring_physician=_text(tags, "ReferringPhysicianName", 324),
            requested_procedure_priority=_text(tags, "RequestedProcedurePriority", 16),
            orthanc_study_id=(_orthanc_get(tenant, f"/instances/{arrival.orthanc_instance_id}/study") or {}).get(
                "ID", ""
            ),
            first_received_at=now,
            last_received_at=now,
        )
    if study.status != StudyStatus.RECEIVING:
        # A late instance: the study is open again and will complete as its next version.
        study.status = StudyStatus.RECEIVING
        study.version += 1
        study.completed_at = None
        study.archived_at = None
    return study


def _series_get_or_create(*, tenant: Tenant, study: Study, arrival: InstanceArrival) -> Series:
    series = Series.objects.filter(tenant=tenant, series_instance_uid=arrival.series_instance_uid).first()
    if series is not None:
        return series
    series, _ = Series.objects.get_or_create(
        tenant=tenant,
        series_instance_uid=arrival.series_instance_uid,
        defaults={
            "study": study,
            "modality": _text(arrival.tags, "Modality", 16),
            "body_part": _text(arrival.tags, "BodyPartExamined", 64),
            "series_number": _int(arrival.tags, "SeriesNumber"),
            "series_description": _text(arrival.tags, "SeriesDescription", 128),
            "orthanc_series_id": (_orthanc_get(tenant, f"/instances/{arrival.orthanc_instance_id}/series") or {}).get(
                "ID", ""
            ),
        },
    )
    return series


def instances_index(*, tenant: Tenant, arrivals: Sequence[InstanceArrival]) -> list[Instance]:
    """Index accepted arrivals at once (idempotent by SOP Instance UID); returns the instances new to the index.

    Patients, studies and series are written once per batch, not once per instance, and the counters
    are recounted from the rows, so a replayed batch can never count an instance twice.
    """
    copies_by_uid: dict[str, list[InstanceArrival]] = defaultdict(list)
    for arrival in arrivals:
        copies_by_uid[arrival.sop_instance_uid].append(arrival)
    if not copies_by_uid:
        return []
    indexed = {
        sop_instance_uid: (orthanc_instance_id, (study_instance_uid, series_instance_uid))
        for sop_instance_uid, orthanc_instance_id, study_instance_uid, series_instance_uid in (
            Instance.objects.filter(tenant=tenant, sop_instance_uid__in=list(copies_by_uid)).values_list(
                "sop_instance_uid", "orthanc_instance_id", "study__study_instance_uid", "series__series_instance_uid"
            )
        )
    }
    # Where each UID belongs: where the index has it, else where its first copy in this batch came. A copy
    # elsewhere reached Orthanc without the ingest check (C-STORE, two senders at once): the first copy stays.
    latest: dict[str, InstanceArrival] = {}
    conflicting: list[InstanceArrival] = []
    for sop_instance_uid, copies in copies_by_uid.items():
        home = indexed[sop_instance_uid][1] if sop_instance_uid in indexed else copies[0].hierarchy
        for copy in copies:
            if copy.hierarchy == home:
                # Seen twice in one batch (deleted and stored again): indexed once, at its last copy.
                latest[sop_instance_uid] = copy
            else:
                conflicting.append(copy)
    _conflicting_copies_remove(tenant=tenant, arrivals=conflicting, reason=DUPLICATE_SOP_INSTANCE_REASON)
    for sop_instance_uid, (orthanc_instance_id, _) in indexed.items():
        arrival = latest.get(sop_instance_uid)
        if arrival is not None and orthanc_instance_id != arrival.orthanc_instance_id:
            # Already indexed (a rehydration into a rebuilt Orthanc, a copy under another Patient ID): point at it.
            Instance.objects.filter(tenant=tenant, sop_instance_uid=sop_instance_uid).update(
                orthanc_instance_id=arrival.orthanc_instance_id
            )
    new = _series_conflicts_removed(
        tenant=tenant,
        arrivals=[arrival for sop_instance_uid, arrival in latest.items() if sop_instance_uid not in indexed],
    )
    if not new:
        return []
    now = timezone.now()
    # The last arrival of a patient carries the demographics the index keeps, as when indexing one by one.
    patients = {
        arrival.patient_id: _patient_upsert(tenant=tenant, arrival=arrival)
        for arrival in {arrival.patient_id: arrival for arrival in new}.values()
    }
    by_study: dict[str, list[InstanceArrival]] = defaultdict(list)
    for arrival in new:
        by_study[arrival.study_instance_uid].append(arrival)
    rows: list[Instance] = []
    opened: list[tuple[Study, list[Series]]] = []
    for study_instance_uid, study_arrivals in by_study.items():
        study = _study_open(
            tenant=tenant, patient=patients[study_arrivals[0].patient_id], arrival=study_arrivals[0], now=now
        )
        study_series: dict[str, Series] = {}
        for arrival in study_arrivals:
            series = study_series.get(arrival.series_instance_uid)
            if series is None:
                series = study_series[arrival.series_instance_uid] = _series_get_or_create(
                    tenant=tenant, study=study, arrival=arrival
                )
            rows.append(
                Instance(
                    tenant=tenant,
                    study=study,
                    series=series,
                    sop_instance_uid=arrival.sop_instance_uid,
                    sop_class_uid=arrival.sop_class_uid,
                    instance_number=_int(arrival.tags, "InstanceNumber"),
                    transfer_syntax_uid=arrival.transfer_syntax_uid,
                    size_bytes=arrival.size_bytes,
                    orthanc_instance_id=arrival.orthanc_instance_id,
                    received_at=now,
                    s3_key=archive_key(
                        study_instance_uid=study_instance_uid,
                        series_instance_uid=arrival.series_instance_uid,
                        sop_instance_uid=arrival.sop_instance_uid,
                    ),
                )
            )
        opened.append((study, list(study_series.values())))
    # Only this sync, holding the tenant's cursor, creates instances; ignoring conflicts keeps a batch whole
    # all the same if another writer ever indexed one first.
    Instance.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    _counters_recount(opened=opened, now=now)
    return list(
        Instance.objects.filter(
            tenant=tenant, sop_instance_uid__in=[row.sop_instance_uid for row in rows], archived_at__isnull=True
        ).only("pk", "tenant_id", "study_id", "series_id")
    )


def _counters_recount(*, opened: list[tuple[Study, list[Series]]], now: datetime) -> None:
    """Counters set from the rows themselves (not incremented), under the study locks the batch holds."""
    series_ids = [series.pk for _, study_series in opened for series in study_series]
    Series.objects.filter(pk__in=series_ids).update(
        instance_count=Coalesce(
            Subquery(
                Instance.objects.filter(series_id=OuterRef("pk"))
                .order_by()
                .values("series_id")
                .annotate(total=Count("pk"))
                .values("total")
            ),
            0,
        )
    )
    study_ids = [study.pk for study, _ in opened]
    instance_totals = dict(
        Instance.objects.filter(study_id__in=study_ids)
        .order_by()
        .values("study_id")
        .annotate(total=Count("pk"))
        .values_list("study_id", "total")
    )
    series_totals = dict(
        Series.objects.filter(study_id__in=study_ids)
        .order_by()
        .values("study_id")
        .annotate(total=Count("pk"))
        .values_list("study_id", "total")
    )
    for study, study_series in opened:
        study.modalities = sorted({*study.modalities, *(series.modality for series in study_series)} - {""})
        study.body_parts = sorted({*study.body_parts, *(series.body_part for series in study_series)} - {""})
        study.instance_count = instance_totals.get(study.pk, 0)
        study.series_count = series_totals.get(study.pk, 0)
        study.last_received_at = now
        study.save()


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


def completion_announced(*, completion: StudyCompletion) -> None:
    StudyCompletion.objects.filter(pk=completion.pk, announced_at__isnull=True).update(announced_at=timezone.now())


def completions_unannounced(*, older_than: datetime) -> list[StudyCompletion]:
    """Completions whose event was never handed to the broker (a worker killed after the commit, a broker down)."""
    return list(
        StudyCompletion.objects.filter(announced_at__isnull=True, completed_at__lt=older_than)
        .select_related("study")
        .order_by("pk")[:COMPLETION_SWEEP_LIMIT]
    )


def study_mark_archived_if_done(*, study: Study) -> bool:
    if study.status != StudyStatus.COMPLETE:
        return False
    if Instance.objects.filter(study=study, archived_at__isnull=True).exists():
        return False
    updated = Study.objects.filter(pk=study.pk, status=StudyStatus.COMPLETE, version=study.version).update(
        status=StudyStatus.ARCHIVED, archived_at=timezone.now()
    )
    return bool(updated)


def _changes_apply(*, tenant: Tenant, changes: list[dict], on_archive, on_completed) -> tuple[int, int]:
    """Apply one page of the feed in its order: instances are indexed in runs, each before the StableStudy after it.

    Returns (instances new to the index, studies completed).
    """
    arrivals = _arrivals_read(
        tenant=tenant,
        orthanc_instance_ids=[change["ID"] for change in changes if change["ChangeType"] == "NewInstance"],
    )
    refused: set[str] = set()
    run: list[InstanceArrival] = []
    indexed = completed = 0

    def index_run() -> int:
        new = instances_index(tenant=tenant, arrivals=run)
        run.clear()
        if new:
            transaction.on_commit(lambda: on_archive(new))
        return len(new)

    for change in changes:
        if change["ChangeType"] == "NewInstance":
            arrival = arrivals[change["ID"]]
            if arrival is None or change["ID"] in refused:
                continue
            if arrival.refusal:
                refused.add(arrival.orthanc_instance_id)
                _refuse_stored_instance(
                    tenant=tenant,
                    orthanc_instance_id=arrival.orthanc_instance_id,
                    sop_class_uid=arrival.sop_class_uid,
                    reason=arrival.refusal,
                )
                continue
            run.append(arrival)
        elif change["ChangeType"] == "StableStudy":
            # Completion compares the index with Orthanc: what arrived before this change must be indexed first.
            indexed += index_run()
            completed += bool(study_complete(tenant=tenant, orthanc_study_id=change["ID"], on_completed=on_completed))
    indexed += index_run()
    return indexed, completed


def orthanc_sync(*, tenant: Tenant, on_archive, on_completed, max_batches: int = 50) -> SyncOutcome | None:
    """Index the next changes of a tenant's Orthanc. Returns None when another worker holds the cursor.

    The cursor moves in the same transaction as the index rows it covers, so a crash at any point
    replays from the last committed change and never skips one; indexing is idempotent by SOP
    Instance UID, so a replay never double-counts. `on_archive` receives each batch's new instances
    (a list) once the batch is committed. While changes keep coming the feed is followed, up to
    `max_batches` reads.
    """
    totals = {"changes": 0, "indexed": 0, "completed": 0}
    done = False
    for batch_number in range(max_batches):
        # One transaction per batch: a failure on batch N keeps batches 1..N-1 committed.
        with tenant_context(tenant_ids=[tenant.pk]):
            SyncCursor.objects.get_or_create(tenant=tenant)
            cursor = SyncCursor.objects.select_for_update(skip_locked=True).filter(tenant=tenant).first()
            if cursor is None:
                # Another worker took the cursor while this one waited to follow: it follows now.
                return None if batch_number == 0 else SyncOutcome(done=done, **totals)
            feed = _orthanc_get(
                tenant, "/changes", params=[("since", cursor.last_change), ("limit", CHANGES_PER_BATCH)]
            )
            changes = feed.get("Changes", [])
            if not changes and int(feed.get("Last", cursor.last_change)) < cursor.last_change:
                # Orthanc's change log numbers only grow: a last change below the cursor means its database was
                # created anew (storage restored or reprovisioned). Read the new log from its start; indexing is
                # idempotent by SOP Instance UID, so what the index already holds is not counted twice.
                logger.error(
                    "tenant %s: Orthanc's change log restarted (last %s, cursor %s); reading it from the start",
                    tenant.pk,
                    feed.get("Last"),
                    cursor.last_change,
                )
                cursor.last_change = 0
                cursor.save(update_fields=["last_change"])
                continue
            indexed, completed = _changes_apply(
                tenant=tenant, changes=changes, on_archive=on_archive, on_completed=on_completed
            )
            totals["changes"] += len(changes)
            totals["indexed"] += indexed
            totals["completed"] += completed
            cursor.last_change = feed.get("Last", cursor.last_change)
            cursor.updated_at = timezone.now()
            cursor.save(update_fields=["last_change", "updated_at"])
            done = feed.get("Done", True)
        if done:
            if not changes:
                break
            # A sender may still be sending (C-STORE has no trigger but beat): look again shortly.
            time.sleep(FEED_FOLLOW_INTERVAL_S)
    return SyncOutcome(done=done, **totals)


@dataclass(frozen=True)
class _Upload:
    instance_id: int
    study_id: int
    sha256: str
    size_bytes: int


def _instance_upload(
    *, tenant: Tenant, client: BaseClient, instance_id: int, study_id: int, orthanc_instance_id: str, key: str
) -> _Upload:
    """Stream one instance from Orthanc while hashing it, then PUT it with the SHA-256 that S3 must acknowledge."""
    hasher = hashlib.sha256()
    with tempfile.SpooledTemporaryFile(max_size=ARCHIVE_SPOOL_BYTES) as spool:
        try:
            with orthanc_stream(tenant, f"/instances/{orthanc_instance_id}/file") as response:
                if response is None:
                    raise ArchiveError(f"instance {instance_id}: Orthanc no longer holds the file")
                for chunk in response.iter_raw(ARCHIVE_READ_CHUNK_BYTES):
                    hasher.update(chunk)
                    spool.write(chunk)
        except (OrthancError, OSError, http.client.HTTPException) as error:
            raise ArchiveError(f"instance {instance_id}: Orthanc did not return the file: {error!r}") from error
        size = spool.tell()
        spool.seek(0)
        checksum = base64.b64encode(hasher.digest()).decode()
        try:
            stored = client.put_object(
                Bucket=tenant.s3_bucket,
                Key=key,
                Body=spool,
                ContentLength=size,
                ChecksumSHA256=checksum,
                ContentType="application/dicom",
            )
            confirmed, confirmed_size = stored.get("ChecksumSHA256"), size
            if confirmed is None:
                # AWS S3 checks the checksum on PUT and echoes it; an S3 server that does not echo it
                # (rclone serve s3) is asked for the object's checksum instead.
                head = client.head_object(Bucket=tenant.s3_bucket, Key=key, ChecksumMode="ENABLED")
                confirmed, confirmed_size = head.get("ChecksumSHA256"), head.get("ContentLength")
        except (BotoCoreError, ClientError) as error:
            raise ArchiveError(f"instance {instance_id}: S3 did not store it: {error}") from error
    if confirmed != checksum or confirmed_size != size:
        raise ArchiveError(f"instance {instance_id}: S3 did not confirm the SHA-256 checksum")
    return _Upload(instance_id=instance_id, study_id=study_id, sha256=hasher.hexdigest(), size_bytes=size)


def instances_archive(*, tenant: Tenant, instance_ids: Sequence[int]) -> int:
    """Copy instances from Orthanc to the tenant's bucket; each is marked archived once S3 confirmed our SHA-256.

    Safe to run twice: archived instances are skipped. The uploads run side by side outside any
    transaction; what S3 confirmed is marked in one statement, then what failed is raised as one
    ArchiveError, so that a retry redoes only those. Returns how many were archived now.
    """
    with tenant_context(tenant_ids=[tenant.pk]):
        pending = list(
            Instance.objects.filter(pk__in=list(instance_ids), archived_at__isnull=True)
            .order_by("pk")
            .values_list("pk", "study_id", "orthanc_instance_id", "s3_key")
        )
    if not pending:
        return 0
    client = s3_client()
    uploads: list[_Upload] = []
    failures: list[ArchiveError] = []
    with ThreadPoolExecutor(max_workers=min(ARCHIVE_UPLOAD_THREADS, len(pending))) as pool:
        futures = [
            pool.submit(
                _instance_upload,
                tenant=tenant,
                client=client,
                instance_id=instance_id,
                study_id=study_id,
                orthanc_instance_id=orthanc_instance_id,
                key=key,
            )
            for instance_id, study_id, orthanc_instance_id, key in pending
        ]
        for future in as_completed(futures):
            try:
                uploads.append(future.result())
            except ArchiveError as error:
                failures.append(error)
    if uploads:
        _instances_mark_archived(tenant=tenant, uploads=uploads)
    if failures:
        raise ArchiveError(f"{len(failures)} of {len(pending)} instances not archived, first: {failures[0]}")
    return len(uploads)


def _instances_mark_archived(*, tenant: Tenant, uploads: list[_Upload]) -> None:
    with tenant_context(tenant_ids=[tenant.pk]), connection.cursor() as cursor:
        # One statement for the batch, with the same tenant filter as the scoped manager (RLS applies too).
        # Django's bulk_update writes a CASE per row and field: 25-40 ms of CPU per 50 instances, more
        # than their uploads' bookkeeping is worth. Only unarchived rows: a concurrent run keeps the first mark.
        cursor.execute(
            "UPDATE studies_instance AS instance"
            " SET sha256 = upload.sha256, size_bytes = upload.size_bytes, archived_at = %s"
            " FROM unnest(%s::bigint[], %s::varchar[], %s::bigint[]) AS upload(id, sha256, size_bytes)"
            " WHERE instance.id = upload.id AND instance.tenant_id = %s AND instance.archived_at IS NULL",
            [
                timezone.now(),
                [upload.instance_id for upload in uploads],
                [upload.sha256 for upload in uploads],
                [upload.size_bytes for upload in uploads],
                tenant.pk,
            ],
        )
        # Locked after the instances are marked (and in pk order): of two batches of one study finishing
        # together, the second to get the lock sees the first one's marks, so the study is not left behind.
        studies = Study.objects.select_for_update().filter(pk__in={upload.study_id for upload in uploads})
        for study in studies.order_by("pk"):
            study_mark_archived_if_done(study=study)


def instances_awaiting_archive(*, older_than: datetime):
    return (
        Instance.objects.filter(archived_at__isnull=True, received_at__lt=older_than)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def archive_object_sha256(*, tenant: Tenant, key: str) -> str:
    hasher = hashlib.sha256()
    try:
        body = s3_client().get_object(Bucket=tenant.s3_bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            hasher.update(chunk)
    except (BotoCoreError, ClientError, OSError) as error:
        # Reading the body can fail too (a timeout, a connection cut mid-object): one unreadable object is
        # reported with the others, it does not end the check.
        raise ArchiveError(f"{key}: {error}") from error
    return hasher.hexdigest()


def study_evict(*, tenant: Tenant, study: Study) -> bool:
    """Remove an archived study from the hot tier; its instances stay in S3. Call in the tenant's context.

    Under the study's row lock (the sync waits to reopen it), and only when Orthanc holds no more instances
    than the index (a late arrival not yet synced would be lost with a whole-study delete): each archived
    instance is deleted by its own Orthanc id, so one that arrives meanwhile stays in Orthanc to be synced.
    """
    with transaction.atomic():
        study = Study.objects.select_for_update().filter(pk=study.pk).first()
        if study is None or study.status != StudyStatus.ARCHIVED or study.evicted_at is not None:
            return False
        statistics = _orthanc_get(tenant, f"/studies/{study.orthanc_study_id}/statistics") or {}
        if int(statistics.get("CountInstances", 0)) > study.instance_count:
            logger.info("tenant %s: study %s not evicted: Orthanc holds instances not indexed yet", tenant.pk, study.pk)
            return False
        archived = Instance.objects.filter(study=study, archived_at__isnull=False).exclude(orthanc_instance_id="")
        if archived.count() != study.instance_count:
            return False
        failure = None
        try:
            for orthanc_instance_id in archived.values_list("orthanc_instance_id", flat=True):
                _orthanc_delete(tenant, f"/instances/{orthanc_instance_id}", what=f"study {study.pk}")
        except OrthancError as error:
            # Some instances may be gone already: marked evicted all the same, so that a reader brings the study
            # back from S3 (what Orthanc still holds is stored again as already there) instead of a 404.
            failure = error
        Study.objects.filter(pk=study.pk).update(evicted_at=timezone.now())
        audit_record(
            event_id=AuditEventId.STUDY_DELETED,
            action=AuditAction.DELETE,
            tenant_id=tenant.pk,
            study_instance_uids=[study.study_instance_uid],
            detail={"operation": "evict_to_archive", "instances": study.instance_count, "complete": failure is None},
        )
    if failure is not None:
        raise failure
    return True


def _orthanc_delete(tenant: Tenant, path: str, *, what: str) -> None:
    """DELETE in the tenant's Orthanc; what is already gone counts as deleted."""
    try:
        orthanc_client(tenant).delete(path).raise_for_status()
    except httpx.HTTPStatusError as error:
        if error.response.status_code != 404:
            raise OrthancError(f"{what}: Orthanc refused the deletion: {error}") from error
    except httpx.HTTPError as error:
        raise OrthancError(f"{what}: Orthanc did not answer: {error}") from error


def study_rehydrate(*, tenant: Tenant, study: Study) -> int:
    """Bring an evicted study back from S3 into the tenant's Orthanc, checking every hash."""
    # The row lock makes concurrent readers of an evicted study wait for one restore.
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.evicted_at is None:
        return 0
    client = s3_client()
    restored = 0
    # An instance not archived yet arrived after the eviction and is still in Orthanc (it has no S3 copy yet).
    for instance in Instance.objects.filter(study=study, archived_at__isnull=False).order_by("pk"):
        try:
            data = client.get_object(Bucket=tenant.s3_bucket, Key=instance.s3_key)["Body"].read()
        except (BotoCoreError, ClientError) as error:
            raise ArchiveError(f"instance {instance.pk}: not readable from S3: {error}") from error
        if hashlib.sha256(data).hexdigest() != instance.sha256:
            raise ArchiveError(f"instance {instance.pk}: the archived copy does not match its SHA-256")
        try:
            orthanc_instance_id, _ = orthanc_store(tenant, data)
        except OrthancError as error:
            raise OrthancError(f"instance {instance.pk}: Orthanc did not take it back: {error}") from error
        Instance.objects.filter(pk=instance.pk).update(orthanc_instance_id=orthanc_instance_id)
        restored += 1
    study_id = (_orthanc_get(tenant, f"/instances/{orthanc_instance_id}/study") or {}).get("ID", "") if restored else ""
    Study.objects.filter(pk=study.pk).update(evicted_at=None, orthanc_study_id=study_id or study.orthanc_study_id)
    audit_record(
        event_id=AuditEventId.IMPORT,
        action=AuditAction.CREATE,
        tenant_id=tenant.pk,
        study_instance_uids=[study.study_instance_uid],
        detail={"operation": "rehydrate_from_archive", "instances": restored},
    )
    return restored
