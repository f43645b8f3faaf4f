"""Top-level URL map: pages, health endpoints, the versioned REST API and its schema."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from saas.accounts.views import login_view, logout_view
from saas.audit.apis import AuditEventListApi
from saas.dicomweb.views import dicomweb_studies, stow_study
from saas.portal import health
from saas.portal.views import home, tenant_switch
from tenants.apis import ApiTokenViewSet, MeApi

router = SimpleRouter()
router.register("api-tokens", ApiTokenViewSet, basename="api-token")

api_v1 = [
    path("me/", MeApi.as_view(), name="me"),
    path("audit/events/", AuditEventListApi.as_view(), name="audit-events"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    *router.urls,
]

urlpatterns = [
    path("", home, name="home"),
    path("login/", login_view, name="login"),
    path("logout/", logout_view, name="logout"),
    path("tenants/switch/", tenant_switch, name="tenant-switch"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(api_v1)),
    path("dicomweb/<slug:slug>/studies", dicomweb_studies, name="dicomweb-studies"),
    path("dicomweb/<slug:slug>/studies/<str:study_instance_uid>", stow_study, name="stow-study"),
]
