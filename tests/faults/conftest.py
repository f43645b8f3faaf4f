"""Fault-injection harness: the whole platform as real, killable processes, senders (STOW-RS, C-STORE), the checks.

The package fixture starts, against the session's test database, a private S3 server (`rclone serve s3`),
gunicorn, one Celery worker and Celery beat, each in its own process group so that a test can
`kill -9` it (master and children together) and start it again with the same command line.
Logs go to ``var/test/<test database>/faults/*.log``: per test database, like its Orthancs, so that two
sessions (READROOM_TEST_DATABASE=...) never stop each other's processes as leftovers.

Why a private S3 server rather than the stack's one on 127.0.0.1:9000: test (d) freezes S3 for 30 s,
and other engineers' test sessions (and the development stack) share that server.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings

from scripts.stack import s3_server_argv
from tests.conftest import committed

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LOG_DIR = Path(settings.VAR_DIR) / "test" / settings.DATABASES["default"]["NAME"] / "faults"

# DICOM PS3.18 STOW-RS tags.
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
PROCESSING_FAILURE = 0x0110

# What each fault test sends: 500 instances, 10 CT studies of 50 slices.
STUDIES, SLICES = 10, 50
# Past the first batches, so the fault lands in the middle of the send.
FAULT_AT = 150
RESTART_AFTER_SECONDS = 2
S3_OUTAGE_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.5, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class Process:
    """One platform process in its own process group: start, wait until ready, kill -9, stop."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        ready: Callable[[Process], bool],
        ready_timeout: float = 60.0,
    ) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.ready, self.ready_timeout = ready, ready_timeout
        self.log_path = LOG_DIR / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        # Where this start's output begins in the (appended) log, for readiness lines.
        self.log_offset = 0

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            self.log_offset = log.tell()
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own group: kill -9 reaches the master and every worker child at once.
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self.popen.pid}\n" + "\0".join(self.argv))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not self.ready(self):
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{_log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {self.ready_timeout:g} s:\n{_log_tail(self.log_path)}")
            time.sleep(0.2)

    @property
    def pid_path(self) -> Path:
        return LOG_DIR / f"{self.name}.pid"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_since_start(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def _signal_group(self, signum: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """kill -9 the whole group, as a crash or the OOM killer would: no shutdown handlers run."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)
        # Children of a killed master are reparented, not necessarily dead yet.
        wait_for(lambda: not _group_members(self.pid), timeout=10, interval=0.1, what=f"{self.name} group to exit")

    def restart(self) -> None:
        if self.alive():
            self.kill()
        self.start()

    def ensure_running(self) -> None:
        if not self.alive():
            self.start()

    def pause(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def stop(self) -> None:
        if self.popen is None:
            return
        # A paused process would never act on SIGTERM.
        self._signal_group(signal.SIGCONT)
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self.pid_path.unlink(missing_ok=True)


def stop_leftovers() -> None:
    """Stop what an earlier run killed before its clean-up (SIGKILL, a lost terminal) left running.

    Only a process whose command line ends with the recorded one is ours (a Python entry point runs
    as "python <script> ..."); a reused pid is left alone.
    """
    for pid_path in LOG_DIR.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid_line, _, argv = pid_path.read_text().partition("\n")
            pid = int(pid_line)
            if Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().endswith(argv):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                wait_for(lambda: not _group_members(pid), timeout=10, interval=0.1, what=f"leftover group {pid}")  # noqa: B023
        pid_path.unlink(missing_ok=True)


def pytest_collection_modifyitems(session, config, items):
    # Before any fixture: leftovers hold connections to the test database, which would stop
    # django_db_setup from dropping it (the owner role may not terminate the application role's sessions).
    stop_leftovers()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, ...; a zombie has exited already.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@dataclass
class FaultPlatform:
    url: str
    s3_url: str
    s3: Process
    web: Process
    worker: Process
    beat: Process

    @property
    def processes(self) -> tuple[Process, ...]:
        return (self.s3, self.web, self.worker, self.beat)

    def ensure_all_running(self) -> None:
        """A test that failed half-way may leave a process killed or frozen; the next one starts whole."""
        self.s3.resume()
        stopped = [process for process in self.processes if not process.alive()]
        # Spawned together, then awaited: the boots overlap (Django imports take seconds on two cores).
        for process in stopped:
            process.spawn()
        for process in stopped:
            process.wait_ready()

    def stop_s3_for(self, seconds: float) -> None:
        """S3 gone for `seconds`, in both ways a server fails, then back with the same command line and data.

        First it hangs (SIGSTOP: connections are accepted and never answered), then it dies (kill -9: the
        hung uploads break, new connections are refused, which drives the archive's retries).
        A restarted `rclone serve s3` forgets the ChecksumSHA256 of the objects stored before (it keeps
        them in memory only): harmless here, since the archive checks the checksum only right after
        its own upload, and assert_nothing_lost hashes the archived bytes themselves.
        """
        self.s3.pause()
        try:
            time.sleep(seconds / 2)
            self.s3.kill()
            time.sleep(seconds / 2)
        finally:
            self.s3.resume()
            self.s3.ensure_running()

    def tenant_with_token(self, *, prefix: str = "faults"):
        from tenants.services import api_token_create, tenant_create

        def create():
            tenant, _ = tenant_create(slug=f"{prefix}-{uuid.uuid4().hex[:8]}", name="Faults Clinic")
            _, raw = api_token_create(tenant=tenant, name="faults sender", scopes=("studies:write",))
            return tenant, raw

        return committed(create)

    def tenant_with_modality(self, *, ae_title: str, prefix: str = "faults-cs"):
        """A clinic with a registered C-STORE device (and a token, to send the same instances by STOW-RS)."""
        from tenants.services import modality_register

        tenant, raw = self.tenant_with_token(prefix=prefix)
        # As a clinic administrator registers it (/api/v1/modalities/): the clinic's Orthanc restarts knowing it.
        committed(
            lambda: modality_register(
                tenant=tenant, name="ct-room-faults", ae_title=ae_title, host="127.0.0.1", port=104, actor=None
            )
        )
        return tenant, raw


def kill_9_tenant_orthanc(tenant, *, down_for: float) -> None:
    """kill -9 the clinic's Orthanc; its supervisor (here the provisioning driver) starts it `down_for` s later."""
    from tenants.orthanc import orthanc_driver, orthanc_spec

    driver, spec = orthanc_driver(), orthanc_spec(tenant)
    pid = int(driver.pid_path(tenant.slug).read_text().strip())
    try:
        os.kill(pid, signal.SIGKILL)
        time.sleep(down_for)
    finally:
        driver.ensure_running(spec)


def _redis_db() -> str:
    return os.environ.get("READROOM_TEST_REDIS_DB", "14")


def _purge_own_queue(redis_db: str) -> None:
    """Tasks left by an earlier run name rows of a dropped database: drop them (never on the shared db 15)."""
    if redis_db == "15":
        return
    from urllib.parse import urlsplit

    import redis

    url = urlsplit(settings.REDIS_URL)._replace(path=f"/{redis_db}").geturl()
    client = redis.Redis.from_url(url)
    client.delete("django", "unacked", "unacked_index", "unacked_mutex")
    client.close()


@pytest.fixture(scope="package")
def faults_platform(django_db_setup, django_db_blocker):
    database = settings.DATABASES["default"]["NAME"]
    redis_db = _redis_db()
    _purge_own_queue(redis_db)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    s3_dir = LOG_DIR / "s3"
    shutil.rmtree(s3_dir, ignore_errors=True)
    s3_dir.mkdir(parents=True)
    schedule = LOG_DIR / "celerybeat-schedule"
    for stale in LOG_DIR.glob("celerybeat-schedule*"):
        stale.unlink()

    s3_port, web_port = free_port(), free_port()
    s3_url, url = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{web_port}"
    patch = pytest.MonkeyPatch()
    # s3_client() reads the endpoint from the environment at each call, so the test process's own
    # bucket creation and checks go to the private server too; undone when the package ends.
    patch.setenv("AWS_ENDPOINT_URL_S3", s3_url)
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "saas.config.settings.test",
        "READROOM_TEST_DATABASE": database,
        "READROOM_TEST_REDIS_DB": redis_db,
        "READROOM_URL": url,
        "AWS_ENDPOINT_URL_S3": s3_url,
        "PYTHONUNBUFFERED": "1",
    }
    s3_environment = {
        **environment,
        # The same credentials the application signs with; through the environment, not argv.
        "RCLONE_AUTH_KEY": f'"{os.environ["AWS_ACCESS_KEY_ID"]},{os.environ["AWS_SECRET_ACCESS_KEY"]}"',
    }
    # The stack's own rclone command line, on a private port and directory.
    s3 = Process(
        "s3",
        s3_server_argv(f"127.0.0.1:{s3_port}", s3_dir),
        env=s3_environment,
        ready=lambda process: port_answers(s3_port),
    )

    def web_ready(process: Process) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        return False

    web = Process(
        "web",
        [
            str(VENV_BIN / "gunicorn"),
            "saas.config.wsgi:application",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "120",
            "--access-logfile",
            "-",
        ],
        env=environment,
        ready=web_ready,
    )
    worker = Process(
        "worker",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "saas.config",
            "worker",
            "-l",
            "info",
            "--concurrency",
            "2",
            "-Q",
            "django,sync",
            "-n",
            f"faults-{database}@%h",
            # Nothing to synchronise with: this is the only worker on its broker database.
            "--without-mingle",
            "--without-gossip",
        ],
        env=environment,
        ready=lambda process: " ready." in process.log_since_start(),
    )
    beat = Process(
        "beat",
        [str(VENV_BIN / "celery"), "-A", "saas.config", "beat", "-l", "info", "-s", str(schedule)],
        env=environment,
        ready=lambda process: "beat: Starting" in process.log_since_start(),
    )
    platform = FaultPlatform(url=url, s3_url=s3_url, s3=s3, web=web, worker=worker, beat=beat)
    for process in platform.processes:
        # One run's logs per file; each (re)start inside the run is marked with "=== HH:MM:SS starting".
        process.log_path.unlink(missing_ok=True)
    (LOG_DIR / "results.log").unlink(missing_ok=True)
    try:
        platform.ensure_all_running()
        with django_db_blocker.unblock():
            yield platform
    finally:
        for process in reversed(platform.processes):
            process.stop()
        patch.undo()


@pytest.fixture
def platform(faults_platform):
    faults_platform.ensure_all_running()
    return faults_platform


# --- the senders ------------------------------------------------------------------------


def synthetic_studies(*, studies: int, slices: int) -> dict[str, bytes]:
    """Small CT studies as Part 10 bytes, keyed by SOP Instance UID, in sending order."""
    from saas.studies.synthetic import ct_series, dataset_bytes

    instances: dict[str, bytes] = {}
    for number in range(studies):
        for dataset in ct_series(
            patient_id=f"FLT-{number}",
            patient_name="Synthetic^Faults",
            accession_number=f"ACC-F{number}",
            slices=slices,
            rows=32,
            columns=32,
            seed=number,
        ):
            instances[dataset.SOPInstanceUID] = dataset_bytes(dataset)
    return instances


@pytest.fixture(scope="package")
def instances() -> dict[str, bytes]:
    # Each test has its own clinic (own Orthanc, index rows and bucket), so the same bytes serve all.
    return synthetic_studies(studies=STUDIES, slices=SLICES)


def multipart_related(parts: Iterable[bytes]) -> tuple[bytes, str]:
    boundary = f"rr-{uuid.uuid4().hex}"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


# File meta elements with these VRs have a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def data_set_of(part10: bytes) -> bytes:
    """A Part 10 file's data set as encoded, without the preamble and file meta group: what C-STORE carries.

    A C-STORE SCP writes a file meta group of its own (its implementation, the calling AE title), so a
    file stored from C-STORE is compared with what was sent from here on.
    """
    assert part10[128:132] == b"DICM", "not a DICOM Part 10 file"
    position = 132
    # The file meta group is always explicit VR little endian, and comes first.
    while int.from_bytes(part10[position : position + 2], "little") == 0x0002:
        vr = part10[position + 4 : position + 6]
        if vr in _LONG_LENGTH_VRS:
            position += 12 + int.from_bytes(part10[position + 8 : position + 12], "little")
        else:
            position += 8 + int.from_bytes(part10[position + 6 : position + 8], "little")
    assert position < len(part10), "a file meta group and no data set"
    return part10[position:]


class Sender(threading.Thread):
    """What every sender records, per SOP Instance UID, of what the platform told it, and how it resends.

    A subclass sends one batch in `_send` and returns the instances still not acknowledged; `run` resends
    those with a backoff, like the gateway or a modality would, and gives up after `attempts`.
    """

    path = ""

    def __init__(self, *, name: str, instances: dict[str, bytes], batch_size: int = 10, attempts: int = 20) -> None:
        super().__init__(name=name, daemon=True)
        self.instances, self.batch_size, self.attempts = instances, batch_size, attempts
        self.acknowledged: set[str] = set()
        self.failures: dict[str, list[str]] = defaultdict(list)
        # Sent in a request the platform answered, yet answered for neither way: silently dropped.
        self.unreported: set[str] = set()
        # HTTP statuses (STOW-RS) or DIMSE statuses (C-STORE) of the answers received.
        self.statuses: Counter = Counter()
        # Requests or associations that got no answer: refused, rejected, aborted mid-way, timed out.
        self.request_errors: Counter = Counter()
        # The failure codes the platform answered (STOW-RS FailureReason, C-STORE failure status).
        self.failure_reasons: Counter = Counter()
        self.given_up: set[str] = set()
        # Instances whose batch is finished (acknowledged or given up).
        self.progress = 0
        # When the request (or association) now on the wire began (monotonic), None between them.
        self.in_flight_since: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            uids = list(self.instances)
            for start in range(0, len(uids), self.batch_size):
                pending = uids[start : start + self.batch_size]
                for attempt in range(self.attempts):
                    pending = self._send(pending)
                    if not pending:
                        break
                    time.sleep(min(0.5 * 2**attempt, 3.0))
                self.given_up.update(pending)
                self.progress = start + self.batch_size
        except BaseException as error:  # reported by finish(), not lost in the thread
            self.error = error

    def _send(self, pending: list[str]) -> list[str]:
        raise NotImplementedError

    def holds_what_was_sent(self, sop_instance_uid: str, stored: bytes) -> bool:
        """Whether a file the platform stored is the instance this sender sent."""
        return stored == self.instances[sop_instance_uid]

    def wait_for_progress(self, count: int, *, timeout: float = 120) -> None:
        wait_for(
            lambda: self.progress >= count or not self.is_alive(),
            timeout=timeout,
            interval=0.05,
            what=f"the sender to pass {count} instances",
        )
        assert self.is_alive(), f"the sender finished before {count} instances; the fault would miss the send"

    def wait_mid_request(self, *, into: float = 0.02, timeout: float = 30) -> None:
        """Until a request has been on the wire for `into` seconds: the platform is storing its parts now.

        On loopback 20 ms is long past the connection (and the body of a batch of small instances); it must stay
        well under the shortest request, or an idle machine that answers every batch faster never gets here
        (at 100 ms, a clean CI run timed out waiting: each batch of 10 took less).
        """

        def mid_request() -> bool:
            since = self.in_flight_since
            return since is not None and time.monotonic() - since >= into

        wait_for(mid_request, timeout=timeout, interval=0.005, what="a request in flight")

    def finish(self, *, timeout: float = 240) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"the sender did not finish in {timeout:g} s"
        if self.error is not None:
            raise self.error

    def summary(self) -> str:
        return (
            f"{self.path}: acknowledged {len(self.acknowledged)}/{len(self.instances)}, "
            f"given up {len(self.given_up)}, statuses {dict(self.statuses)}, "
            f"request errors {dict(self.request_errors)}, "
            f"failure reasons { {f'0x{k:04X}': v for k, v in self.failure_reasons.items()} }"
        )


def _request_error_kind(error: requests.RequestException) -> str:
    """A broken request in the words of the fault: refused (nothing listening) or aborted mid-request.

    A response cut off while its body was arriving (ChunkedEncodingError: the server died after it
    had started answering) is a request aborted mid-way too.
    """
    text = str(error)
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "aborted"
    if isinstance(error, requests.ConnectionError) and "refused" in text:
        return "refused"
    if isinstance(error, requests.ConnectionError) and ("aborted" in text or "reset" in text):
        return "aborted"
    return error.__class__.__name__


class StowSender(Sender):
    """Sends instances by STOW-RS in batches and, like the gateway, resends what was not acknowledged.

    Per SOP Instance UID it records what the platform told it: acknowledged (in a ReferencedSOPSequence)
    or each failure (a FailedSOPSequence item, an HTTP error status, a broken connection, a timeout).
    """

    path = "STOW-RS"

    def __init__(
        self,
        *,
        url: str,
        slug: str,
        token: str,
        instances: dict[str, bytes],
        batch_size: int = 10,
        attempts: int = 20,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__(name=f"stow-sender-{slug}", instances=instances, batch_size=batch_size, attempts=attempts)
        self.url, self.slug, self.token, self.request_timeout = url, slug, token, request_timeout

    def _send(self, pending: list[str]) -> list[str]:
        body, content_type = multipart_related(self.instances[uid] for uid in pending)
        self.in_flight_since = time.monotonic()
        try:
            response = requests.post(
                f"{self.url}/dicomweb/{self.slug}/studies",
                data=body,
                headers={
                    "Content-Type": content_type,
                    "Content-Length": str(len(body)),
                    "Accept": "application/dicom+json",
                    "Authorization": f"Bearer {self.token}",
                },
                timeout=self.request_timeout,
            )
        except requests.RequestException as error:
            self.in_flight_since = None
            self.request_errors[_request_error_kind(error)] += 1
            for uid in pending:
                self.failures[uid].append(f"request failed: {error.__class__.__name__}")
            return pending
        self.in_flight_since = None
        self.statuses[response.status_code] += 1
        try:
            answer = response.json() if response.status_code in (200, 202, 409) else None
        except ValueError:
            answer = None
        if answer is None:
            for uid in pending:
                self.failures[uid].append(f"HTTP {response.status_code}")
            return pending
        referenced = {
            item[REFERENCED_SOP_INSTANCE_UID]["Value"][0]
            for item in answer.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
        }
        failed = {
            item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [""])[0]: item[FAILURE_REASON]["Value"][0]
            for item in answer.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
        }
        for uid in pending:
            if uid in referenced:
                self.acknowledged.add(uid)
            elif uid in failed:
                self.failure_reasons[failed[uid]] += 1
                self.failures[uid].append(f"FailedSOPSequence 0x{failed[uid]:04X}")
            else:
                self.unreported.add(uid)
        return [uid for uid in pending if uid not in referenced]


class CStoreSender(Sender):
    """Sends instances by C-STORE straight to the clinic's AE title, one association per batch, like a modality.

    Per SOP Instance UID it records what the SCP answered: a Success or Warning status acknowledges it;
    a Failure status, or no answer at all (association refused, rejected or aborted, the response timed
    out) does not, and the modality resends it on a new association.
    """

    path = "C-STORE"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        called_ae_title: str,
        calling_ae_title: str,
        instances: dict[str, bytes],
        batch_size: int = 10,
        attempts: int = 20,
        timeout: float = 30.0,
    ) -> None:
        import pydicom
        from pynetdicom import AE

        super().__init__(
            name=f"c-store-sender-{called_ae_title}", instances=instances, batch_size=batch_size, attempts=attempts
        )
        self.host, self.port, self.called_ae_title = host, port, called_ae_title
        # Parsed once: a modality sends what it holds; parsing is not part of what the fault interrupts.
        self.datasets = {uid: pydicom.dcmread(io.BytesIO(data)) for uid, data in instances.items()}
        self.application_entity = AE(ae_title=calling_ae_title)
        for sop_class_uid, transfer_syntax_uid in sorted(
            {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in self.datasets.values()}
        ):
            self.application_entity.add_requested_context(sop_class_uid, transfer_syntax_uid)
        self.application_entity.acse_timeout = self.application_entity.dimse_timeout = timeout
        self.application_entity.network_timeout = timeout
        # pynetdicom logs every request at INFO: thousands of lines that say nothing the counters do not.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)

    def _send(self, pending: list[str]) -> list[str]:
        from pynetdicom.status import code_to_category

        self.in_flight_since = time.monotonic()
        association = self.application_entity.associate(self.host, self.port, ae_title=self.called_ae_title)
        try:
            if not association.is_established:
                kind = "rejected" if association.is_rejected else "refused"
                self.request_errors[kind] += 1
                for uid in pending:
                    self.failures[uid].append(f"association {kind}")
                return pending
            for position, uid in enumerate(pending):
                status = None
                if association.is_established:
                    with contextlib.suppress(RuntimeError):  # the peer went away between two requests
                        status = association.send_c_store(self.datasets[uid]).get("Status")
                if status is None:
                    # No response: whatever the SCP did with it, the modality was not told it is stored.
                    self.request_errors["aborted" if association.is_aborted else "no response"] += 1
                    for unanswered in pending[position:]:
                        self.failures[unanswered].append("association aborted, no C-STORE response")
                    break
                self.statuses[f"0x{status:04X}"] += 1
                if code_to_category(status) in ("Success", "Warning"):
                    self.acknowledged.add(uid)
                else:
                    self.failure_reasons[status] += 1
                    self.failures[uid].append(f"C-STORE status 0x{status:04X}")
        finally:
            if association.is_established:
                association.release()
            self.in_flight_since = None
        return [uid for uid in pending if uid not in self.acknowledged]

    def holds_what_was_sent(self, sop_instance_uid: str, stored: bytes) -> bool:
        # The SCP wrote its own file meta group; the data set must be the one sent, byte for byte.
        return data_set_of(stored) == data_set_of(self.instances[sop_instance_uid])


class UploadSender(Sender):
    """Uploads instances as the upload page does (saas/static/upload.js), with a token instead of a session.

    One .zip per study (a clinic zipping each study's folder), declared in a batch, then sent in chunks at
    Upload-Offset. On a dropped connection or a 5xx it waits, asks the server how much of the file it holds
    and resumes from there; a 409 names where the server's copy ends. Then it finishes the batch and polls
    it for the summary. Per SOP Instance UID the summary decides: acknowledged when its study's
    `instances_accepted` covers it and no refused, skipped or failed row names it (or its archive).
    """

    path = "upload"

    def __init__(
        self,
        *,
        url: str,
        token: str,
        instances: dict[str, bytes],
        # Far smaller than the page's 8 MiB, so that each archive takes several chunks and a fault lands mid-file.
        chunk_bytes: int = 32 * 1024,
        attempts: int = 20,
        request_timeout: float = 30.0,
        summary_timeout: float = 240.0,
    ) -> None:
        import pydicom

        super().__init__(name="upload-sender", instances=instances, attempts=attempts)
        self.url, self.token = url, token
        self.chunk_bytes, self.request_timeout, self.summary_timeout = chunk_bytes, request_timeout, summary_timeout
        self.study_of = {
            uid: str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)
            for uid, data in instances.items()
        }
        by_study: dict[str, list[str]] = defaultdict(list)
        for uid, study_instance_uid in self.study_of.items():
            by_study[study_instance_uid].append(uid)
        # (name, bytes, SOP Instance UIDs inside), one archive per study in sending order.
        self.files: list[tuple[str, bytes, list[str]]] = []
        for number, uids in enumerate(by_study.values()):
            archive = io.BytesIO()
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as writer:
                for uid in uids:
                    writer.writestr(f"{uid}.dcm", instances[uid])
            self.files.append((f"study-{number}.zip", archive.getvalue(), uids))
        # (file, the offset the server reported, the file's size) each time the sender resumed from it.
        self.resumed_at: list[tuple[str, int, int]] = []
        self.upload_summary: dict | None = None

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}/api/v1/uploads/{path}",
            headers={"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})},
            timeout=self.request_timeout,
            **kwargs,
        )

    def _with_retry(self, method: str, path: str, **kwargs) -> requests.Response:
        """The page's withRetry: a broken connection or a 5xx is tried again after a backoff."""
        for attempt in range(self.attempts):
            try:
                response = self._request(method, path, **kwargs)
            except requests.RequestException as error:
                self.request_errors[_request_error_kind(error)] += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code < 500:
                    return response
            time.sleep(min(0.5 * 2**attempt, 3.0))
        raise AssertionError(f"{method} {path}: no answer in {self.attempts} attempts; {self.summary()}")

    def run(self) -> None:
        try:
            created = self._with_retry("POST", "", json={})
            assert created.status_code == 201, created.text
            batch_id = created.json()["id"]
            for name, data, uids in self.files:
                self._send_file(batch_id, name, data, uids)
                self.progress += len(uids)
            finished = self._with_retry("POST", f"{batch_id}/finish", json={})
            assert finished.status_code in (200, 202), finished.text
            deadline = time.monotonic() + self.summary_timeout
            state = finished.json()
            while state["status"] != "processed":
                assert time.monotonic() < deadline, f"no summary in {self.summary_timeout:g} s: {state}"
                time.sleep(1.0)
                polled = self._with_retry("GET", batch_id)
                assert polled.status_code == 200, polled.text
                state = polled.json()
            self.upload_summary = state["summary"]
            self._account(state["summary"])
        except BaseException as error:  # reported by finish(), not lost in the thread
            self.error = error

    def _send_file(self, batch_id: str, name: str, data: bytes, uids: list[str]) -> None:
        declared = self._with_retry("POST", f"{batch_id}/files/", json={"name": name, "size": len(data)})
        assert declared.status_code == 201, declared.text
        file_path = f"{batch_id}/files/{declared.json()['id']}"
        offset = attempt = 0
        while offset < len(data):
            end = min(offset + self.chunk_bytes, len(data))
            # Only a chunk neither first nor last marks the sender mid-request: a fault there, or just after it,
            # leaves the file half-sent, to be resumed mid-file.
            self.in_flight_since = time.monotonic() if 0 < offset and end < len(data) else None
            try:
                response = self._request(
                    "PUT",
                    file_path,
                    data=data[offset:end],
                    headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
                )
            except requests.RequestException as error:
                self.request_errors[_request_error_kind(error)] += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code < 500:
                    received = response.json().get("received")
                    if not isinstance(received, int) or response.status_code not in (200, 409):
                        # The page gives up on the file for any other answer; the summary then names it incomplete.
                        for uid in uids:
                            self.failures[uid].append(f"chunk at byte {offset}: HTTP {response.status_code}")
                        return
                    if response.status_code == 409:
                        self.resumed_at.append((name, received, len(data)))
                    offset, attempt = received, 0
                    continue
            finally:
                self.in_flight_since = None
            assert attempt < self.attempts, f"{name}: gave up at byte {offset}; {self.summary()}"
            time.sleep(min(0.5 * 2**attempt, 3.0))
            attempt += 1
            # Resume from what the server holds, never from what this side believes it sent.
            with contextlib.suppress(requests.RequestException):
                state = self._request("GET", file_path)
                if state.status_code == 200:
                    offset = state.json()["received"]
                    self.resumed_at.append((name, offset, len(data)))

    def _account(self, summary: dict) -> None:
        uids_of_file = {name: uids for name, _, uids in self.files}
        not_stored: set[str] = set()
        for listed in ("refused", "skipped", "failed"):
            for row in summary[listed]:
                archive_name, _, entry = row["file"].partition("/")
                named = [entry.removesuffix(".dcm")] if entry else uids_of_file.get(archive_name, [])
                for uid in named:
                    not_stored.add(uid)
                    self.failures[uid].append(f"{listed}: {row['reason']}")
        accepted = {study["study_instance_uid"]: study["instances_accepted"] for study in summary["studies"]}
        for _, _, uids in self.files:
            stored = [uid for uid in uids if uid not in not_stored]
            if accepted.get(self.study_of[uids[0]], 0) == len(stored):
                self.acknowledged.update(stored)
            else:
                self.unreported.update(stored)
        self.given_up = set(self.instances) - self.acknowledged


