"""The first wall cannot be replaced by a subclass: managers, viewsets and the system check."""

import pytest
from django.core import checks

from tenants.models import ApiToken
from tenants.scoping import TenantScopedManager
from tenants.viewsets import TenantScopedViewSet


def test_a_manager_that_replaces_get_queryset_is_refused():
    with pytest.raises(TypeError, match="tenant scoping cannot be replaced"):

        class LeakyManager(TenantScopedManager):
            def get_queryset(self):
                return super().dangerously_unscoped()


def test_a_viewset_that_replaces_get_queryset_is_refused():
    with pytest.raises(TypeError, match="tenant scoping lives in TenantScopedViewSet"):

        class LeakyViewSet(TenantScopedViewSet):
            model = ApiToken

            def get_queryset(self):
                return ApiToken.objects.dangerously_unscoped()


def test_a_viewset_over_an_unscoped_model_is_refused():
    from saas.accounts.models import User

    with pytest.raises(TypeError, match="is not tenant-scoped"):

        class UserViewSet(TenantScopedViewSet):
            model = User


def test_every_model_with_tenant_data_uses_scoped_managers():
    errors = [message for message in checks.run_checks() if message.id == "tenants.E001"]
    assert errors == []
