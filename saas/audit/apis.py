"""REST API of the audit log: a clinic administrator reads their clinic's chain."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView

from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.models import AuditEvent
from saas.audit.selectors import audit_events_of_tenant
from saas.audit.services import audit_record
from tenants.permissions import IsClinicAdmin


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "seq",
            "event_id",
            "action",
            "outcome",
            "actor_id",
            "actor_username",
            "actor_role",
            "token_id",
            "source_ip",
            "patient_ids",
            "study_instance_uids",
            "detail",
            "occurred_at",
            "hash",
        ]
        read_only_fields = fields


@extend_schema(summary="The active clinic's audit events, newest first")
class AuditEventListApi(ListAPIView):
    serializer_class = AuditEventSerializer
    permission_classes = [IsClinicAdmin]

    def get_queryset(self):
        return audit_events_of_tenant(actor=self.request.actor)

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        actor = request.actor
        audit_record(
            event_id=AuditEventId.AUDIT_LOG_USED,
            action=AuditAction.READ,
            tenant_id=actor.active_tenant.pk,
            actor=actor,
            detail={"rows": len(response.data.get("results", []))},
        )
        return response
