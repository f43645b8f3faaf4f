"""Settings for the test suite: the local stack's services, a separate database and var dir."""

import zlib
from pathlib import Path
from urllib.parse import urlsplit

import environ

_LOCAL_ENV = Path(__file__).resolve().parents[3] / "var" / "local.env"
if _LOCAL_ENV.exists():
    environ.Env.read_env(_LOCAL_ENV, overwrite=False)

from saas.config.settings.base import *  # noqa: E402,F403
from saas.config.settings.base import VAR_DIR, env  # noqa: E402

SECRET_KEY = "test-only-not-secret"  # noqa: S105 - tests only
TEST_DATABASE_NAME = env.str("READROOM_TEST_DATABASE", default="readroom_test")
for _alias in ("default", "owner"):
    DATABASES[_alias]["NAME"] = TEST_DATABASE_NAME  # noqa: F405
    DATABASES[_alias]["CONN_MAX_AGE"] = 0  # noqa: F405

# Fast hashing keeps the suite quick; production settings keep Argon2 first.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Per test database, so two test sessions (READROOM_TEST_DATABASE=...) never stop each other's Orthancs.
READROOM_ORTHANC_DIR = VAR_DIR / "test" / TEST_DATABASE_NAME / "orthanc"
# A port window per test database too: concurrent sessions would otherwise hand out the same
# free port to two Orthancs between allocation and start. All below the ephemeral range (32768+).
_PORT_WINDOW = 28000 + (zlib.crc32(TEST_DATABASE_NAME.encode()) % 10) * 400
READROOM_ORTHANC_HTTP_PORTS = (_PORT_WINDOW, _PORT_WINDOW + 200)
READROOM_ORTHANC_DICOM_PORTS = (_PORT_WINDOW + 200, _PORT_WINDOW + 400)
READROOM_S3_BUCKET_PREFIX = "rrtest"
CELERY_TASK_ALWAYS_EAGER = False
AXES_FAILURE_LIMIT = 5

# A separate Redis database, so a development worker never takes the tests' tasks.
CELERY_BROKER_URL = urlsplit(REDIS_URL)._replace(path="/" + env.str("READROOM_TEST_REDIS_DB", default="15")).geturl()  # noqa: F405
# DICOMweb audit counts follow the test broker database, away from a development stack.
READROOM_AUDIT_REDIS_URL = CELERY_BROKER_URL

# Static files straight from the source folders; production serves the collectstatic output.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
READROOM_DEFAULT_STABLE_AGE_SECONDS = 1
READROOM_UPLOAD_DIR = VAR_DIR / "test" / "uploads"
