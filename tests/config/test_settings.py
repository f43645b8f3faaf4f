"""Production settings refuse to start without HTTPS, a real secret key and TLS to the database."""

import os
import subprocess
import sys

import pytest

GOOD = {
    "DJANGO_SETTINGS_MODULE": "saas.config.settings.production",
    "DJANGO_SECRET_KEY": "k" * 30 + "QpZr8vW2xN5mB7cT1yL4hJ6gF3dS9aE0",
    "DATABASE_URL": "postgresql://app@db.internal:5432/readroom?sslmode=verify-full",
    "DATABASE_OWNER_URL": "postgresql://owner@db.internal:5432/readroom?sslmode=verify-full",
}


def _start(**overrides):
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_", "SECURE_"))
    }
    environment.update(GOOD)
    environment.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_starts_with_https_a_real_key_and_database_tls():
    result = _start()
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY must be a random value"),
        ({"DJANGO_SECRET_KEY": "local-only-not-secret" * 4}, "DJANGO_SECRET_KEY must be a random value"),
        ({"DATABASE_URL": "postgresql://app@db.internal:5432/readroom"}, "must use TLS in production"),
        ({"SECURE_SSL_REDIRECT": "false"}, "requires SECURE_SSL_REDIRECT"),
    ],
)
def test_production_refuses_to_start_without_its_safeguards(overrides, message):
    result = _start(**overrides)
    assert result.returncode != 0
    assert message in result.stderr


def test_passwords_are_hashed_with_argon2_outside_the_test_suite():
    from saas.config.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
