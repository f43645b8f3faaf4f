"""REST API of the tenants domain: who am I, and a clinic's API tokens."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.enums import TokenScope
from tenants.models import ApiToken, Modality
from tenants.permissions import IsClinicAdmin
from tenants.services import api_token_create, api_token_revoke, modality_register, modality_remove
from tenants.viewsets import TenantScopedViewSet


class TenantRoleSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    is_platform_admin = serializers.BooleanField()
    active_tenant = serializers.CharField(allow_null=True)
    active_role = serializers.CharField()
    tenants = TenantRoleSerializer(many=True)
    scopes = serializers.ListField(child=serializers.CharField())


class MeApi(APIView):
    @extend_schema(responses=MeSerializer, summary="The signed-in person or token, and their clinics")
    def get(self, request):
        actor = request.actor
        return Response(
            MeSerializer(
                {
                    "username": actor.username,
                    "is_platform_admin": actor.is_platform_admin,
                    "active_tenant": actor.active_tenant.slug if actor.active_tenant else None,
                    "active_role": actor.active_role,
                    "tenants": [
                        {"slug": tenant.slug, "name": tenant.name, "roles": sorted(actor.roles_in(tenant.pk))}
                        for tenant in actor.tenants
                    ],
                    "scopes": sorted(actor.scopes),
                }
            ).data
        )


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=TokenScope.choices), allow_empty=False)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=730, default=90)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="The secret, shown this once only.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """A clinic administrator's API tokens for gateways and integrations."""

    model = ApiToken
    serializer_class = ApiTokenSerializer
    permission_classes = [IsClinicAdmin]

    def filter_rows(self, rows):
        return rows.filter(tenant_id=self.request.actor.active_tenant.pk)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def create(self, request):
        payload = ApiTokenCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            token, raw = api_token_create(
                tenant=request.actor.active_tenant,
                name=payload.validated_data["name"],
                scopes=payload.validated_data["scopes"],
                expires_in=timedelta(days=payload.validated_data["expires_in_days"]),
                actor=request.actor,
            )
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from error
        body = ApiTokenSerializer(token).data | {"token": raw}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        api_token_revoke(token=self.get_object(), actor=request.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModalitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Modality
        fields = ["id", "name", "ae_title", "host", "port", "created_at"]
        read_only_fields = ["id", "created_at"]


class ModalityViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Devices allowed to send to the active clinic's AE title by C-STORE."""

    model = Modality
    serializer_class = ModalitySerializer
    permission_classes = [IsClinicAdmin]

    def filter_rows(self, rows):
        return rows.filter(tenant_id=self.request.actor.active_tenant.pk)

    @extend_schema(request=ModalitySerializer, responses={201: ModalitySerializer})
    def create(self, request):
        payload = ModalitySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            modality = modality_register(
                tenant=request.actor.active_tenant, actor=request.actor, **payload.validated_data
            )
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from error
        return Response(ModalitySerializer(modality).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        modality_remove(modality=self.get_object(), actor=request.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