@pytest.fixture
def start_sender(request):
    """Start a sender; the test's outcome is logged to results.log in LOG_DIR."""
    started = time.monotonic()
    senders: list[Sender] = []

    def start(sender: Sender) -> Sender:
        sender.start()
        senders.append(sender)
        return sender

    yield start
    record_result(request.node.name, senders, started)


# --- what the platform holds -------------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    orthanc_uids: list[str]
    # sop_instance_uid -> (s3_key, sha256, archived)
    index: dict[str, tuple[str, str, bool]]
    index_rows: int
    # study_instance_uid -> (instance_count column, Instance rows), and the same per series
    study_counts: dict[str, tuple[int, int]]
    series_counts: dict[str, tuple[int, int]]


def orthanc_sop_instance_uids(tenant) -> list[str]:
    from tenants.orthanc import orthanc_endpoint

    endpoint = orthanc_endpoint(tenant)
    response = requests.get(f"{endpoint.http_url}/instances?expand", auth=endpoint.auth, timeout=30)
    response.raise_for_status()
    return [item["MainDicomTags"]["SOPInstanceUID"] for item in response.json()]


def index_holdings(tenant) -> tuple[dict, int, dict, dict]:
    from django.db.models import Count

    from saas.studies.models import Instance, Series, Study
    from tenants.context import tenant_context

    def read():
        with tenant_context(tenant_ids=[tenant.pk]):
            rows = list(
                Instance.objects.filter(tenant=tenant).values_list(
                    "sop_instance_uid", "s3_key", "sha256", "archived_at"
                )
            )
            studies = {
                uid: (column, rows)
                for uid, column, rows in Study.objects.filter(tenant=tenant)
                .annotate(rows=Count("instances"))
                .values_list("study_instance_uid", "instance_count", "rows")
            }
            series = {
                uid: (column, rows)
                for uid, column, rows in Series.objects.filter(tenant=tenant)
                .annotate(rows=Count("instances"))
                .values_list("series_instance_uid", "instance_count", "rows")
            }
        index = {uid: (key, sha256, archived_at is not None) for uid, key, sha256, archived_at in rows}
        return index, len(rows), studies, series

    return committed(read)


