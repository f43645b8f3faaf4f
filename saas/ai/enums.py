"""Enumerations of the AI domain."""

from django.db import models


class AnalysisStatus(models.TextChoices):
    # Input being built and uploaded; then waiting in (or running from) the model's pool queue.
    PENDING = "pending", "Pending"
    DISPATCHED = "dispatched", "Dispatched"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
