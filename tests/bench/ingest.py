"""Ingest benchmarks: one 500-instance CT over C-STORE and over STOW-RS, the platform against a bare Orthanc.

The platform counts an instance once it is indexed and archived (`Instance.archived_at` set after
S3 confirmed its SHA-256); the bare Orthanc, started here with the tenant's own configuration,
counts it once it answered the store. Both run side by side in this process, on the same files.
Imported by `tests.bench.__main__` after `django.setup()`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import requests
from django.conf import settings
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from saas.config.celery import app as celery_app
from saas.studies.models import Instance, StudyCompletion
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.enums import TokenScope
from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint, orthanc_spec
from tenants.provisioning.base import OrthancEndpoint, free_port
from tenants.provisioning.local import LocalOrthancDriver
from tenants.services import api_token_create, tenant_create, tenant_provision
from tests.bench.results import Result

INSTANCES = 500
# 128 x 128 int16 slices (about 33 KiB per file, 16 MiB per study): small enough that each
# path's per-instance work is measured rather than disk or loopback bandwidth.
SLICE_PIXELS = 128
STOW_BATCH = 50
STOW_CLIENTS = 4
# Past this a platform run reports what it reached (target missed) instead of waiting on; with the
# drain below, the whole `make bench` stays near five minutes however slow the pipeline is.
PIPELINE_TIMEOUT_S = 80.0
# Not counted: the C-STORE run's unarchived rest gets this long before the STOW-RS run starts, so
# that the STOW-RS study queues behind as little of it as possible (what is left is reported).
DRAIN_TIMEOUT_S = 40.0
POLL_INTERVAL_S = 0.25
TENANT_SLUG = "bench-ingest"
BARE_SLUG = "bench-bare"
BARE_AE_TITLE = "BENCH_BARE"
MODALITY_AE_TITLE = "BENCH_CT"
THROUGHPUT_TARGET = 0.8
COMPLETION_TARGET_S = 10.0


@dataclass(frozen=True)
class PipelineRun:
    """What the platform did with one study, from the index's own timestamps."""

    started_at: datetime
    acknowledged_at: datetime
    archived: int
    # The last archive and the last index entry, set only once every instance got that far, else None.
    archived_at: datetime | None
    indexed_at: datetime | None
    completed_at: datetime | None
    archive_lag_s: list[float]
    timed_out: bool
    # When the wait ended, so that a completion never reached still gives a lower bound.
    waited_until: datetime
    # Celery messages already waiting when the run began (an earlier run's archive backlog delays this one).
    queued_at_start: int

    def seconds(self, moment: datetime | None) -> float | None:
        return None if moment is None else (moment - self.started_at).total_seconds()


def _ingest_tenant() -> Tenant:
    tenant, _ = tenant_create(slug=TENANT_SLUG, name="Benchmark Ingest Clinic")
    if not tenant.accept_unknown_modalities:
        # A benchmark clinic on loopback: storescu need not be registered as one of its modalities.
        Tenant.objects.filter(pk=tenant.pk).update(accept_unknown_modalities=True)
        tenant.refresh_from_db()
    # Restarts the tenant's Orthanc when the setting above changed its configuration.
    return tenant_provision(tenant=tenant)


def _bare_orthanc(driver: LocalOrthancDriver, tenant: Tenant) -> OrthancEndpoint:
    """An Orthanc with the tenant's configuration (same orthanc_configuration), only its identity and ports differ."""
    used = {
        port
        for pair in Tenant.objects.values_list("orthanc_http_port", "dicom_port")
        for port in pair
        if port is not None
    }
    http_port = free_port(excluded=used, start=settings.READROOM_ORTHANC_HTTP_PORTS[0], end=65000)
    dicom_port = free_port(excluded=used | {http_port}, start=settings.READROOM_ORTHANC_DICOM_PORTS[0], end=65000)
    spec = dataclasses.replace(
        orthanc_spec(tenant),
        slug=BARE_SLUG,
        http_port=http_port,
        dicom_port=dicom_port,
        dicom_ae_title=BARE_AE_TITLE,
        username="bench",
        password=secrets.token_urlsafe(16),
        accept_unknown_modalities=True,
    )
    return driver.ensure_running(spec)


