"""Top-level URL map: pages, health endpoints, the versioned REST API and its schema."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from saas.accounts.views import login_view, logout_view
from saas.ai.apis import AnalysisViewSet
from saas.audit.apis import AuditEventListApi
from saas.dicomweb import converters
from saas.dicomweb.views import dicomweb_studies, stow_study
from saas.portal import health
from saas.portal.viewer import viewer_findings, viewer_page
from saas.portal.views import home, study_list, tenant_switch
from saas.studies.upload_apis import UploadBatchViewSet, UploadFileViewSet
from saas.studies.views import upload_page
from tenants.apis import ApiTokenViewSet, MeApi, ModalityViewSet

router = SimpleRouter()
router.register("api-tokens", ApiTokenViewSet, basename="api-token")
router.register("modalities", ModalityViewSet, basename="modality")
router.register("ai/analyses", AnalysisViewSet, basename="ai-analysis")

api_v1 = [
    path("me/", MeApi.as_view(), name="me"),
    path("audit/events/", AuditEventListApi.as_view(), name="audit-events"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    *router.urls,
    path("uploads/", UploadBatchViewSet.as_view({"post": "create"}), name="upload-batches"),
    path("uploads/<uuid:batch_id>", UploadBatchViewSet.as_view({"get": "retrieve"}), name="upload-batch"),
    path("uploads/<uuid:batch_id>/files/", UploadBatchViewSet.as_view({"post": "add_file"}), name="upload-files"),
    path(
        "uploads/<uuid:batch_id>/files/<uuid:file_id>",
        UploadFileViewSet.as_view({"get": "retrieve", "put": "update"}),
        name="upload-file",
    ),
    path("uploads/<uuid:batch_id>/finish", UploadBatchViewSet.as_view({"post": "finish"}), name="upload-finish"),
]

converters.register()

urlpatterns = [
    path("", home, name="home"),
    path("login/", login_view, name="login"),
    path("logout/", logout_view, name="logout"),
    path("tenants/switch/", tenant_switch, name="tenant-switch"),
    path("upload/", upload_page, name="upload"),
    path("studies/", study_list, name="study-list"),
    path("viewer/<slug:slug>/<str:study_instance_uid>/", viewer_page, name="viewer"),
    path("viewer/<slug:slug>/<str:study_instance_uid>/findings.json", viewer_findings, name="viewer-findings"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(api_v1)),
    path("dicomweb/<slug:slug>/studies", dicomweb_studies, name="dicomweb-studies"),
    path("dicomweb/<slug:slug>/studies/<uid:study_instance_uid>", stow_study, name="stow-study"),
    path("dicomweb/<slug:slug>/", include("saas.dicomweb.urls")),
]
