"""Settings for the local stack that `make up` / `make demo` start (reads var/local.env)."""

from pathlib import Path

import environ

_LOCAL_ENV = Path(__file__).resolve().parents[3] / "var" / "local.env"
if _LOCAL_ENV.exists():
    # Existing environment variables win, so a caller can point at other services.
    environ.Env.read_env(_LOCAL_ENV, overwrite=False)

from saas.config.settings.base import *  # noqa: E402,F403
from saas.config.settings.base import env  # noqa: E402

DEBUG = env.bool("DJANGO_DEBUG", default=False)
if not SECRET_KEY:  # noqa: F405
    SECRET_KEY = "local-only-not-secret"  # noqa: S105 - production refuses this value

# Static files straight from the source folders, so `make up` needs no collectstatic step.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