def _restamp(datasets: Sequence[Dataset]) -> None:
    """The same pixels and tags as a new study: fresh Study, Series, Frame of Reference and SOP Instance UIDs."""
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    accession_number = f"BS{uuid.uuid4().hex[:10].upper()}"
    for dataset in datasets:
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.AccessionNumber = accession_number
        dataset.StudyID = accession_number
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


def _storescu(endpoint: OrthancEndpoint, directory: Path) -> None:
    """One association, every file of the directory, as a modality sends a series."""
    completed = subprocess.run(
        [
            "storescu",
            "-aet",
            MODALITY_AE_TITLE,
            "-aec",
            endpoint.dicom_ae_title,
            "+sd",
            endpoint.dicom_host,
            str(endpoint.dicom_port),
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        # DCMTK leaves Nagle on unless TCP_NODELAY=1; with it on, the sender's own small writes meet
        # delayed ACKs and add about 40 ms to every instance, to the bare Orthanc and the tenant's alike.
        # The sender is not what is measured here, so it sends without that delay.
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"storescu to {endpoint.dicom_ae_title} failed: {completed.stderr[-2000:]}")


def _multipart(parts: Sequence[bytes]) -> tuple[bytes, str]:
    boundary = f"readroom-bench-{uuid.uuid4().hex}"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _stow(url: str, bodies: Sequence[tuple[bytes, str, int]], *, auth=None, token: str | None = None) -> None:
    """Send every batch with STOW_CLIENTS clients in parallel; each batch must be stored whole."""
    local = threading.local()

    def send(item: tuple[bytes, str, int]) -> None:
        body, content_type, count = item
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.auth = auth
            if token:
                session.headers["Authorization"] = f"Bearer {token}"
        response = session.post(
            url,
            data=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            timeout=PIPELINE_TIMEOUT_S,
        )
        stored = len(response.json().get("00081199", {}).get("Value", [])) if response.status_code == 200 else 0
        if stored != count:
            raise RuntimeError(
                f"STOW-RS to {url}: HTTP {response.status_code}, {stored}/{count} stored: {response.text[:500]}"
            )

    with ThreadPoolExecutor(STOW_CLIENTS) as pool:
        list(pool.map(send, bodies))


def _orthanc_instance_count(endpoint: OrthancEndpoint) -> int:
    response = requests.get(f"{endpoint.http_url}/statistics", auth=endpoint.auth, timeout=30)
    response.raise_for_status()
    return int(response.json()["CountInstances"])


def _archived_count(tenant: Tenant, sop_instance_uids: list[str]) -> int:
    with tenant_context(tenant_ids=[tenant.pk]):
        return Instance.objects.filter(sop_instance_uid__in=sop_instance_uids, archived_at__isnull=False).count()


def _drain(tenant: Tenant, sop_instance_uids: list[str]) -> int:
    """Wait up to DRAIN_TIMEOUT_S for these instances to be archived; returns how many are still not."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (left := len(sop_instance_uids) - _archived_count(tenant, sop_instance_uids)) and (
        time.monotonic() < deadline
    ):
        time.sleep(POLL_INTERVAL_S)
    return left


def _await_pipeline(
    tenant: Tenant,
    *,
    sop_instance_uids: list[str],
    study_instance_uid: str,
    started_at: datetime,
    acknowledged_at: datetime,
    queued_at_start: int,
    await_completion: bool,
) -> PipelineRun:
    """Poll the index until every instance is archived (and the study completed, when asked) or the timeout."""
    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    while True:
        archived = _archived_count(tenant, sop_instance_uids)
        with tenant_context(tenant_ids=[tenant.pk]):
            completed = StudyCompletion.objects.filter(study__study_instance_uid=study_instance_uid).exists()
        done = archived == len(sop_instance_uids) and (completed or not await_completion)
        if done or time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    with tenant_context(tenant_ids=[tenant.pk]):
        rows = list(
            Instance.objects.filter(sop_instance_uid__in=sop_instance_uids).values_list("received_at", "archived_at")
        )
        completion = (
            StudyCompletion.objects.filter(study__study_instance_uid=study_instance_uid)
            .order_by("completed_at")
            .values_list("completed_at", flat=True)
            .first()
        )
    everything_archived = archived == len(sop_instance_uids)
    return PipelineRun(
        started_at=started_at,
        acknowledged_at=acknowledged_at,
        archived=archived,
        archived_at=max(row[1] for row in rows) if everything_archived else None,
        indexed_at=max(row[0] for row in rows) if len(rows) == len(sop_instance_uids) else None,
        completed_at=completion,
        archive_lag_s=sorted((row[1] - row[0]).total_seconds() for row in rows if row[1] is not None),
        timed_out=not done,
        waited_until=timezone.now(),
        queued_at_start=queued_at_start,
    )


def _celery_queue_depth() -> int:
    with celery_app.connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=settings.CELERY_TASK_DEFAULT_QUEUE).message_count


def _throughput(run: PipelineRun) -> float:
    """Instances per second from the first byte sent to the last archive; a timeout counts what was reached."""
    finished = run.archived_at or run.waited_until
    return run.archived / max((finished - run.started_at).total_seconds(), 1e-6)


def _describe(label: str, bare_seconds: float, run: PipelineRun) -> str:
    def at(moment: datetime | None) -> str:
        seconds = run.seconds(moment)
        return "not reached" if seconds is None else f"+{seconds:.1f} s"

    lag = run.archive_lag_s
    lag_text = (
        f"archive lag after indexing p50 {statistics.median(lag):.1f} s, max {lag[-1]:.1f} s" if lag else "no archive"
    )
    return (
        f"{label}: bare Orthanc stored {INSTANCES} in {bare_seconds:.2f} s;"
        f" platform acknowledged {at(run.acknowledged_at)},"
        f" all indexed {at(run.indexed_at)}, {run.archived}/{INSTANCES} archived {at(run.archived_at)},"
        f" study completed {at(run.completed_at)}; {lag_text}; {run.queued_at_start} Celery messages queued at start"
        + ("; TIMED OUT" if run.timed_out else "")
    )


def _throughput_result(name: str, run: PipelineRun, bare_seconds: float) -> Result:
    value = _throughput(run)
    baseline = INSTANCES / bare_seconds
    ratio = value / baseline
    return Result(
        name,
        round(value, 1),
        "inst/s",
        round(baseline, 1),
        round(ratio, 3),
        f"ratio >= {THROUGHPUT_TARGET}",
        ratio >= THROUGHPUT_TARGET and not run.timed_out,
    )


def bench_ingest() -> tuple[list[Result], list[str]]:
    """ingest_cstore, ingest_stow and study_complete_latency, plus one line of detail per path."""
    load_before = os.getloadavg()[0]
    tenant = _ingest_tenant()
    bench_dir = Path(settings.VAR_DIR) / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    # Under var/ rather than /tmp: the bare Orthanc writes to the same file system as the tenant's.
    with tempfile.TemporaryDirectory(dir=bench_dir, prefix="ingest-") as scratch:
        scratch_dir = Path(scratch)
        datasets = ct_series(
            patient_id="BENCH-INGEST",
            patient_name="Bench^Ingest",
            accession_number="BENCHINGEST",
            slices=INSTANCES,
            rows=SLICE_PIXELS,
            columns=SLICE_PIXELS,
        )
        _restamp(datasets)
        cstore_dir = scratch_dir / "cstore"
        cstore_dir.mkdir()
        for number, dataset in enumerate(datasets):
            dataset.save_as(cstore_dir / f"{number:04d}.dcm", enforce_file_format=True)
        cstore_study = datasets[0].StudyInstanceUID
        cstore_sops = [dataset.SOPInstanceUID for dataset in datasets]
        _restamp(datasets)
        stow_study = datasets[0].StudyInstanceUID
        stow_sops = [dataset.SOPInstanceUID for dataset in datasets]
        parts = [dataset_bytes(dataset) for dataset in datasets]
        stow_bodies = [
            (*_multipart(parts[start : start + STOW_BATCH]), len(parts[start : start + STOW_BATCH]))
            for start in range(0, len(parts), STOW_BATCH)
        ]

        driver = LocalOrthancDriver(scratch_dir / "orthanc")
        try:
            bare = _bare_orthanc(driver, tenant)

            started = time.perf_counter()
            _storescu(bare, cstore_dir)
            bare_cstore_s = time.perf_counter() - started
            assert _orthanc_instance_count(bare) == INSTANCES, "the bare Orthanc did not store every instance"

            queued = _celery_queue_depth()
            started_at = timezone.now()
            _storescu(orthanc_endpoint(tenant), cstore_dir)
            cstore_run = _await_pipeline(
                tenant,
                sop_instance_uids=cstore_sops,
                study_instance_uid=cstore_study,
                started_at=started_at,
                acknowledged_at=timezone.now(),
                queued_at_start=queued,
                await_completion=True,
            )

            cstore_left = _drain(tenant, cstore_sops)
            started = time.perf_counter()
            _stow(f"{bare.http_url}/dicom-web/studies", stow_bodies, auth=bare.auth)
            bare_stow_s = time.perf_counter() - started
            assert _orthanc_instance_count(bare) == 2 * INSTANCES, "the bare Orthanc did not store every instance"

            _, token = api_token_create(
                tenant=tenant, name="bench-ingest", scopes=[TokenScope.STUDIES_WRITE], expires_in=timedelta(hours=1)
            )
            queued = _celery_queue_depth()
            started_at = timezone.now()
            _stow(f"{settings.READROOM_PUBLIC_URL}/dicomweb/{tenant.slug}/studies", stow_bodies, token=token)
            stow_run = _await_pipeline(
                tenant,
                sop_instance_uids=stow_sops,
                study_instance_uid=stow_study,
                started_at=started_at,
                acknowledged_at=timezone.now(),
                queued_at_start=queued,
                await_completion=False,
            )
        finally:
            driver.stop(BARE_SLUG)

    # Not completed within the timeout: the time waited is a lower bound, and the target is missed.
    latency = ((cstore_run.completed_at or cstore_run.waited_until) - cstore_run.acknowledged_at).total_seconds()
    results = [
        _throughput_result("ingest_cstore", cstore_run, bare_cstore_s),
        _throughput_result("ingest_stow", stow_run, bare_stow_s),
        Result(
            "study_complete_latency",
            round(latency, 2),
            "s",
            float(tenant.stable_age_seconds),
            round(tenant.stable_age_seconds / latency, 3),
            f"value <= {COMPLETION_TARGET_S:g} s",
            cstore_run.completed_at is not None and latency <= COMPLETION_TARGET_S,
        ),
    ]
    details = [
        f"ingest: {INSTANCES} CT instances of {SLICE_PIXELS}x{SLICE_PIXELS} px, tenant {tenant.slug}"
        f" (StableAge {tenant.stable_age_seconds} s), STOW-RS {STOW_BATCH} per request x {STOW_CLIENTS} clients;"
        f" load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs",
        _describe("ingest_cstore", bare_cstore_s, cstore_run),
        _describe("ingest_stow", bare_stow_s, stow_run)
        + f"; {cstore_left} C-STORE instances still unarchived at start",
    ]
    return results, details
