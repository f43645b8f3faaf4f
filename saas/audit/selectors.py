"""Reads of the audit log (each read is itself audited as 110101 by the caller)."""

from django.db.models import QuerySet

from saas.audit.models import AuditEvent
from tenants.actors import Actor


def audit_events_of_tenant(*, actor: Actor) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(tenant_id=actor.active_tenant.pk).order_by("-seq")
