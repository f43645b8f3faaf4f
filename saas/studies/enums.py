"""Enumerations of the studies domain."""

from django.db import models


class StudyStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    COMPLETE = "complete", "Complete"
    ARCHIVED = "archived", "Archived"


class IngestPath(models.TextChoices):
    UPLOAD = "upload", "Browser upload"
    STOW = "stow", "STOW-RS"
    CSTORE = "cstore", "DICOM C-STORE"
    GATEWAY = "gateway", "Edge gateway"


class UploadStatus(models.TextChoices):
    OPEN = "open", "Receiving"
    RECEIVED = "received", "Received"
    # A batch only: closed to new files and chunks, its files being validated and stored by a worker.
    FINISHING = "finishing", "Finishing"
    PROCESSED = "processed", "Processed"


class StudyAIStatus(models.TextChoices):
    """The summary of a study's AI analyses for its current version (written by saas.ai)."""

    NONE = "", "Not analysed"
    PENDING = "pending", "AI pending"
    DONE = "done", "AI done"
    FAILED = "failed", "AI failed"
    NOT_APPLICABLE = "not_applicable", "No AI model applies"