def holdings(tenant) -> Holdings:
    index, index_rows, studies, series = index_holdings(tenant)
    return Holdings(orthanc_sop_instance_uids(tenant), index, index_rows, studies, series)


def wait_until_indexed_and_archived(
    tenant, sender: Sender, *, stall_timeout: float = 90, overall_timeout: float = 270
) -> Holdings:
    """Poll as an on-call engineer would watch the dashboard: until the index covers Orthanc and all is archived.

    Archiving 500 instances on two busy cores takes minutes, so only a stall (no instance indexed or
    archived for `stall_timeout`, longer than the sweeper's 60 s period) or the overall cap fails the test.
    """
    started = last_change = time.monotonic()
    last_progress: tuple[int, int] | None = None
    current: Holdings | None = None
    while True:
        with contextlib.suppress(requests.RequestException):
            current = holdings(tenant)
        if current is not None:
            indexed = set(current.index)
            archived = sum(1 for _, _, is_archived in current.index.values() if is_archived)
            if (
                sender.acknowledged <= indexed
                and set(current.orthanc_uids) <= indexed
                and archived == len(current.index)
            ):
                return current
            if (len(indexed), archived) != last_progress:
                last_progress, last_change = (len(indexed), archived), time.monotonic()
        now = time.monotonic()
        if now - last_change > stall_timeout or now - started > overall_timeout:
            state = "no holdings read"
            if current is not None:
                missing = sender.acknowledged - set(current.index)
                state = (
                    f"{len(missing)} acknowledged instances not indexed, "
                    f"{len(current.index) - last_progress[1]} of {len(current.index)} indexed not archived, "
                    f"Orthanc holds {len(current.orthanc_uids)}"
                )
            raise AssertionError(
                f"the platform did not settle ({now - started:.0f} s, last progress {now - last_change:.0f} s ago): "
                f"{state}; {sender.summary()}"
            )
        time.sleep(1.0)


