"""Gateway test helpers: the gateway runs as a real subprocess (`python -m saas.gateway`), fed by real DICOM clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from saas.studies.synthetic import ct_series, dataset_bytes

ROOT = Path(__file__).resolve().parents[2]
AE_TITLE = "RR_TEST_GW"
# Real synthetic names, so the tests can prove they never reach a log line.
PATIENT_NAME = "Gatewaytest^Confidential"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gateway_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "saas.gateway", *arguments]


def clean_environment() -> dict[str, str]:
    """The test process's environment without any READROOM_GATEWAY_* or Django setting leaking in."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("READROOM_GATEWAY_") and key != "DJANGO_SETTINGS_MODULE"
    }


def run_gateway(*arguments: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        gateway_command(*arguments), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def gateway_status(env: dict[str, str]) -> dict:
    result = run_gateway("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.2, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def write_series(directory: Path, *, slices: int, **kwargs) -> list[Path]:
    """A synthetic CT series as Part 10 files; returns the paths, named by SOP Instance UID."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    series = ct_series(
        patient_id=kwargs.pop("patient_id", "GW-1"),
        patient_name=PATIENT_NAME,
        accession_number=kwargs.pop("accession_number", "ACC-GW1"),
        slices=slices,
        **kwargs,
    )
    for dataset in series:
        path = directory / f"{dataset.SOPInstanceUID}.dcm"
        path.write_bytes(dataset_bytes(dataset))
        paths.append(path)
    return paths


def storescu(port: int, paths: list[Path], *, called_ae: str = AE_TITLE) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-aec", called_ae, "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Gateway:
    """One `serve` process; its stderr (the log) goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.port = int(env["READROOM_GATEWAY_LISTEN_PORT"])
        self.spool_dir = Path(env["READROOM_GATEWAY_SPOOL_DIR"])
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, *, preexec_fn: Callable[[], None] | None = None) -> Gateway:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                gateway_command("serve"),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,  # noqa: PLW1509 - resource limits for fault tests only
            )
        wait_for(self._listening, timeout=30, what=f"the gateway to listen on {self.port}; log: {self.log_path}")
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict:
        return gateway_status(self.env)

    def incoming(self) -> list[Path]:
        return sorted((self.spool_dir / "incoming").iterdir())


@pytest.fixture
def gateway_env(tmp_path) -> dict[str, str]:
    """Settings for a gateway whose platform is a closed port: everything it receives stays spooled."""
    return {
        **clean_environment(),
        "READROOM_GATEWAY_AE_TITLE": AE_TITLE,
        "READROOM_GATEWAY_LISTEN_PORT": str(free_port()),
        "READROOM_GATEWAY_PLATFORM_URL": f"http://127.0.0.1:{free_port()}",
        "READROOM_GATEWAY_TENANT_SLUG": "nowhere",
        "READROOM_GATEWAY_API_TOKEN": "rr_test_token_never_logged",
        "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "READROOM_GATEWAY_RETRY_BACKOFF_BASE": "0.2",
        "READROOM_GATEWAY_RETRY_BACKOFF_MAX": "1",
    }


@pytest.fixture
def make_gateway(tmp_path) -> Iterator[Callable[[dict[str, str]], Gateway]]:
    started: list[Gateway] = []

    def make(env: dict[str, str]) -> Gateway:
        gateway = Gateway(env, tmp_path / f"gateway-{len(started)}.log")
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        if gateway.process is not None:
            gateway.stop()
