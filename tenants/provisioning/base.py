"""Driver-neutral contract for running one Orthanc DICOM store per tenant (local process now, cloud service later)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import requests

TENANT_SLUG_RE = re.compile(r"^[a-z0-9-]{2,40}$")

# DICOM PS3.5 AE value representation: at most 16 characters from the default repertoire,
# no backslash, no control characters. Our own AE titles are additionally uppercase so
# that clinics typing them into a modality cannot get the case wrong.
_AE_TITLE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")
_OWN_AE_TITLE_RE = re.compile(r"^[A-Z0-9_\-. ]{1,16}$")


def _check_ae_title(ae_title: str, *, what: str) -> None:
    if not ae_title.strip() or len(ae_title) > 16 or _AE_TITLE_FORBIDDEN.search(ae_title):
        raise ValueError(f"{what} {ae_title!r} is not a valid DICOM AE title (1-16 characters, no backslash)")


def _check_port(port: int, *, what: str) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} {port} is outside 1-65535")


@dataclass(frozen=True)
class OrthancSpec:
    """Everything a driver needs to run a tenant's Orthanc; equal specs mean an unchanged instance."""

    slug: str
    http_port: int
    dicom_port: int
    dicom_ae_title: str
    username: str
    password: str
    stable_age_seconds: int = 5
    accept_unknown_modalities: bool = False
    # name -> (AE title, host, port) of the clinic modalities allowed to send to this tenant.
    # Excluded from the hash only so that a frozen spec stays hashable despite the dict.
    known_modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # The slug becomes a directory name, a container name and part of a bucket name,
        # so it is validated here rather than trusted from the caller.
        if not TENANT_SLUG_RE.fullmatch(self.slug):
            raise ValueError(f"tenant slug {self.slug!r} must match {TENANT_SLUG_RE.pattern}")
        _check_port(self.http_port, what="HTTP port")
        _check_port(self.dicom_port, what="DICOM port")
        if self.http_port == self.dicom_port:
            raise ValueError(f"tenant {self.slug}: HTTP and DICOM ports are both {self.http_port}")
        if not _OWN_AE_TITLE_RE.fullmatch(self.dicom_ae_title) or not self.dicom_ae_title.strip():
            raise ValueError(
                f"tenant {self.slug}: AE title {self.dicom_ae_title!r} must be 1-16 uppercase letters, digits, '_-. '"
            )
        # HTTP Basic authentication cannot carry a colon in the user name.
        if not self.username or ":" in self.username:
            raise ValueError(f"tenant {self.slug}: Orthanc user name must be non-empty and contain no ':'")
        if not self.password:
            raise ValueError(f"tenant {self.slug}: Orthanc password must not be empty")
        if self.stable_age_seconds < 1:
            raise ValueError(f"tenant {self.slug}: stable_age_seconds must be at least 1")
        for name, (ae_title, host, port) in self.known_modalities.items():
            if not name:
                raise ValueError(f"tenant {self.slug}: a known modality has an empty name")
            _check_ae_title(ae_title, what=f"tenant {self.slug}: modality {name!r} AE title")
            if not host:
                raise ValueError(f"tenant {self.slug}: modality {name!r} has no host")
            _check_port(port, what=f"tenant {self.slug}: modality {name!r} port")


@dataclass(frozen=True)
class OrthancEndpoint:
    """How the Django side reaches a tenant's Orthanc over HTTP and how a clinic reaches it over DICOM."""

    http_url: str
    username: str
    password: str
    dicom_host: str
    dicom_port: int
    dicom_ae_title: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)


class OrthancUnavailable(Exception):
    """A tenant's Orthanc could not be started or reached; the message names tenant, failure and log."""

    def __init__(self, *, slug: str, reason: str, log_location: str | None = None, log_tail: str = "") -> None:
        self.slug = slug
        self.reason = reason
        self.log_location = log_location
        self.log_tail = log_tail
        message = f"Orthanc for tenant {slug!r}: {reason}"
        if log_location:
            message += f" (log: {log_location})"
        if log_tail:
            message += f"\n--- last lines of the Orthanc log ---\n{log_tail}"
        super().__init__(message)


@runtime_checkable
class OrthancDriver(Protocol):
    """Runs one Orthanc per tenant; every method is idempotent so callers may simply repeat them."""

    name: str

    def ensure_running(self, spec: OrthancSpec) -> OrthancEndpoint:
        """Start the tenant's Orthanc unless it already runs with this exact spec; return once /system answers."""
        ...

    def stop(self, slug: str) -> None: ...

    def is_running(self, slug: str) -> bool: ...

    def stop_all(self) -> None:
        """Stop every Orthanc this driver started (and only those)."""
        ...


def orthanc_ping(endpoint: OrthancEndpoint, *, timeout: float = 2.0) -> str | None:
    """Return None when GET /system answers 200 with the endpoint's credentials, else a short reason."""
    url = endpoint.http_url.rstrip("/") + "/system"
    try:
        response = requests.get(url, auth=endpoint.auth, timeout=timeout)
    except requests.ConnectionError:
        return f"no HTTP server at {endpoint.http_url}"
    except requests.Timeout:
        return f"{endpoint.http_url} did not answer within {timeout:g} s"
    except requests.RequestException as error:
        return f"{endpoint.http_url}: {type(error).__name__}"
    if response.status_code == 401:
        return f"{endpoint.http_url} refused the credentials (HTTP 401)"
    if response.status_code != 200:
        return f"{endpoint.http_url}/system answered HTTP {response.status_code}"
    return None


def free_port(*, excluded: set[int], start: int, end: int) -> int:
    """Return the first port in [start, end) that is not excluded and can be bound on 127.0.0.1 right now."""
    for port in range(start, end):
        if port in excluded:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # No SO_REUSEADDR: a port still in TIME_WAIT is skipped rather than handed out,
            # because the server that gets it may not set SO_REUSEADDR itself.
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in [{start}, {end}) outside the {len(excluded)} excluded ones")
