"""DICOM PS3.15 A.5 audit event ids, actions and outcomes."""

from django.db import models


class AuditEventId(models.IntegerChoices):
    APPLICATION_ACTIVITY = 110100, "Application Activity"
    AUDIT_LOG_USED = 110101, "Audit Log Used"
    BEGIN_TRANSFERRING = 110102, "Begin Transferring DICOM Instances"
    INSTANCES_ACCESSED = 110103, "DICOM Instances Accessed"
    INSTANCES_TRANSFERRED = 110104, "DICOM Instances Transferred"
    STUDY_DELETED = 110105, "DICOM Study Deleted"
    EXPORT = 110106, "Export"
    IMPORT = 110107, "Import"
    QUERY = 110112, "Query"
    SECURITY_ALERT = 110113, "Security Alert"
    USER_AUTHENTICATION = 110114, "User Authentication"


class AuditAction(models.TextChoices):
    CREATE = "C", "Create"
    READ = "R", "Read"
    UPDATE = "U", "Update"
    DELETE = "D", "Delete"
    EXECUTE = "E", "Execute"


class AuditOutcome(models.IntegerChoices):
    SUCCESS = 0, "Success"
    MINOR_FAILURE = 4, "Minor failure"
    SERIOUS_FAILURE = 8, "Serious failure"
    MAJOR_FAILURE = 12, "Major failure"
