"""`make bench`: platform paths against direct access, printed as a table and written to var/bench/results.json.

Runs against the local stack that `make up` started (web process, Celery worker and beat included), with
local settings. Each result says whether its target was met; a miss is printed, never tuned away.
`BENCH_ONLY=name,name` runs a subset: a result's name, or a group (`ingest`, `dicomweb`, `viewer`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.config.settings.local")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
import requests  # noqa: E402
from django.conf import settings  # noqa: E402

from saas.audit.enums import AuditAction, AuditEventId  # noqa: E402
from saas.audit.services import audit_record  # noqa: E402
from saas.config.celery import app as celery_app  # noqa: E402
from saas.studies.synthetic import ct_series, dataset_bytes  # noqa: E402
from tenants.enums import TokenScope  # noqa: E402
from tenants.orthanc import orthanc_endpoint  # noqa: E402
from tenants.services import api_token_create, tenant_create  # noqa: E402
from tests.bench.ai import bench_ai  # noqa: E402
from tests.bench.dicomweb import bench_frames, bench_metadata, bench_study  # noqa: E402
from tests.bench.ingest import bench_ingest  # noqa: E402
from tests.bench.results import Result  # noqa: E402
from tests.bench.viewer import bench_viewer  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))


QIDO_ADDED_MS_TARGET = 15.0
AUDIT_RATIO_TARGET = 0.2


def stack_check() -> None:
    """The ingest benchmarks wait on the Celery worker: refuse to start without one that has the studies tasks."""
    replies = celery_app.control.inspect(timeout=3.0).registered() or {}
    if not any("studies.sync_tenant" in tasks for tasks in replies.values()):
        raise SystemExit(
            "No running Celery worker has the studies tasks (it answered: "
            f"{replies or 'nothing'}): it started before this code. Restart the stack: make down && make up"
        )


def stack_staleness() -> list[str]:
    """`make up` restarts a service only when its command line or configuration changed, not when the code did."""
    state_file = Path(settings.VAR_DIR) / "stack.json"
    if not state_file.exists():
        return []
    sources = [path for folder in ("saas", "tenants") for path in (Path(settings.BASE_DIR) / folder).rglob("*.py")]
    newest = max(sources, key=lambda path: path.stat().st_mtime)
    warnings = []
    for name, process in sorted(json.loads(state_file.read_text()).get("processes", {}).items()):
        if name not in {"web", "worker", "beat"}:
            continue
        try:
            started = Path(f"/proc/{process['pid']}").stat().st_mtime
        except (FileNotFoundError, KeyError):
            continue
        if started < newest.stat().st_mtime:
            warnings.append(
                f"warning: {name} (pid {process['pid']}) started before {newest.relative_to(settings.BASE_DIR)}"
                " last changed, so it may run older code; `make down && make up` restarts it"
            )
    return warnings


def _p50_ms(call, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def bench_audit_record() -> Result:
    """Hash-chained audit appends vs plain INSERTs of the same rows into an unchained table."""
    database = settings.DATABASES["default"]
    with psycopg.connect(
        host=database["HOST"],
        port=database["PORT"],
        dbname=database["NAME"],
        user=database["USER"],
        password=database["PASSWORD"],
        autocommit=True,
    ) as connection:
        connection.execute(
            "CREATE TEMP TABLE bench_plain (LIKE audit_auditevent INCLUDING DEFAULTS INCLUDING IDENTITY)"
        )

        def plain():
            connection.execute(
                "INSERT INTO bench_plain (tenant_id, seq, event_id, action, outcome, actor_username, actor_role,"
                " patient_ids, study_instance_uids, detail, occurred_at, prev_hash, hash)"
                " VALUES (NULL, 1, 110103, 'R', 0, 'bench', '', '{P1}', '{1.2.3}', '{}', now(), '', '')"
            )

        def chained():
            audit_record(
                event_id=AuditEventId.INSTANCES_ACCESSED,
                action=AuditAction.READ,
                tenant_id=None,
                actor_username="bench",
                patient_ids=["P1"],
                study_instance_uids=["1.2.3"],
            )

        baseline = _p50_ms(plain, ROUNDS)
        value = _p50_ms(chained, ROUNDS)
    ratio = baseline / value
    return Result(
        "audit_record_p50_ms",
        round(value, 3),
        "ms",
        round(baseline, 3),
        round(ratio, 3),
        f"ratio >= {AUDIT_RATIO_TARGET}",
        ratio >= AUDIT_RATIO_TARGET,
    )


def bench_qido() -> Result:
    """QIDO-RS study search through the platform (auth, tenant check, audit) vs straight from Orthanc."""
    tenant, _ = tenant_create(slug="bench", name="Benchmark Clinic")
    endpoint = orthanc_endpoint(tenant)
    found = requests.post(
        f"{endpoint.http_url}/tools/find",
        json={"Level": "Study", "Query": {"PatientID": "BENCH-1"}},
        auth=endpoint.auth,
        timeout=30,
    )
    if not found.json():
        for dataset in ct_series(
            patient_id="BENCH-1", patient_name="Bench^Patient", accession_number="BENCH1", slices=4
        ):
            requests.post(
                f"{endpoint.http_url}/instances", data=dataset_bytes(dataset), auth=endpoint.auth, timeout=30
            ).raise_for_status()
    _, raw = api_token_create(
        tenant=tenant, name="bench", scopes=[TokenScope.STUDIES_READ], expires_in=timedelta(hours=1)
    )
    platform = requests.Session()
    platform.headers["Authorization"] = f"Bearer {raw}"
    direct = requests.Session()
    direct.auth = endpoint.auth
    platform_url = f"{settings.READROOM_PUBLIC_URL}/dicomweb/{tenant.slug}/studies"
    direct_url = f"{endpoint.http_url}/dicom-web/studies"
    params = {"PatientID": "BENCH-1"}
    assert platform.get(platform_url, params=params, timeout=30).status_code == 200, (
        "the web process must be up (make up)"
    )
    baseline = _p50_ms(lambda: direct.get(direct_url, params=params, timeout=30).raise_for_status(), ROUNDS)
    value = _p50_ms(lambda: platform.get(platform_url, params=params, timeout=30).raise_for_status(), ROUNDS)
    return Result(
        "qido_studies_p50_ms",
        round(value, 3),
        "ms",
        round(baseline, 3),
        round(baseline / value, 3),
        f"added p50 <= {QIDO_ADDED_MS_TARGET:g} ms",
        value - baseline <= QIDO_ADDED_MS_TARGET,
    )


def _selected() -> set[str] | None:
    names = {name.strip() for name in os.environ.get("BENCH_ONLY", "").split(",") if name.strip()}
    return names or None


def main() -> int:
    only = _selected()

    def wanted(group: str, *names: str) -> bool:
        return only is None or group in only or any(name in only for name in names)

    stack_check()
    for warning in stack_staleness():
        print(warning, flush=True)
    results: list[Result] = []
    details: list[str] = []
    if wanted("audit", "audit_record_p50_ms"):
        results.append(bench_audit_record())
    if wanted("qido", "qido_studies_p50_ms"):
        results.append(bench_qido())
    if wanted("ingest", "ingest_cstore", "ingest_stow", "study_complete_latency"):
        ingest_results, ingest_details = bench_ingest()
        results += ingest_results
        details += ingest_details
    # The DICOMweb and viewer benchmarks share one 500-slice CT (stored and indexed on the first run).
    read_names = (
        "dicomweb_metadata_ratio",
        "dicomweb_frames_ratio",
        "viewer_first_image_ms",
        "viewer_series_loaded_ms",
    )
    if wanted("dicomweb", *read_names[:2]) or wanted("viewer", *read_names[2:]):
        study = bench_study()
        if wanted("dicomweb", "dicomweb_metadata_ratio"):
            results.append(bench_metadata(study))
        if wanted("dicomweb", "dicomweb_frames_ratio"):
            results.append(bench_frames(study))
        if wanted("viewer", *read_names[2:]):
            viewer_results, viewer_details = bench_viewer(study)
            results += viewer_results
            details += viewer_details
    if wanted("ai", "ai_ct_seconds", "ai_time_to_triage"):
        everything = only is None or "ai" in only
        ai_results, ai_details = bench_ai(
            ct_seconds=everything or "ai_ct_seconds" in only, time_to_triage=everything or "ai_time_to_triage" in only
        )
        results += ai_results
        details += ai_details
    if not results:
        raise SystemExit(f"BENCH_ONLY={os.environ.get('BENCH_ONLY')} names no benchmark")
    output = Path(settings.VAR_DIR) / "bench" / "results.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n")
    for line in details:
        print(line)
    print()
    print(f"{'name':<24} {'value':>10} {'unit':<6} {'baseline':>10} {'ratio':>7}  {'met':<5} target")
    for r in results:
        met = "yes" if r.met else "NO"
        print(f"{r.name:<24} {r.value:>10} {r.unit:<6} {r.baseline:>10} {r.ratio:>7}  {met:<5} {r.target}")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
