"""REST API of the AI domain: the clinic's analyses (failed ones included) and a retry for failures."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis
from saas.ai.services import analysis_retry
from tenants.permissions import IsClinicAdmin
from tenants.viewsets import TenantScopedViewSet


class AnalysisSerializer(serializers.ModelSerializer):
    study_instance_uid = serializers.CharField(source="study.study_instance_uid", read_only=True)

    class Meta:
        model = Analysis
        fields = [
            "id",
            "study_instance_uid",
            "study_version",
            "model_name",
            "model_version",
            "pool",
            "status",
            "error",
            "attempts",
            "critical",
            "created_at",
            "dispatched_at",
            "finished_at",
            "timings",
            "scores",
            "device",
            "seg_sop_instance_uid",
            "sr_sop_instance_uid",
            "heatmap_sop_instance_uid",
        ]
        read_only_fields = fields


ANALYSIS_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The analysis id.")


@extend_schema_view(retrieve=extend_schema(parameters=[ANALYSIS_ID]))
class AnalysisViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """AI analyses of the active clinic's studies, newest first; `?status=failed` lists what needs attention."""

    model = Analysis
    serializer_class = AnalysisSerializer
    permission_classes = [IsClinicAdmin]

    def filter_rows(self, rows):
        rows = rows.filter(tenant_id=self.request.actor.active_tenant.pk).select_related("study")
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in AnalysisStatus.values:
                raise ValidationError({"status": [f"must be one of {', '.join(AnalysisStatus.values)}"]})
            rows = rows.filter(status=wanted)
        return rows.order_by("-created_at")

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=AnalysisStatus.values, required=False)],
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={202: AnalysisSerializer}, parameters=[ANALYSIS_ID])
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Send a failed analysis again: answered 202 with it pending; a worker builds the input and sends the job."""
        analysis = self.get_object()
        try:
            analysis = analysis_retry(tenant=request.actor.active_tenant, analysis=analysis, actor=request.actor)
        except ValueError as error:
            raise ValidationError({"status": [str(error)]}) from error
        return Response(AnalysisSerializer(analysis).data, status=status.HTTP_202_ACCEPTED)
