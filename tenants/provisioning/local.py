"""Local Orthanc driver: one Orthanc process per tenant under a base directory, for development and tests.

Layout per tenant: ``<base_dir>/<slug>/orthanc.json`` (mode 0600, holds the password),
``storage/`` (DICOM files and the SQLite index), ``orthanc.log``, ``orthanc.pid`` and
``lock`` (serialises start/stop of that tenant across processes).

Network exposure: Orthanc 1.10 has no bind-address option for either server; both the
HTTP and the DICOM port listen on 0.0.0.0. HTTP stays loopback-only because
``RemoteAccessAllowed: false`` makes Orthanc refuse every non-loopback client (HTTP 401
even with valid credentials), and ``AuthenticationEnabled`` guards the loopback side.
The DICOM port is reachable from the network by design (clinics C-STORE to it); its
gate is ``DicomCheckCalledAet`` plus the known-modality list. A cloud deployment must
put both ports behind security groups/firewalls because Orthanc itself cannot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from tenants.provisioning.base import (
    TENANT_SLUG_RE,
    OrthancEndpoint,
    OrthancSpec,
    OrthancUnavailable,
    orthanc_ping,
)

logger = logging.getLogger(__name__)

ORTHANC_EXECUTABLE = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
LOOPBACK = "127.0.0.1"

# Children started by any driver instance in this process, so that whichever instance
# stops a tenant also reaps the process (no zombies) and no Popen is garbage-collected
# while its Orthanc runs.
_started_processes: dict[int, subprocess.Popen[bytes]] = {}


def orthanc_instance_name(slug: str) -> str:
    return f"readroom-{slug}"


def orthanc_configuration(spec: OrthancSpec, *, storage_directory: Path, plugins: list[str]) -> dict[str, Any]:
    """Render the Orthanc 1.10 configuration for one tenant (everything not set here keeps Orthanc's default)."""
    return {
        "Name": orthanc_instance_name(spec.slug),
        "StorageDirectory": str(storage_directory),
        "IndexDirectory": str(storage_directory),
        # The hot tier trades disk for CPU: every viewer read would otherwise inflate the file.
        "StorageCompression": False,
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        "OverwriteInstances": False,
        "StorageAccessOnFind": "Never",
        "Plugins": plugins,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
        "HttpServerEnabled": True,
        "HttpPort": spec.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {spec.username: spec.password},
        # Django compresses responses itself; compressing twice only costs CPU.
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "HttpThreadsCount": 50,
        # Orthanc otherwise resolves its CA bundle relative to the working directory.
        "HttpsCACertificates": "/etc/ssl/certs/ca-certificates.crt",
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": spec.dicom_ae_title,
        "DicomPort": spec.dicom_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": spec.accept_unknown_modalities,
        # Clinics send; nobody queries or retrieves over DIMSE, so a modality cannot pull
        # the tenant's other patients with C-FIND/C-MOVE.
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        # Clinic modalities sit behind NAT, so their source address says nothing.
        "DicomCheckModalityHost": False,
        "DicomModalitiesInDatabase": False,
        "DicomModalities": {
            name: {
                "AET": ae_title,
                "Host": host,
                "Port": port,
                "AllowEcho": True,
                "AllowStore": True,
                "AllowFind": False,
                "AllowGet": False,
                "AllowMove": False,
                "AllowStorageCommitment": False,
            }
            for name, (ae_title, host, port) in sorted(spec.known_modalities.items())
        },
        "UnknownSopClassAccepted": False,
        "DicomScpTimeout": 30,
        "StableAge": spec.stable_age_seconds,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        "DeidentifyLogs": True,
    }


def _process_command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    # A zombie has an empty command line, so a dead-but-unreaped Orthanc counts as gone.
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _write_atomically(path: Path, text: str, *, mode: int = 0o600) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _log_tail(path: Path, *, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalOrthancDriver:
    """Runs each tenant's Orthanc as a detached local process; see the module docstring for the layout."""

    name = "local"

    def __init__(
        self,
        base_dir: Path,
        *,
        orthanc_executable: Path = ORTHANC_EXECUTABLE,
        dicomweb_plugin: Path = DICOMWEB_PLUGIN,
        start_timeout_seconds: float = 30.0,
        stop_timeout_seconds: float = 10.0,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.orthanc_executable = Path(orthanc_executable)
        self.dicomweb_plugin = Path(dicomweb_plugin)
        self.start_timeout_seconds = start_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds

    def tenant_dir(self, slug: str) -> Path:
        # The slug is joined into a path: reject anything that could climb out of base_dir.
        if not TENANT_SLUG_RE.fullmatch(slug):
            raise ValueError(f"tenant slug {slug!r} must match {TENANT_SLUG_RE.pattern}")
        return self.base_dir / slug

    def config_path(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "orthanc.json"

    def storage_dir(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "storage"

    def log_path(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "orthanc.log"

    def pid_path(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "orthanc.pid"

    def endpoint(self, spec: OrthancSpec) -> OrthancEndpoint:
        return OrthancEndpoint(
            http_url=f"http://{LOOPBACK}:{spec.http_port}",
            username=spec.username,
            password=spec.password,
            dicom_host=LOOPBACK,
            dicom_port=spec.dicom_port,
            dicom_ae_title=spec.dicom_ae_title,
        )

    def ensure_running(self, spec: OrthancSpec) -> OrthancEndpoint:
        tenant_dir = self.tenant_dir(spec.slug)
        tenant_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.storage_dir(spec.slug).mkdir(exist_ok=True, mode=0o700)
        endpoint = self.endpoint(spec)
        config_text = self._config_text(spec)
        with self._tenant_lock(spec.slug):
            pid = self._live_pid(spec.slug)
            if pid is not None:
                if self._stored_config_text(spec.slug) == config_text:
                    # Same configuration: a busy instance gets the full start-up grace before
                    # it is judged hung, so a slow answer never restarts a healthy Orthanc.
                    failure = self._wait_until_answering(
                        spec, endpoint, is_alive=lambda: self._live_pid(spec.slug) == pid
                    )
                    if failure is None:
                        return endpoint
                    logger.warning(
                        "Orthanc for tenant %s (pid %s) is not answering (%s); restarting it", spec.slug, pid, failure
                    )
                else:
                    logger.info("Orthanc configuration of tenant %s changed; restarting pid %s", spec.slug, pid)
                self._stop_locked(spec.slug)
            _write_atomically(self.config_path(spec.slug), config_text)
            self._start_locked(spec, endpoint)
        return endpoint

    def stop(self, slug: str) -> None:
        if not self.tenant_dir(slug).is_dir():
            return
        with self._tenant_lock(slug):
            self._stop_locked(slug)

    def is_running(self, slug: str) -> bool:
        """True while the tenant's Orthanc process is alive (it may still be starting up)."""
        return self._live_pid(slug) is not None

    def stop_all(self) -> None:
        if not self.base_dir.is_dir():
            return
        slugs = [
            tenant_dir.name
            for tenant_dir in sorted(self.base_dir.iterdir())
            if TENANT_SLUG_RE.fullmatch(tenant_dir.name) and (tenant_dir / "orthanc.pid").exists()
        ]
        # Orthanc takes seconds to shut down, so every instance is signalled before any is
        # waited for. Locks are taken in sorted order, so this cannot deadlock with another stop_all.
        with contextlib.ExitStack() as locks:
            for slug in slugs:
                locks.enter_context(self._tenant_lock(slug))
            signalled = {slug: self._signal_stop(slug) for slug in slugs}
            for slug, pid in signalled.items():
                self._finish_stop(slug, pid)

    def _config_text(self, spec: OrthancSpec) -> str:
        configuration = orthanc_configuration(
            spec,
            storage_directory=self.storage_dir(spec.slug),
            plugins=[str(self.dicomweb_plugin)],
        )
        return json.dumps(configuration, indent=2, sort_keys=True) + "\n"

    def _stored_config_text(self, slug: str) -> str | None:
        try:
            return self.config_path(slug).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _tenant_lock(self, slug: str) -> Iterator[None]:
        # flock rather than a thread lock: Django workers, Celery workers and management
        # commands may all call ensure_running for the same tenant at once.
        with open(self.tenant_dir(slug) / "lock", "a") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _read_pid(self, slug: str) -> int | None:
        try:
            text = self.pid_path(slug).read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _live_pid(self, slug: str) -> int | None:
        """The pid from the pid file if that process is alive and is this tenant's Orthanc, else None."""
        pid = self._read_pid(slug)
        if pid is None:
            return None
        child = _started_processes.get(pid)
        if child is not None and child.poll() is not None:
            del _started_processes[pid]
            return None
        # A pid file outlives reboots and crashes, and the kernel reuses pids: only a process
        # whose command line names this tenant's config file is ours.
        if str(self.config_path(slug)) not in _process_command_line(pid):
            return None
        return pid

    def _start_locked(self, spec: OrthancSpec, endpoint: OrthancEndpoint) -> None:
        log_path = self.log_path(spec.slug)
        if not self.orthanc_executable.is_file():
            raise OrthancUnavailable(slug=spec.slug, reason=f"Orthanc executable {self.orthanc_executable} not found")
        if not self.dicomweb_plugin.is_file():
            raise OrthancUnavailable(slug=spec.slug, reason=f"DICOMweb plugin {self.dicomweb_plugin} not found")
        command = [str(self.orthanc_executable), f"--logfile={log_path}", str(self.config_path(spec.slug))]
        # Orthanc appends to --logfile; stdout/stderr go to the same file (also appending) so
        # that anything printed before its logger is set up, such as a crash, is kept too.
        with open(log_path, "ab") as log_file:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.tenant_dir(spec.slug),
                    start_new_session=True,
                    close_fds=True,
                    # DCMTK (Orthanc's DICOM layer) reads TCP_NODELAY: without it Nagle's algorithm
                    # adds tens of milliseconds to every C-STORE round trip.
                    # Only what a process needs to run: never the platform's own secrets (database owner,
                    # S3 keys, Django's key), which an Orthanc reachable on the clinic's DICOM port must not hold.
                    env={**_process_environment(), "TCP_NODELAY": "1"},
                )
            except OSError as error:
                raise OrthancUnavailable(
                    slug=spec.slug,
                    reason=f"could not execute {self.orthanc_executable}: {error}",
                    log_location=str(log_path),
                ) from error
        _started_processes[process.pid] = process
        _write_atomically(self.pid_path(spec.slug), f"{process.pid}\n", mode=0o644)
        logger.info(
            "started Orthanc for tenant %s: pid %s, HTTP %s, DICOM %s",
            spec.slug,
            process.pid,
            spec.http_port,
            spec.dicom_port,
        )

        failure = self._wait_until_answering(spec, endpoint, is_alive=lambda: process.poll() is None)
        if failure is None:
            return
        # Leave nothing half-started behind: a later ensure_running starts from scratch.
        self._stop_locked(spec.slug)
        raise OrthancUnavailable(
            slug=spec.slug, reason=failure, log_location=str(log_path), log_tail=_log_tail(log_path)
        )

    def _wait_until_answering(
        self, spec: OrthancSpec, endpoint: OrthancEndpoint, *, is_alive: Callable[[], bool]
    ) -> str | None:
        """Poll /system until this tenant's Orthanc answers; return None on success or why it did not."""
        deadline = time.monotonic() + self.start_timeout_seconds
        expected_name = orthanc_instance_name(spec.slug)
        last_failure = "no answer yet"
        while True:
            if not is_alive():
                return f"the Orthanc process exited during start-up ({last_failure})"
            last_failure = orthanc_ping(endpoint, timeout=2.0) or ""
            if not last_failure:
                # The port could belong to another tenant's Orthanc that happens to accept the
                # same credentials; serving that one would mix two clinics' patients.
                answered_name = self._answered_name(endpoint)
                if answered_name == expected_name:
                    return None
                last_failure = f"port {spec.http_port} is served by {answered_name!r}, not {expected_name!r}"
            if time.monotonic() >= deadline:
                return f"/system did not answer within {self.start_timeout_seconds:g} s ({last_failure})"
            time.sleep(0.1)

    @staticmethod
    def _answered_name(endpoint: OrthancEndpoint) -> str | None:
        try:
            response = requests.get(endpoint.http_url + "/system", auth=endpoint.auth, timeout=2.0)
            return str(response.json().get("Name"))
        except (requests.RequestException, ValueError, AttributeError):
            return None

    def _stop_locked(self, slug: str) -> None:
        self._finish_stop(slug, self._signal_stop(slug))

    def _signal_stop(self, slug: str) -> int | None:
        pid = self._live_pid(slug)
        if pid is not None:
            logger.info("stopping Orthanc for tenant %s (pid %s)", slug, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return pid

    def _finish_stop(self, slug: str, pid: int | None) -> None:
        if pid is not None and not self._wait_for_exit(slug, pid, timeout_seconds=self.stop_timeout_seconds):
            logger.warning("Orthanc for tenant %s (pid %s) ignored SIGTERM; killing it", slug, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_for_exit(slug, pid, timeout_seconds=5.0):
                raise OrthancUnavailable(
                    slug=slug, reason=f"pid {pid} survived SIGKILL", log_location=str(self.log_path(slug))
                )
        with contextlib.suppress(FileNotFoundError):
            self.pid_path(slug).unlink()

    def _wait_for_exit(self, slug: str, pid: int, *, timeout_seconds: float) -> bool:
        child = _started_processes.get(pid)
        if child is not None:
            try:
                child.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                return False
            _started_processes.pop(pid, None)
            return True
        # Started by another process: its parent reaps it; an unreaped zombie already
        # reads as gone because its command line is empty.
        deadline = time.monotonic() + timeout_seconds
        while self._live_pid(slug) == pid:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


_PASSED_TO_ORTHANC = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH")


def _process_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in _PASSED_TO_ORTHANC if name in os.environ}
