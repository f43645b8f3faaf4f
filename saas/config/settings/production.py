"""Production settings: refuse to start without HTTPS, a real secret key and TLS to the database."""

from django.core.exceptions import ImproperlyConfigured

from saas.config.settings.base import *  # noqa: F403
from saas.config.settings.base import DATABASES, SECRET_KEY, env

DEBUG = False

_WEAK_KEY_MARKERS = ("not-secret", "changeme", "insecure")
if len(SECRET_KEY) < 50 or any(marker in SECRET_KEY for marker in _WEAK_KEY_MARKERS):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a random value of at least 50 characters in production.")

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
if not SECURE_SSL_REDIRECT or SECURE_HSTS_SECONDS < 86400:
    raise ImproperlyConfigured("Production requires SECURE_SSL_REDIRECT and HSTS of at least one day.")

for _alias, _config in DATABASES.items():
    _sslmode = _config.get("OPTIONS", {}).get("sslmode")
    if _sslmode not in ("require", "verify-ca", "verify-full"):
        raise ImproperlyConfigured(
            f"Database '{_alias}' must use TLS in production: add ?sslmode=verify-full to its URL."
        )

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