def s3_archive(tenant) -> dict[str, bytes]:
    """Every object in the tenant's bucket: key -> body."""
    from tenants.provisioning.storage import s3_client

    client = s3_client()
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=tenant.s3_bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = client.get_object(Bucket=tenant.s3_bucket, Key=item["Key"])["Body"].read()
    return objects


def archived_count(tenant) -> int:
    from saas.studies.models import Instance
    from tenants.context import tenant_context

    def read():
        with tenant_context(tenant_ids=[tenant.pk]):
            return Instance.objects.filter(tenant=tenant, archived_at__isnull=False).count()

    return committed(read)


def record_result(name: str, senders: list[Sender], started: float) -> None:
    """One line per test in results.log in LOG_DIR: what each sender saw, and how long the test took."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    seen = " | ".join(sender.summary() for sender in senders)
    with open(LOG_DIR / "results.log", "a") as results:
        results.write(f"{time.strftime('%H:%M:%S')} {name}: {time.monotonic() - started:.0f} s; {seen}\n")


def assert_nothing_lost(tenant, sender: Sender) -> Holdings:
    """The issue's promise, checked in Orthanc, the index and S3 against what the sender was told."""
    current = wait_until_indexed_and_archived(tenant, sender)
    assert sender.unreported == set(), f"{len(sender.unreported)} instances were answered for by neither sequence"
    # Every instance the sender was told succeeded is in Orthanc, once.
    orthanc = Counter(current.orthanc_uids)
    not_in_orthanc = sender.acknowledged - set(orthanc)
    assert not not_in_orthanc, f"{len(not_in_orthanc)} acknowledged instances are not in Orthanc"
    assert [uid for uid, count in orthanc.items() if count > 1] == []
    assert set(orthanc) <= set(sender.instances), "Orthanc holds an instance nobody sent"
    # ... in the index exactly once (the unique constraint makes twice impossible; rows == distinct UIDs),
    # and the index holds what Orthanc holds, nothing more.
    assert current.index_rows == len(current.index) == len(orthanc)
    assert set(current.index) == set(orthanc)
    # The counters the worklist shows agree with the rows (a replayed change is never counted twice).
    assert {uid: column for uid, (column, _) in current.study_counts.items()} == {
        uid: rows for uid, (_, rows) in current.study_counts.items()
    }
    assert {uid: column for uid, (column, _) in current.series_counts.items()} == {
        uid: rows for uid, (_, rows) in current.series_counts.items()
    }
    # ... and in S3 exactly once, at its key, with the indexed SHA-256.
    archive = s3_archive(tenant)
    archived_uids = Counter(key.rsplit("/", 1)[-1].removesuffix(".dcm") for key in archive)
    assert [uid for uid, count in archived_uids.items() if count > 1] == []
    assert set(archived_uids) == set(current.index)
    for uid, (key, sha256, archived) in current.index.items():
        assert archived and key in archive, uid
        assert hashlib.sha256(archive[key]).hexdigest() == sha256, f"{key}: archived bytes differ from the index"
        assert sender.holds_what_was_sent(uid, archive[key]), f"{key}: archived bytes differ from what the clinic sent"
    # Every instance never acknowledged was reported to the sender as failed (and none went unanswered, above).
    never_acknowledged = set(sender.instances) - sender.acknowledged
    assert never_acknowledged == sender.given_up
    assert all(sender.failures[uid] for uid in never_acknowledged)
    return current
