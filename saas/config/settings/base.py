"""Settings shared by every environment, read from the process environment."""

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from saas.studies.validation import ValidationLimits

BASE_DIR = Path(__file__).resolve().parents[3]

env = environ.Env()

VAR_DIR = Path(env.str("READROOM_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = False
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "tenants",
    "saas.accounts",
    "saas.audit",
    "saas.portal",
    "saas.dicomweb",
    "saas.studies",
    "saas.ai",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After authentication: resolves the actor and opens the request's tenant-scoped transaction.
    "tenants.middleware.TenantContextMiddleware",
    # Last, so a lockout answers before any view runs.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "saas.config.urls"
WSGI_APPLICATION = "saas.config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "saas" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "saas.portal.context_processors.actor",
            ],
        },
    },
]


def _database(url_var: str, default: str) -> dict:
    config = env.db_url(url_var, default=default)
    config["ENGINE"] = "django.db.backends.postgresql"
    # The tenant context lives in transaction-local settings, so connections can be reused safely.
    config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    config["CONN_HEALTH_CHECKS"] = True
    return config


# `default` is the application role (owns nothing, no BYPASSRLS); `owner` is used only to migrate.
DATABASES = {
    "default": _database("DATABASE_URL", "postgresql://readroom_app@127.0.0.1:5432/readroom"),
    "owner": _database("DATABASE_OWNER_URL", "postgresql://readroom_owner@127.0.0.1:5432/readroom"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# A radiologist's workstation left unattended must not stay signed in overnight.
SESSION_COOKIE_AGE = int(timedelta(hours=12).total_seconds())
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Brute-force protection: lock a username from one address after repeated failures.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_VERBOSE = False
# The lockout counts per username and client address: the client's, also behind nginx (see client_ip).
AXES_CLIENT_IP_CALLABLE = "tenants.middleware.client_ip"
# Proxies (addresses or CIDR networks) whose X-Forwarded-For is believed: nginx or the load balancer in front of
# gunicorn. Empty: the TCP peer is the client (direct access, development).
READROOM_TRUSTED_PROXIES = env.list("READROOM_TRUSTED_PROXIES", default=[])
for _proxy in READROOM_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"READROOM_TRUSTED_PROXIES: {_proxy!r} is not an address or network") from _error

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [
    BASE_DIR / "saas" / "static",
    # The browser viewer built by Vite (`make frontend`), served under /static/viewer/.
    ("viewer", BASE_DIR / "frontend" / "dist"),
]

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = "django"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ActorAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "saas.config.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ReadRoom API",
    "DESCRIPTION": "ReadRoom: clinics, API tokens, the audit log, study uploads, modalities, AI analyses and DICOMweb.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from our own static files: nothing is fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a field called "status": each choice set gets its own schema name.
    "ENUM_NAME_OVERRIDES": {
        "AnalysisStatusEnum": "saas.ai.enums.AnalysisStatus",
        "UploadStatusEnum": "saas.studies.enums.UploadStatus",
        "StudyStatusEnum": "saas.studies.enums.StudyStatus",
    },
}

# S3: boto3 reads AWS_ENDPOINT_URL_S3 / AWS_* itself; production simply leaves the endpoint out.
READROOM_S3_BUCKET_PREFIX = env.str("READROOM_S3_BUCKET_PREFIX", default="readroom")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")

READROOM_ORTHANC_DRIVER = env.str("READROOM_ORTHANC_DRIVER", default="local")
READROOM_ORTHANC_DIR = Path(env.str("READROOM_ORTHANC_DIR", default=str(VAR_DIR / "orthanc")))
# Loopback ports handed to tenant Orthancs by the local driver.
READROOM_ORTHANC_HTTP_PORTS = (20000, 24000)
READROOM_ORTHANC_DICOM_PORTS = (24000, 28000)
# Seconds without a new instance before Orthanc reports a study stable (then the platform's own check).
READROOM_DEFAULT_STABLE_AGE_SECONDS = 5
READROOM_PUBLIC_URL = env.str("READROOM_URL", default="http://127.0.0.1:8000")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # httpx logs every request at INFO: one line per Orthanc call drowns what matters.
    # highdicom logs each copied module at INFO, with UIDs: not what an operator needs, and noisy.
    "loggers": {name: {"level": "WARNING"} for name in ("axes", "httpx", "botocore", "highdicom")},
}

