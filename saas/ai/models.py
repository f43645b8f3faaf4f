"""AI analyses of study versions and the findings they produced."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from saas.ai.enums import AnalysisStatus
from saas.studies.models import Study
from tenants.scoping import TenantScopedModel


class Analysis(TenantScopedModel):
    """One model version run on one study version: dispatched once, recorded once (by idempotency key)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="ai_analyses")
    study_version = models.PositiveIntegerField()
    model_name = models.CharField(max_length=64)
    model_version = models.CharField(max_length=64)
    pool = models.CharField(max_length=64)
    # "<study version key>|<model>|<model version>" (inference_workers.messages.idempotency_key).
    idempotency_key = models.CharField(max_length=300)
    # The series the input volume was built from (the SEG and parametric map reference it).
    series_instance_uid = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=AnalysisStatus.choices, default=AnalysisStatus.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    input_key = models.CharField(max_length=300, blank=True)
    # SOP Instance UIDs of the input, in the volume's slice order: a finding's slice index maps back here.
    input_instances = models.JSONField(default=list, blank=True)
    # Where the input's first voxel lies in the series' grid (slice, row, column): CT inputs are cut to the body.
    input_offset = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Seconds per stage as the worker measured them (fetch, preprocess, forward, postprocess, write_back).
    timings = models.JSONField(default=dict, blank=True)
    device = models.CharField(max_length=16, blank=True)
    # Image-level probabilities by label (a classifier's answer, with or without a finding).
    scores = models.JSONField(default=dict, blank=True)
    critical = models.BooleanField(default=False)
    # The DICOM objects built from the result and stored in the tenant's Orthanc (and S3).
    seg_sop_instance_uid = models.CharField(max_length=64, blank=True)
    sr_sop_instance_uid = models.CharField(max_length=64, blank=True)
    heatmap_sop_instance_uid = models.CharField(max_length=64, blank=True)

    class Meta(TenantScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="analysis_once_per_model_version")
        ]
        indexes = [models.Index(fields=["tenant", "status"])]

    def __str__(self) -> str:
        return f"analysis {self.pk}"


class Finding(TenantScopedModel):
    """One finding of an analysis, located on the analysed series (a slice the viewer can jump to)."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="findings")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="ai_findings")
    label = models.CharField(max_length=64)
    confidence = models.FloatField()
    # Patient coordinates (mm) of the centre, its longest diameter and volume (0 for 2D findings).
    centre_mm = ArrayField(models.FloatField(), size=3)
    diameter_mm = models.FloatField()
    volume_ml = models.FloatField(default=0.0)
    critical = models.BooleanField(default=False)
    series_instance_uid = models.CharField(max_length=64, blank=True)
    # The instance (slice) nearest to the centre, and the segment number in the SEG (0: none).
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    segment_number = models.PositiveIntegerField(default=0)

    class Meta(TenantScopedModel.Meta):
        indexes = [models.Index(fields=["tenant", "study"])]

    def __str__(self) -> str:
        return f"finding {self.pk}"
