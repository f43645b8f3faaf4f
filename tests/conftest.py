"""Test session set-up: a fresh database migrated by the owner role; tests run as the application role."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command

from saas.config.dbsetup import prepare_database


def _connect(alias: str, *, dbname: str) -> psycopg.Connection:
    database = settings.DATABASES[alias]
    return psycopg.connect(
        host=database.get("HOST") or None,
        port=database.get("PORT") or None,
        user=database.get("USER") or None,
        password=database.get("PASSWORD") or None,
        dbname=dbname,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    """Recreate the test database as the owner, migrate as the owner, and stop leftover Orthancs."""
    from tenants.orthanc import orthanc_driver

    name = settings.DATABASES["owner"]["NAME"]
    orthanc_driver().stop_all()
    shutil.rmtree(settings.READROOM_ORTHANC_DIR, ignore_errors=True)
    with _connect("owner", dbname="postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    with _connect("owner", dbname=name) as owner:
        prepare_database(owner, app_role=settings.DATABASES["default"]["USER"])
    with django_db_blocker.unblock():
        call_command("migrate", database="owner", verbosity=0, interactive=False)
    yield
    orthanc_driver().stop_all()


@pytest.fixture
def owner_connection():
    """A connection as the table owner, for what the application role must not be able to do."""
    with _connect("owner", dbname=settings.DATABASES["owner"]["NAME"]) as connection:
        yield connection


@pytest.fixture
def unique_slug():
    def make(prefix: str = "clinic") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make