# Tasks enqueued once per completed study version (tenant_id, study_id, version): AI dispatch,
# worklist... each domain adds its own here.
READROOM_STUDY_COMPLETED_TASKS: list[str] = ["ai.dispatch_study"]

# AI analysis (saas.ai): the bundles dispatch may choose from (their configs/metadata.json routes them),
# how long the workers' presigned URLs live (a job waiting longer in the queue fails and is re-dispatched
# by an administrator), and which dispatch and result tasks run on the Django side's own queue.
READROOM_AI_MODELS_DIR = BASE_DIR / "inference_workers" / "models"
READROOM_AI_MODELS = env.list("READROOM_AI_MODELS", default=["ct_focal_lesion", "dx_chest_triage"])
READROOM_AI_URL_TTL_SECONDS = env.int("READROOM_AI_URL_TTL_SECONDS", default=6 * 3600)
READROOM_AI_INPUT_FETCH_THREADS = 8
# Following the change feed has its own queue, so indexing and completion never wait behind a
# backlog of archive uploads; workers consume both ("-Q django,sync").
CELERY_TASK_ROUTES = {
    "studies.sync_all": {"queue": "sync"},
    "studies.sync_tenant": {"queue": "sync"},
    "ai.dispatch_study": {"queue": "django"},
    "ai.dispatch_analysis": {"queue": "django"},
    "ai.record_result": {"queue": "django"},
}
CELERY_BEAT_SCHEDULE = {
    "studies-sync": {"task": "studies.sync_all", "schedule": 2.0},
    # Re-queues only what no archive task claims (saas.studies.tasks), so it may look often: a batch
    # lost with a killed worker is queued again at most ARCHIVE_CLAIM_SECONDS + 30 s after it died.
    "studies-archive-sweep": {"task": "studies.archive_sweep", "schedule": 30.0},
    "studies-completion-sweep": {"task": "studies.completion_sweep", "schedule": 30.0},
}

# Limits on what clinics may send (per file, per request, per archive); see saas.studies.validation.
READROOM_VALIDATION_LIMITS = ValidationLimits()

# Browser uploads land here chunk by chunk (<tenant_id>/<file_id>.part) until the batch is finished.
READROOM_UPLOAD_DIR = Path(env.str("READROOM_UPLOAD_DIR", default=str(VAR_DIR / "uploads")))
# Removes batches abandoned for a day (and their part files), queues again a finishing whose worker died.
CELERY_BEAT_SCHEDULE["studies-upload-housekeeping"] = {"task": "studies.upload_housekeeping", "schedule": 600.0}

# DICOMweb (/dicomweb/<slug>/): QIDO-RS pages, and the browser cache lifetime of immutable bytes
# (frames, instances, rendered images: a SOP Instance UID never changes content here).
READROOM_DICOMWEB_MAX_LIMIT = 1000
READROOM_DICOMWEB_FRAME_MAX_AGE = env.int("READROOM_DICOMWEB_FRAME_MAX_AGE", default=3600)
# Production: nginx serves the bytes after Django authorised and audited (X-Accel-Redirect to
# "<this prefix>/<slug>/dicom-web/..."), for requests nginx forwarded with the header
# X-Readroom-Accel: <secret>; otherwise Django streams them itself. See README.
READROOM_DICOMWEB_ACCEL_REDIRECT = env.str("READROOM_DICOMWEB_ACCEL_REDIRECT", default="")
READROOM_DICOMWEB_ACCEL_SECRET = env.str("READROOM_DICOMWEB_ACCEL_SECRET", default="")
# Audit of DICOMweb reads is counted in Redis per (actor, study, event, window) and flushed by beat.
READROOM_AUDIT_REDIS_URL = env.str("READROOM_AUDIT_REDIS_URL", default=REDIS_URL)
READROOM_AUDIT_REDIS_PREFIX = env.str("READROOM_AUDIT_REDIS_PREFIX", default="readroom:audit")
READROOM_AUDIT_WINDOW_SECONDS = env.int("READROOM_AUDIT_WINDOW_SECONDS", default=60)
READROOM_AUDIT_FLUSH_AT_EXIT = True
CELERY_BEAT_SCHEDULE["audit-flush-aggregates"] = {"task": "audit.flush_aggregates", "schedule": 15.0}
