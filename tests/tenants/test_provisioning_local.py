"""Tests for tenant provisioning against real servers: the local Orthanc driver and an rclone S3 server."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.provisioning.base import (
    OrthancDriver,
    OrthancEndpoint,
    OrthancSpec,
    OrthancUnavailable,
    free_port,
    orthanc_ping,
)
from tenants.provisioning.local import LocalOrthancDriver, _process_command_line
from tenants.provisioning.storage import bucket_ensure, bucket_name_for, s3_client, s3_ping

# Below the Linux ephemeral range, so an outgoing connection cannot grab a port between
# free_port's probe and the server's bind; the random start keeps concurrent runs apart.
PORT_RANGE_START = random.Random().randrange(20_000, 29_000, 10)
PORT_RANGE_END = PORT_RANGE_START + 1_000

SpecFactory = Callable[..., OrthancSpec]
SharedOrthanc = tuple[LocalOrthancDriver, OrthancSpec, OrthancEndpoint]


def _port_accepts_connections(port: int) -> bool:
    with socket.socket() as client:
        client.settimeout(1.0)
        return client.connect_ex(("127.0.0.1", port)) == 0


def _orthanc_processes_for(config_path: Path) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and str(config_path) in _process_command_line(int(entry.name))
    ]


def _storescu(*, calling_ae_title: str, endpoint: OrthancEndpoint, file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "storescu",
            "-aet",
            calling_ae_title,
            "-aec",
            endpoint.dicom_ae_title,
            endpoint.dicom_host,
            str(endpoint.dicom_port),
            str(file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _instance_ids(endpoint: OrthancEndpoint) -> list[str]:
    response = requests.get(endpoint.http_url + "/instances", auth=endpoint.auth, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def synthetic_ct_file(tmp_path: Path) -> Path:
    slice_dataset = ct_series(
        patient_id="SYN-100", patient_name="Synthetic^Store", accession_number="ACC-100", slices=1
    )[0]
    path = tmp_path / "slice.dcm"
    path.write_bytes(dataset_bytes(slice_dataset))
    return path


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LocalOrthancDriver]:
    local_driver = LocalOrthancDriver(tmp_path / "orthanc")
    yield local_driver
    local_driver.stop_all()


@pytest.fixture
def make_spec() -> SpecFactory:
    taken: set[int] = set()

    def factory(slug: str, **overrides: object) -> OrthancSpec:
        http_port = free_port(excluded=taken, start=PORT_RANGE_START, end=PORT_RANGE_END)
        taken.add(http_port)
        dicom_port = free_port(excluded=taken, start=PORT_RANGE_START, end=PORT_RANGE_END)
        taken.add(dicom_port)
        arguments: dict[str, object] = {
            "slug": slug,
            "http_port": http_port,
            "dicom_port": dicom_port,
            "dicom_ae_title": slug.upper().replace("-", "")[:16],
            "username": "readroom",
            "password": f"secret-{slug}",
            "stable_age_seconds": 2,
        }
        arguments.update(overrides)
        return OrthancSpec(**arguments)  # type: ignore[arg-type]

    return factory


@pytest.fixture(scope="module")
def shared_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedOrthanc]:
    """One Orthanc that accepts unknown modalities, for the tests that only read or add instances."""
    local_driver = LocalOrthancDriver(tmp_path_factory.mktemp("shared-orthanc"))
    http_port = free_port(excluded=set(), start=PORT_RANGE_START + 500, end=PORT_RANGE_END)
    dicom_port = free_port(excluded={http_port}, start=PORT_RANGE_START + 500, end=PORT_RANGE_END)
    spec = OrthancSpec(
        slug="shared-clinic",
        http_port=http_port,
        dicom_port=dicom_port,
        dicom_ae_title="SHAREDCLINIC",
        username="readroom",
        password="shared-secret",
        accept_unknown_modalities=True,
    )
    try:
        yield local_driver, spec, local_driver.ensure_running(spec)
    finally:
        local_driver.stop_all()


@pytest.mark.orthanc
def test_local_driver_satisfies_the_driver_protocol(driver: LocalOrthancDriver) -> None:
    # then the local driver can stand wherever an OrthancDriver is expected
    assert isinstance(driver, OrthancDriver)
    assert driver.name == "local"


@pytest.mark.orthanc
def test_system_answers_with_the_credentials_and_refuses_without(shared_orthanc: SharedOrthanc) -> None:
    # given a running tenant Orthanc
    _, spec, endpoint = shared_orthanc

    # when /system is asked with, without and with wrong credentials
    with_credentials = requests.get(endpoint.http_url + "/system", auth=endpoint.auth, timeout=5)
    anonymous = requests.get(endpoint.http_url + "/system", timeout=5)
    wrong_password = OrthancEndpoint(**{**endpoint.__dict__, "password": "wrong"})

    # then only the right credentials get in, and the instance is the tenant's
    assert with_credentials.status_code == 200
    system = with_credentials.json()
    assert system["Name"] == "readroom-shared-clinic"
    assert system["DicomAet"] == "SHAREDCLINIC" and system["DicomPort"] == spec.dicom_port
    assert anonymous.status_code == 401
    assert orthanc_ping(endpoint) is None
    assert "401" in (orthanc_ping(wrong_password) or "")
    assert endpoint.http_url == f"http://127.0.0.1:{spec.http_port}"


@pytest.mark.orthanc
def test_only_the_dicomweb_plugin_is_loaded_and_answers(shared_orthanc: SharedOrthanc) -> None:
    # given a running tenant Orthanc
    _, _, endpoint = shared_orthanc

    # when the plugin list and the QIDO-RS studies endpoint are asked
    plugins = requests.get(endpoint.http_url + "/plugins", auth=endpoint.auth, timeout=5).json()
    studies = requests.get(
        endpoint.http_url + "/dicom-web/studies",
        auth=endpoint.auth,
        headers={"Accept": "application/dicom+json"},
        timeout=5,
    )

    # then DICOMweb is the only plugin ("explorer.js" is Orthanc's built-in UI hook) and it answers JSON
    assert set(plugins) - {"explorer.js"} == {"dicom-web"}
    assert studies.status_code == 200
    assert isinstance(studies.json(), list)


@pytest.mark.orthanc
def test_echo_needs_the_tenant_called_ae_title(shared_orthanc: SharedOrthanc) -> None:
    # given a running tenant Orthanc
    _, _, endpoint = shared_orthanc

    # when a clinic echoes with the right and with a wrong called AE title
    right = subprocess.run(
        ["echoscu", "-aet", "CLINICPACS", "-aec", endpoint.dicom_ae_title, "127.0.0.1", str(endpoint.dicom_port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    wrong = subprocess.run(
        ["echoscu", "-aet", "CLINICPACS", "-aec", "OTHERTENANT", "127.0.0.1", str(endpoint.dicom_port)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    # then only the tenant's own AE title is accepted
    assert right.returncode == 0, right.stderr
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr


@pytest.mark.orthanc
def test_store_from_unknown_modality_lands_when_accepted(
    shared_orthanc: SharedOrthanc, synthetic_ct_file: Path
) -> None:
    # given a tenant Orthanc that accepts unknown modalities
    _, _, endpoint = shared_orthanc
    before = set(_instance_ids(endpoint))

    # when an unlisted modality C-STOREs a synthetic CT slice
    result = _storescu(calling_ae_title="WALKINCT", endpoint=endpoint, file=synthetic_ct_file)

    # then the store succeeds and exactly one new instance is in Orthanc
    assert result.returncode == 0, result.stderr
    assert len(set(_instance_ids(endpoint)) - before) == 1


@pytest.mark.orthanc
def test_store_from_unknown_modality_is_refused_when_not_accepted(
    driver: LocalOrthancDriver, make_spec: SpecFactory, synthetic_ct_file: Path
) -> None:
    # given a tenant Orthanc that only accepts its listed modality
    spec = make_spec("strict-clinic", known_modalities={"ct-room-1": ("CLINICCT1", "10.20.30.40", 104)})
    endpoint = driver.ensure_running(spec)

    # when an unlisted modality C-STOREs
    refused = _storescu(calling_ae_title="STRANGER", endpoint=endpoint, file=synthetic_ct_file)

    # then the store fails and nothing was stored
    assert refused.returncode != 0
    assert _instance_ids(endpoint) == []

    # when the listed modality stores from an address other than the configured one (clinic NAT)
    accepted = _storescu(calling_ae_title="CLINICCT1", endpoint=endpoint, file=synthetic_ct_file)

    # then it is accepted
    assert accepted.returncode == 0, accepted.stderr
    assert len(_instance_ids(endpoint)) == 1


@pytest.mark.orthanc
def test_ensure_running_twice_keeps_one_process(driver: LocalOrthancDriver, make_spec: SpecFactory) -> None:
    # given a tenant Orthanc that was started
    spec = make_spec("idem-clinic")
    first_endpoint = driver.ensure_running(spec)
    first_pid = int(driver.pid_path(spec.slug).read_text())

    # when ensure_running is called again with the same spec
    second_endpoint = driver.ensure_running(spec)

    # then the same single process serves, and the config and pid files are private where they hold secrets
    assert second_endpoint == first_endpoint
    assert int(driver.pid_path(spec.slug).read_text()) == first_pid
    assert _orthanc_processes_for(driver.config_path(spec.slug)) == [first_pid]
    assert driver.is_running(spec.slug)
    assert driver.config_path(spec.slug).stat().st_mode & 0o077 == 0


@pytest.mark.orthanc
def test_concurrent_ensure_running_starts_one_process(driver: LocalOrthancDriver, make_spec: SpecFactory) -> None:
    # given a tenant whose Orthanc is not running yet
    spec = make_spec("race-clinic")

    # when three workers ensure it at the same moment
    with ThreadPoolExecutor(max_workers=3) as workers:
        endpoints = list(workers.map(lambda _: driver.ensure_running(spec), range(3)))

    # then all get the same endpoint and a single Orthanc serves it
    assert len(set(endpoints)) == 1
    assert _orthanc_processes_for(driver.config_path(spec.slug)) == [int(driver.pid_path(spec.slug).read_text())]


@pytest.mark.orthanc
def test_changed_spec_restarts_with_the_new_configuration(driver: LocalOrthancDriver, make_spec: SpecFactory) -> None:
    # given a running tenant Orthanc
    spec = make_spec("change-clinic")
    driver.ensure_running(spec)
    old_pid = int(driver.pid_path(spec.slug).read_text())

    # when its spec changes (a new password and stable age)
    changed = OrthancSpec(**{**spec.__dict__, "password": "rotated-secret", "stable_age_seconds": 9})
    endpoint = driver.ensure_running(changed)

    # then a new process answers with the new password only, configured as asked
    new_pid = int(driver.pid_path(spec.slug).read_text())
    assert new_pid != old_pid
    assert _orthanc_processes_for(driver.config_path(spec.slug)) == [new_pid]
    assert orthanc_ping(endpoint) is None
    assert "401" in (orthanc_ping(driver.endpoint(spec)) or "")
    configuration = json.loads(driver.config_path(spec.slug).read_text())
    assert configuration["StableAge"] == 9
    assert configuration["RegisteredUsers"] == {"readroom": "rotated-secret"}


@pytest.mark.orthanc
def test_stop_leaves_nothing_listening(driver: LocalOrthancDriver, make_spec: SpecFactory) -> None:
    # given a running tenant Orthanc
    spec = make_spec("stop-clinic")
    driver.ensure_running(spec)
    pid = int(driver.pid_path(spec.slug).read_text())

    # when it is stopped, twice
    driver.stop(spec.slug)
    driver.stop(spec.slug)

    # then the process is gone, the pid file too, and neither port accepts connections
    assert not driver.is_running(spec.slug)
    assert not driver.pid_path(spec.slug).exists()
    assert not Path(f"/proc/{pid}").exists()
    assert not _port_accepts_connections(spec.http_port)
    assert not _port_accepts_connections(spec.dicom_port)


@pytest.mark.orthanc
def test_stale_pid_files_are_replaced_without_touching_the_stranger(
    driver: LocalOrthancDriver, make_spec: SpecFactory
) -> None:
    # given a pid file naming an unrelated live process (pid reused after a crash or reboot)
    spec = make_spec("stale-clinic")
    driver.tenant_dir(spec.slug).mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        driver.pid_path(spec.slug).write_text(f"{stranger.pid}\n")

        # then it does not count as running, and stopping leaves the stranger alone
        assert not driver.is_running(spec.slug)
        driver.stop(spec.slug)
        assert stranger.poll() is None

        # when a pid file names a dead process and the tenant is ensured running
        dead = subprocess.Popen(["true"])
        dead.wait()
        driver.pid_path(spec.slug).write_text(f"{dead.pid}\n")
        endpoint = driver.ensure_running(spec)

        # then a fresh Orthanc serves and the pid file names it
        assert orthanc_ping(endpoint) is None
        new_pid = int(driver.pid_path(spec.slug).read_text())
        assert new_pid not in (stranger.pid, dead.pid)
        assert _orthanc_processes_for(driver.config_path(spec.slug)) == [new_pid]
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.orthanc
def test_failed_start_names_tenant_reason_and_log(driver: LocalOrthancDriver, make_spec: SpecFactory) -> None:
    # given the tenant's HTTP port is already taken by another program
    spec = make_spec("busy-clinic")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spec.http_port))
        squatter.listen()

        # when the tenant's Orthanc is ensured running
        with pytest.raises(OrthancUnavailable) as raised:
            driver.ensure_running(spec)

    # then the error names the tenant, why, and the log, and nothing is left running
    message = str(raised.value)
    assert "busy-clinic" in message
    assert "exited during start-up" in message
    assert str(driver.log_path(spec.slug)) in message
    assert raised.value.log_tail
    assert not driver.is_running(spec.slug)
    assert not driver.pid_path(spec.slug).exists()


@pytest.mark.orthanc
def test_stop_all_stops_every_tenant(driver: LocalOrthancDriver, make_spec: SpecFactory) -> None:
    # given two running tenant Orthancs
    specs = [make_spec("first-clinic"), make_spec("second-clinic")]
    for spec in specs:
        driver.ensure_running(spec)

    # when every instance is stopped at once
    started = time.monotonic()
    driver.stop_all()

    # then none runs, and they shut down side by side rather than one after another
    assert not any(driver.is_running(spec.slug) for spec in specs)
    assert not any(_port_accepts_connections(spec.http_port) for spec in specs)
    assert time.monotonic() - started < driver.stop_timeout_seconds


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"slug": "../etc"}, "slug"),
        ({"slug": "Clinic"}, "slug"),
        ({"dicom_ae_title": "A" * 17}, "AE title"),
        ({"dicom_ae_title": "lowercase"}, "AE title"),
        ({"username": "user:name"}, "user name"),
        ({"known_modalities": {"ct": ("BAD\\AET", "10.0.0.1", 104)}}, "AE title"),
        ({"http_port": 70000}, "port"),
    ],
)
def test_spec_rejects_values_that_could_escape_or_break_orthanc(overrides: dict[str, object], complaint: str) -> None:
    # given otherwise valid spec arguments
    arguments: dict[str, object] = {
        "slug": "valid-clinic",
        "http_port": 20_001,
        "dicom_port": 20_002,
        "dicom_ae_title": "VALID",
        "username": "readroom",
        "password": "secret",
    }
    arguments.update(overrides)

    # when a spec is built from them, then the bad value is named
    with pytest.raises(ValueError, match=complaint):
        OrthancSpec(**arguments)  # type: ignore[arg-type]


def test_free_port_skips_excluded_and_occupied_ports() -> None:
    # given one port excluded and the next one occupied
    start = free_port(excluded=set(), start=PORT_RANGE_START, end=PORT_RANGE_END)
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        occupied = occupant.getsockname()[1]

        # when a free port is asked for starting at the occupied one, excluding its successor
        port = free_port(excluded={occupied + 1}, start=occupied, end=occupied + 50)

    # then neither is returned, and an exhausted range fails loudly
    assert port not in (occupied, occupied + 1)
    assert start >= PORT_RANGE_START
    with pytest.raises(RuntimeError, match="no free port"):
        free_port(excluded={start}, start=start, end=start + 1)


# S3 ----------------------------------------------------------------------------------------

S3_ACCESS_KEY = "readroom-test-key"
S3_SECRET_KEY = "readroom-test-secret"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private rclone S3 server on loopback, so the storage tests never depend on a shared one."""
    rclone = Path(sys.executable).parent / "rclone"
    data_dir = tmp_path_factory.mktemp("s3-data")
    port = free_port(excluded=set(), start=PORT_RANGE_START + 900, end=PORT_RANGE_END)
    endpoint_url = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.getbasetemp() / "rclone.log").open("wb")
    process = subprocess.Popen(
        [
            str(rclone),
            "serve",
            "s3",
            "--auth-key",
            f"{S3_ACCESS_KEY},{S3_SECRET_KEY}",
            "--addr",
            f"127.0.0.1:{port}",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
    )
    try:
        deadline = time.monotonic() + 20
        while not _port_accepts_connections(port):
            assert process.poll() is None, f"rclone serve s3 exited with {process.returncode}"
            assert time.monotonic() < deadline, "rclone serve s3 did not listen within 20 s"
            time.sleep(0.1)
        yield endpoint_url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_environment(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    return s3_server


def test_s3_client_signs_v4_and_uses_path_style_for_a_local_endpoint(s3_environment: str) -> None:
    # when a client is built against the local endpoint
    client = s3_client()

    # then it talks to that endpoint, path-style, with signature v4
    assert client.meta.endpoint_url == s3_environment
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.signature_version == "s3v4"
    assert s3_ping() is None


def test_bucket_ensure_is_idempotent(s3_environment: str) -> None:
    # given a tenant's bucket name
    name = bucket_name_for("idem-clinic")

    # when it is ensured twice
    bucket_ensure(name)
    bucket_ensure(name)

    # then exactly one such bucket exists
    names = [bucket["Name"] for bucket in s3_client().list_buckets()["Buckets"]]
    assert names.count(name) == 1


def test_object_round_trip_keeps_the_dicom_bytes(s3_environment: str) -> None:
    # given a tenant bucket and a synthetic DICOM file
    name = bucket_name_for("roundtrip-clinic")
    bucket_ensure(name)
    payload = dataset_bytes(
        ct_series(patient_id="SYN-200", patient_name="Synthetic^S3", accession_number="ACC-200", slices=1)[0]
    )

    # when it is put and read back
    client = s3_client()
    client.put_object(Bucket=name, Key="studies/1.2.3/instance.dcm", Body=payload, ContentType="application/dicom")
    fetched = client.get_object(Bucket=name, Key="studies/1.2.3/instance.dcm")

    # then the bytes are identical
    assert fetched["Body"].read() == payload
    assert fetched["ContentType"] == "application/dicom"


def test_s3_ping_explains_bad_credentials_and_unreachable_servers(
    s3_environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # when the secret is wrong
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    bad_credentials = s3_ping()

    # and when nothing listens at the endpoint
    silent_port = free_port(excluded=set(), start=PORT_RANGE_START, end=PORT_RANGE_END)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{silent_port}")
    unreachable = s3_ping(timeout=1.0)

    # then each reason says what went wrong
    assert bad_credentials is not None and "refused" in bad_credentials
    assert unreachable is not None and "unreachable" in unreachable


@pytest.mark.parametrize("slug", ["clinic-", "Clinic", "a", "x" * 41, "../up", "clinic.eu"])
def test_bucket_name_for_refuses_names_it_would_have_to_bend(slug: str) -> None:
    # when a slug that cannot form a valid, unique bucket name is used, then it is refused
    with pytest.raises(ValueError):
        bucket_name_for(slug)


def test_bucket_name_for_prefixes_the_slug() -> None:
    # then the name is the prefix and slug, and the longest slug still fits S3's 63 characters
    assert bucket_name_for("demo-clinic") == "readroom-demo-clinic"
    assert bucket_name_for("demo-clinic", prefix="readroom-staging") == "readroom-staging-demo-clinic"
    assert len(bucket_name_for("x" * 40)) <= 63
