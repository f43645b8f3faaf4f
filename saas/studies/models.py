"""The study index: patients, studies, series and instances of each clinic, and the sync cursor."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from saas.studies.enums import StudyAIStatus, StudyStatus, UploadStatus
from tenants.scoping import TenantScopedModel


class Patient(TenantScopedModel):
    patient_id = models.CharField(max_length=64)
    patient_name = models.CharField(max_length=324, blank=True)
    birth_date = models.CharField(max_length=8, blank=True)
    sex = models.CharField(max_length=16, blank=True)

    class Meta(TenantScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "patient_id"], name="patient_unique_per_tenant")]
        indexes = [models.Index(fields=["tenant", "patient_name"])]

    def __str__(self) -> str:
        return f"patient {self.pk}"


class Study(TenantScopedModel):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    study_instance_uid = models.CharField(max_length=64)
    accession_number = models.CharField(max_length=64, blank=True)
    study_date = models.CharField(max_length=8, blank=True)
    study_time = models.CharField(max_length=16, blank=True)
    study_description = models.CharField(max_length=128, blank=True)
    referring_physician = models.CharField(max_length=324, blank=True)
    requested_procedure_priority = models.CharField(max_length=16, blank=True)
    modalities = ArrayField(models.CharField(max_length=16), default=list)
    body_parts = ArrayField(models.CharField(max_length=64), default=list)
    series_count = models.PositiveIntegerField(default=0)
    instance_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=StudyStatus.choices, default=StudyStatus.RECEIVING)
    # Bumped when instances arrive after completion: `study_completed` fires once per version.
    version = models.PositiveIntegerField(default=1)
    orthanc_study_id = models.CharField(max_length=64, blank=True)
    first_received_at = models.DateTimeField(default=timezone.now)
    last_received_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    # Removed from the hot tier (Orthanc); every instance stays in S3 and is brought back on read.
    evicted_at = models.DateTimeField(null=True, blank=True)
    # Written by saas.ai for the current version: the worklist puts ai_critical studies first.
    ai_status = models.CharField(max_length=16, choices=StudyAIStatus.choices, default=StudyAIStatus.NONE, blank=True)
    ai_critical = models.BooleanField(default=False)
    ai_critical_reason = models.CharField(max_length=255, blank=True)

    class Meta(TenantScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "study_instance_uid"], name="study_unique_per_tenant")]
        indexes = [
            models.Index(fields=["tenant", "status"]),
            models.Index(fields=["tenant", "ai_critical"]),
            models.Index(fields=["tenant", "study_date"]),
            models.Index(fields=["tenant", "accession_number"]),
        ]

    def __str__(self) -> str:
        return f"study {self.pk}"


class Series(TenantScopedModel):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    series_number = models.IntegerField(null=True)
    series_description = models.CharField(max_length=128, blank=True)
    instance_count = models.PositiveIntegerField(default=0)
    orthanc_series_id = models.CharField(max_length=64, blank=True)

    class Meta(TenantScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "series_instance_uid"], name="series_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return f"series {self.pk}"


class Instance(TenantScopedModel):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="instances")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    orthanc_instance_id = models.CharField(max_length=64, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    # Hex SHA-256 computed by the platform from Orthanc's copy; the archive is checked against it.
    sha256 = models.CharField(max_length=64, blank=True)
    s3_key = models.CharField(max_length=300, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "sop_instance_uid"], name="instance_unique_per_tenant")
        ]
        indexes = [models.Index(fields=["tenant", "archived_at"])]

    def __str__(self) -> str:
        return f"instance {self.pk}"


class StudyCompletion(TenantScopedModel):
    """One row per (study, version): the durable form of the `study_completed` event."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="completions")
    version = models.PositiveIntegerField()
    completed_at = models.DateTimeField(default=timezone.now)
    instance_count = models.PositiveIntegerField()
    # When the event was handed to the broker; until then the beat sweep hands it on again (an outbox: the row
    # commits with the sync's batch, the sending follows the commit and can be lost with a killed worker).
    announced_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["study", "version"], name="completion_once_per_version")]

    def __str__(self) -> str:
        return f"completion {self.study_id} v{self.version}"


class SyncCursor(TenantScopedModel):
    """How far this clinic's Orthanc /changes feed has been indexed."""

    last_change = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant"], name="one_cursor_per_tenant")]

    def __str__(self) -> str:
        return f"cursor {self.tenant_id}@{self.last_change}"


class UploadBatch(TenantScopedModel):
    """One drop of files, folders or archives on the upload page; summarised per study when finished."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=UploadStatus.choices, default=UploadStatus.OPEN)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    # Progress of finishing, polled by the page: files processed, and entries checked in the file being processed
    # (one .zip may hold thousands). progress_at is the worker's last sign of life: a batch whose worker died is
    # queued again once it is old (uploads.upload_batches_requeue_stalled).
    files_total = models.PositiveIntegerField(default=0)
    files_done = models.PositiveIntegerField(default=0)
    entries_done = models.PositiveIntegerField(default=0)
    progress_at = models.DateTimeField(null=True, blank=True)
    # Who asked to finish, kept so the worker audits the transfer as that person or token, not as the system.
    finished_by_token = models.ForeignKey(
        "tenants.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    finished_by_role = models.CharField(max_length=32, blank=True)
    finished_from_ip = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self) -> str:
        return f"upload batch {self.pk}"


class UploadFile(TenantScopedModel):
    """One file of a batch, received in chunks so a dropped connection resumes where it stopped."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    batch = models.ForeignKey(UploadBatch, on_delete=models.CASCADE, related_name="files")
    # The path the browser gave (folder drops keep their relative paths), for the summary only.
    name = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    received = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=UploadStatus.choices, default=UploadStatus.OPEN)
    # Per contained file: {"file", "status", "reason", "study_instance_uid", "sop_instance_uid"}, plus for a stored
    # one the summary's tags ("patient_id", "patient_name", "study_date", "study_description") and for a refused
    # one its "refusal_kind": the batch's summary and audit are built from these once every file is processed.
    outcomes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"upload file {self.pk}"
