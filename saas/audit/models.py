"""AuditEvent: one row of a per-tenant SHA-256 hash chain; the database refuses to change it."""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from tenants.scoping import TenantScopedManager


class AuditEvent(models.Model):
    """Plain ids rather than foreign keys: an audit row must outlive the user, token or tenant it names."""

    tenant_platform_rows = True

    # NULL is the platform chain (failed sign-ins of unknown users, platform administration).
    tenant_id = models.BigIntegerField(null=True)
    seq = models.BigIntegerField()
    event_id = models.IntegerField(choices=AuditEventId.choices)
    action = models.CharField(max_length=1, choices=AuditAction.choices)
    outcome = models.SmallIntegerField(choices=AuditOutcome.choices)
    actor_id = models.BigIntegerField(null=True)
    actor_username = models.CharField(max_length=150, blank=True)
    actor_role = models.CharField(max_length=32, blank=True)
    token_id = models.BigIntegerField(null=True)
    source_ip = models.GenericIPAddressField(null=True)
    patient_ids = ArrayField(models.CharField(max_length=64), default=list)
    study_instance_uids = ArrayField(models.CharField(max_length=64), default=list)
    # Free-form, identifier-only context (counts, reasons); never names or other patient data.
    detail = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = TenantScopedManager()

    class Meta:
        base_manager_name = "objects"
        ordering = ["tenant_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["tenant_id", "seq"], name="audit_one_seq_per_chain", nulls_distinct=False)
        ]
        indexes = [models.Index(fields=["tenant_id", "occurred_at"])]

    def __str__(self) -> str:
        return f"audit {self.tenant_id or 'platform'}#{self.seq} {self.event_id}"
