"""DICOMweb read benchmarks: a 500-slice CT's series metadata and frames, through the platform vs straight from Orthanc.

Both paths read the same study of the `bench-viewer` clinic in the same run: the platform with a
`studies:read` token (access check, audit count, streaming relay, gzip for metadata as a browser asks),
Orthanc with the tenant's own credentials. The two are measured in turns (round by round for metadata,
pass by pass for frames), so a machine whose load changes during the run weighs on both alike. The
study is stored once into the tenant's Orthanc and indexed by the running stack's Celery sync; later
runs reuse it. Imported by `tests.bench.__main__` after `django.setup()`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings

from saas.studies.models import Instance, Series
from saas.studies.synthetic import dataset_bytes, iter_ct_series
from tenants.context import tenant_context
from tenants.enums import TokenScope
from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint
from tenants.services import api_token_create, tenant_create, tenant_provision
from tests.bench.results import Result

TENANT_SLUG = "bench-viewer"
PATIENT_ID = "BENCH-VIEW-1"
SLICES = 500
# A diagnostic CT slice: 512 x 512 int16 (512 KiB a frame, 256 MiB the series).
SLICE_PIXELS = 512
STORE_CLIENTS = 4
INDEX_TIMEOUT_S = 600.0
METADATA_ROUNDS = 20
FRAME_CLIENTS = 6
METADATA_ADDED_MS_TARGET = 10.0
FRAMES_RATIO_TARGET = 0.9
FRAMES_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@dataclass(frozen=True)
class BenchStudy:
    tenant: Tenant
    token: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: list[str]

    def platform_series_url(self) -> str:
        return (
            f"{settings.READROOM_PUBLIC_URL}/dicomweb/{self.tenant.slug}/studies/{self.study_instance_uid}"
            f"/series/{self.series_instance_uid}"
        )

    def orthanc_series_url(self) -> str:
        endpoint = orthanc_endpoint(self.tenant)
        return f"{endpoint.http_url}/dicom-web/studies/{self.study_instance_uid}/series/{self.series_instance_uid}"


def _indexed(tenant: Tenant, study_instance_uid: str) -> tuple[str, list[str]] | None:
    with tenant_context(tenant_ids=[tenant.pk]):
        series = Series.objects.filter(study__study_instance_uid=study_instance_uid).first()
        if series is None:
            return None
        instances = Instance.objects.filter(series=series).order_by("instance_number")
        sop_uids = list(instances.values_list("sop_instance_uid", flat=True))
    return (series.series_instance_uid, sop_uids) if len(sop_uids) == SLICES else None


def bench_study() -> BenchStudy:
    """The 500-slice CT in the bench clinic's Orthanc and index, stored on the first run only."""
    tenant, _ = tenant_create(slug=TENANT_SLUG, name="Benchmark Viewer Clinic")
    tenant = tenant_provision(tenant=tenant)
    endpoint = orthanc_endpoint(tenant)
    found = requests.post(
        f"{endpoint.http_url}/tools/find",
        json={"Level": "Study", "Query": {"PatientID": PATIENT_ID}, "Expand": True},
        auth=endpoint.auth,
        timeout=30,
    )
    found.raise_for_status()
    if found.json():
        study_instance_uid = found.json()[0]["MainDicomTags"]["StudyInstanceUID"]
    else:
        datasets = iter_ct_series(
            patient_id=PATIENT_ID,
            patient_name="Bench^Viewer",
            accession_number="BENCHVIEW1",
            series_description="Axial 1mm",
            slices=SLICES,
            rows=SLICE_PIXELS,
            columns=SLICE_PIXELS,
            slice_thickness=1.0,
        )
        session = requests.Session()
        session.auth = endpoint.auth

        def store(dataset) -> str:
            session.post(f"{endpoint.http_url}/instances", data=dataset_bytes(dataset), timeout=60).raise_for_status()
            return dataset.StudyInstanceUID

        with ThreadPoolExecutor(STORE_CLIENTS) as pool:
            study_instance_uid = list(pool.map(store, datasets))[0]
    # The running stack's Celery sync indexes what Orthanc holds; the platform serves only indexed studies.
    deadline = time.monotonic() + INDEX_TIMEOUT_S
    while (indexed := _indexed(tenant, study_instance_uid)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the bench CT was not indexed within {INDEX_TIMEOUT_S:.0f} s; is Celery beat running?")
        time.sleep(1.0)
    _, token = api_token_create(
        tenant=tenant, name="bench-viewer", scopes=[TokenScope.STUDIES_READ], expires_in=timedelta(hours=1)
    )
    return BenchStudy(tenant, token, study_instance_uid, indexed[0], indexed[1])


def _ms(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _p50s_in_turns(first: Callable[[], None], second: Callable[[], None], rounds: int) -> tuple[float, float]:
    """Median milliseconds of each call, measured alternately (and in alternating order) round by round."""
    timings: tuple[list[float], list[float]] = ([], [])
    for round_number in range(rounds):
        order = (0, 1) if round_number % 2 == 0 else (1, 0)
        for index in order:
            timings[index].append(_ms((first, second)[index]))
    return statistics.median(timings[0]), statistics.median(timings[1])


def _sessions(study: BenchStudy) -> tuple[requests.Session, requests.Session]:
    platform = requests.Session()
    platform.headers["Authorization"] = f"Bearer {study.token}"
    direct = requests.Session()
    direct.auth = orthanc_endpoint(study.tenant).auth
    return platform, direct


def bench_metadata(study: BenchStudy) -> Result:
    """Series /metadata (500 instances) through the platform vs from Orthanc; both asked for gzip like a browser."""
    platform, direct = _sessions(study)
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}

    def fetch(session: requests.Session, url: str) -> Callable[[], None]:
        def call() -> None:
            response = session.get(f"{url}/metadata", headers=headers, timeout=120)
            response.raise_for_status()
            assert len(response.json()) == SLICES

        return call

    platform_call = fetch(platform, study.platform_series_url())
    direct_call = fetch(direct, study.orthanc_series_url())
    # One warm-up each: Orthanc's first read of 500 files from disk is not what a reader waits for twice.
    platform_call()
    direct_call()
    baseline, value = _p50s_in_turns(direct_call, platform_call, METADATA_ROUNDS)
    return Result(
        "dicomweb_metadata_ratio",
        round(value, 3),
        "ms",
        round(baseline, 3),
        round(baseline / value, 3),
        f"added p50 <= {METADATA_ADDED_MS_TARGET:g} ms",
        value - baseline <= METADATA_ADDED_MS_TARGET,
    )


def _frames_timed(session: requests.Session, series_url: str, sop_uids: list[str]) -> float:
    """Seconds to fetch every frame with FRAME_CLIENTS parallel clients."""

    def fetch(sop_uid: str) -> int:
        response = session.get(
            f"{series_url}/instances/{sop_uid}/frames/1", headers={"Accept": FRAMES_ACCEPT}, timeout=120
        )
        response.raise_for_status()
        return len(response.content)

    started = time.perf_counter()
    with ThreadPoolExecutor(FRAME_CLIENTS) as pool:
        sizes = list(pool.map(fetch, sop_uids))
    elapsed = time.perf_counter() - started
    assert all(size >= SLICE_PIXELS * SLICE_PIXELS * 2 for size in sizes), "a frame came back short"
    return elapsed


def bench_frames(study: BenchStudy) -> Result:
    """All 500 frames with 6 parallel clients, through the platform vs from Orthanc: throughput ratio."""
    platform, direct = _sessions(study)
    platform_url, direct_url = study.platform_series_url(), study.orthanc_series_url()
    frames = study.sop_instance_uids
    # Warm-up pass each (files into the page cache, connections open), then two measured passes each,
    # in turns: direct, platform, platform, direct.
    _frames_timed(direct, direct_url, frames)
    _frames_timed(platform, platform_url, frames)
    direct_s = _frames_timed(direct, direct_url, frames)
    platform_s = _frames_timed(platform, platform_url, frames) + _frames_timed(platform, platform_url, frames)
    direct_s += _frames_timed(direct, direct_url, frames)
    baseline, value = 2 * len(frames) / direct_s, 2 * len(frames) / platform_s
    ratio = value / baseline
    return Result(
        "dicomweb_frames_ratio",
        round(value, 1),
        "fps",
        round(baseline, 1),
        round(ratio, 3),
        f"ratio >= {FRAMES_RATIO_TARGET}",
        ratio >= FRAMES_RATIO_TARGET,
    )
