"""Test session set-up: a fresh database migrated by the owner role; tests run as the application role."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

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


def celery_tasks_in_flight(names: set[str] | None, queues: tuple[str, ...] = ("django",)) -> list[str]:
    """Messages of these tasks (of any, for None) still queued on the broker, or delivered and not yet acknowledged.

    Our Celery apps acknowledge late, so an empty answer means no such task is waiting or running: what it
    would have done is done. kombu's Redis transport keeps each unacknowledged delivery in the ``unacked``
    hash as [message, exchange, routing key].
    """
    import json

    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        messages = [json.loads(raw) for queue in queues for raw in broker.lrange(queue, 0, -1)]
        messages += [json.loads(raw)[0] for raw in broker.hvals("unacked")]
    finally:
        broker.close()
    tasks = [message["headers"]["task"] for message in messages]
    return tasks if names is None else [task for task in tasks if task in names]


def committed(function, *args, **kwargs):
    """Run on a separate connection that commits, so other processes (gunicorn, workers) see the rows.

    Use for data a live process must read; such rows outlive the test (slugs are unique).
    """
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LivePlatform:
    """A real gunicorn serving the test database, for clients in other processes (gateway, browser)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def tenant_with_token(self, *, prefix: str = "live", scopes=("studies:write", "studies:read")):
        """A committed tenant with a running Orthanc, and the secret of a token with these scopes."""
        from tenants.services import api_token_create, tenant_create

        def create():
            tenant, _ = tenant_create(slug=f"{prefix}-{uuid.uuid4().hex[:8]}", name="Live Clinic")
            _, raw = api_token_create(tenant=tenant, name="live test", scopes=scopes)
            return tenant, raw

        return committed(create)


def _wait_until_answering(process, url: str, *, timeout: float, failure: str, ready=lambda response: True) -> None:
    """Until `url` answers (as `ready` wants) while `process` lives; RuntimeError(failure) if it dies or time is up."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        # Not answering yet: refused, or too slow to answer on a busy machine.
        with contextlib.suppress(requests.RequestException):
            if ready(requests.get(url, timeout=2)):
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.2)


@contextlib.contextmanager
def running_gunicorn(*, environment: dict[str, str] | None = None, log_name: str = "live-platform"):
    """A real gunicorn serving the test database on a free port; yields its URL. ``environment`` adds settings."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[1]
    log_path = Path(settings.VAR_DIR) / "test" / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process_environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "saas.config.settings.test",
        "READROOM_URL": url,
        "READROOM_TEST_DATABASE": settings.DATABASES["default"]["NAME"],
        **(environment or {}),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "saas.config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "120",
            ],
            cwd=root,
            env=process_environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(
            process,
            f"{url}/healthz",
            timeout=60,
            failure=f"gunicorn did not start; see {log_path}",
            ready=lambda response: response.status_code == 200,
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class RunningNginx:
    url: str
    port: int
    access_log: Path


@contextlib.contextmanager
def running_nginx(server: str, *, upstream: str, http: str = ""):
    """Debian's nginx on a free loopback port, with the locations ``server`` inside its server block, ``http``
    (maps, more upstreams) in its http block and ``readroom_web`` naming ``upstream`` (host:port). Its access log
    lists each request's URI, the upstream addresses it reached, in order, its status and its body's length."""
    import os
    import subprocess

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.fail("nginx is not installed: `make bootstrap` installs it (Debian package nginx)")
    work = Path(settings.VAR_DIR) / "test" / f"nginx-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    # Run as root, nginx's workers switch to nobody: their temporary files go in a directory anyone may write.
    work.chmod(0o777)
    port = _free_port()
    temp_paths = "".join(
        f"    {kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = work / "nginx.conf"
    config.write_text(
        f"daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    include /etc/nginx/mime.types;\n"
        "    log_format upstreams '$request_uri $upstream_addr | $status $content_length';\n"
        f"    access_log {work}/access.log upstreams;\n{temp_paths}"
        f"    upstream readroom_web {{ server {upstream}; }}\n{http}\n"
        f"    server {{\n        listen 127.0.0.1:{port};\n{server}\n    }}\n}}\n"
    )
    checked = subprocess.run([nginx, "-t", "-p", str(work), "-c", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([nginx, "-p", str(work), "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        # Any answer will do: nginx is up, whatever its upstream says.
        failure = f"nginx did not start; see {work}/error.log"
        _wait_until_answering(process, f"http://127.0.0.1:{port}/healthz", timeout=20, failure=failure)
        yield RunningNginx(url=f"http://127.0.0.1:{port}", port=port, access_log=work / "access.log")
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def live_platform(django_db_setup, django_db_blocker):
    with running_gunicorn() as url, django_db_blocker.unblock():
        yield LivePlatform(url)
