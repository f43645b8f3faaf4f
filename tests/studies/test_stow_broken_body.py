"""STOW-RS through a real gunicorn: a chunked body that breaks off keeps, reports and audits what came before."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.orthanc import orthanc_endpoint
from tests.conftest import committed
from tests.studies.conftest import multipart_related

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _read_answer(sock: socket.socket) -> tuple[int, dict]:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return status, json.loads(body)


def test_a_chunked_body_cut_off_after_one_part_keeps_reports_and_audits_that_part(live_platform):
    # given three CT slices (512 KiB each) in one multipart body, sent chunked, and a connection that ends in the
    # third: the server reads the body a mebibyte at a time, so it holds the first part whole before the break
    tenant, token = live_platform.tenant_with_token(prefix="stow-cut")
    parts = [
        dataset_bytes(dataset)
        for dataset in ct_series(
            patient_id="CUT-1", patient_name="Synthetic^Cut", accession_number="C1", slices=3, rows=512, columns=512
        )
    ]
    body, content_type = multipart_related(parts)
    cut = body.index(parts[2]) + len(parts[2]) // 2
    url = urlsplit(live_platform.url)
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(
            (
                f"POST /dicomweb/{tenant.slug}/studies HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n"
                "Accept: application/dicom+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        for start in range(0, cut, 64 * 1024):
            sock.sendall(_chunk(body[start : min(cut, start + 64 * 1024)]))
        # when the sender's side of the connection ends without the last chunk
        sock.shutdown(socket.SHUT_WR)
        status, answer = _read_answer(sock)
    # then the answer still says which instance was stored and that the rest broke off
    assert status == 202, answer
    stored = [item["00081155"]["Value"][0] for item in answer["00081199"]["Value"]]
    failed = [item["00000902"]["Value"][0] for item in answer["00081198"]["Value"]]
    assert len(stored) in (1, 2) and failed == [f"body broke off after part {len(stored)}"]
    # and the stored instance is in the clinic's Orthanc, and its transfer is in the audit log
    endpoint = orthanc_endpoint(tenant)
    held = requests.get(f"{endpoint.http_url}/instances", params={"expand": ""}, auth=endpoint.auth, timeout=10)
    assert sorted(instance["MainDicomTags"]["SOPInstanceUID"] for instance in held.json()) == sorted(stored)

    def transfers():
        with tenant_context(tenant_ids=[tenant.pk]):
            return list(AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.INSTANCES_TRANSFERRED))

    [transfer] = committed(transfers)
    assert transfer.detail["stored"] == len(stored)
