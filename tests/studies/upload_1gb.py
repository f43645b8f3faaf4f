"""By hand, against a live platform: a >= 1 GiB .zip through the page's chunked API, cut mid-chunk, resumed, finished.

Not collected by pytest (no test_ prefix): it takes minutes and a running platform with a worker (`make up`).

    manage.py create_tenant upload-1gb --name "Upload 1 GB" --no-ai
    manage.py create_api_token --tenant upload-1gb --scopes studies:write
    .venv/bin/python -m tests.studies.upload_1gb --token <token> [--url http://127.0.0.1:8000]

It writes a zip of synthetic 512x512 CT slices (saas.studies.synthetic, stored uncompressed: noise does not
deflate, and the point is the byte count), sends it in 8 MiB chunks as upload.js does, drops the connection in
the middle of a chunk (and the session with it), asks the server where the file stands, resumes from that
offset, finishes, polls the batch until its summary and checks that every slice was accepted. The zip is deleted
at the end unless --keep. Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import requests

from saas.studies.synthetic import dataset_bytes, iter_ct_series

CHUNK_BYTES = 8 * 1024 * 1024  # as upload.js
CHUNK_TYPE = "application/offset+octet-stream"
GIB = 1024**3
# As upload.js: a dropped connection or a 5xx (a restarting server) is retried with backoff, up to this long.
RETRY_FOR_S = 600


class Unavailable(Exception):
    """The server did not answer, or answered 5xx: wait and ask again."""


def _retrying(call, what: str):
    started, delay = time.monotonic(), 1.0
    while True:
        try:
            return call()
        except (requests.ConnectionError, requests.Timeout, Unavailable) as error:
            if time.monotonic() - started > RETRY_FOR_S:
                raise SystemExit(f"{what}: no answer for {RETRY_FOR_S} s ({error})") from error
            print(f"  {what}: {error.__class__.__name__}; retrying in {delay:.0f} s", flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 30)


def _answered(response: requests.Response) -> requests.Response:
    if response.status_code >= 500:
        raise Unavailable(f"HTTP {response.status_code}")
    return response


def _mb(value: float) -> str:
    return f"{value / 1024**2:,.1f} MiB"


def write_zip(path: Path, *, slices: int, rows: int) -> int:
    """The archive on disk, one slice in memory at a time; returns the number of slices written."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for number, dataset in enumerate(
            iter_ct_series(
                patient_id="UPL-1GB",
                patient_name="Synthetic^Upload^OneGigabyte",
                accession_number="ACC-1GB",
                study_description="CT CHEST 1 GB UPLOAD",
                study_date="20260401",
                slices=slices,
                rows=rows,
                columns=rows,
                slice_thickness=0.5,
            )
        ):
            archive.writestr(f"CT/IM{number:05d}", dataset_bytes(dataset))
    return slices


class Upload:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url.rstrip("/"), token
        self.api = f"{self.url}/api/v1/uploads/"
        self.session = self._session()

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def reconnect(self) -> None:
        """What a browser does after a dropped link: its old connections are gone, it opens new ones."""
        self.session.close()
        self.session = self._session()

    def create(self, *, name: str, size: int) -> tuple[str, str]:
        batch = self.session.post(self.api, json={}, timeout=30)
        batch.raise_for_status()
        batch_id = batch.json()["id"]
        declared = self.session.post(f"{self.api}{batch_id}/files/", json={"name": name, "size": size}, timeout=30)
        if declared.status_code != 201:
            raise SystemExit(f"the file was refused: {declared.status_code} {declared.text}")
        return batch_id, declared.json()["id"]

    def file_url(self, batch_id: str, file_id: str) -> str:
        return f"{self.api}{batch_id}/files/{file_id}"

    def received(self, batch_id: str, file_id: str) -> int:
        state = _retrying(
            lambda: _answered(self.session.get(self.file_url(batch_id, file_id), timeout=30)), "file state"
        )
        state.raise_for_status()
        return state.json()["received"]

    def put(self, batch_id: str, file_id: str, offset: int, chunk: bytes) -> int | None:
        """The new received count; None when the connection broke unplanned (the caller resumes)."""
        try:
            response = _answered(
                self.session.put(
                    self.file_url(batch_id, file_id),
                    data=chunk,
                    headers={"Upload-Offset": str(offset), "Content-Type": CHUNK_TYPE},
                    timeout=120,
                )
            )
        except (requests.ConnectionError, requests.Timeout, Unavailable) as error:
            print(f"  chunk at {offset:,}: {error.__class__.__name__}; resuming from what the server holds", flush=True)
            return None
        if response.status_code not in (200, 409):
            raise SystemExit(f"chunk at {offset} refused: {response.status_code} {response.text}")
        return response.json()["received"]

    def put_cut(self, batch_id: str, file_id: str, offset: int, chunk: bytes) -> int:
        """Send the chunk's headers and half its body on a raw connection, then drop the connection."""
        parts = urlsplit(self.file_url(batch_id, file_id))
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        connection.putrequest("PUT", parts.path)
        for header, value in (
            ("Authorization", f"Bearer {self.token}"),
            ("Upload-Offset", str(offset)),
            ("Content-Type", CHUNK_TYPE),
            ("Content-Length", str(len(chunk))),
        ):
            connection.putheader(header, value)
        connection.endheaders()
        sent = len(chunk) // 2
        connection.send(chunk[:sent])
        # A reset, not a polite close: the server sees the body end early, as with a pulled cable or a sleeping laptop.
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.sock.close()
        return sent

    def finish(self, batch_id: str) -> requests.Response:
        # Idempotent on the server: a lost answer is simply asked for again.
        return _retrying(
            lambda: _answered(self.session.post(f"{self.api}{batch_id}/finish", json={}, timeout=30)), "finish"
        )

    def state(self, status_url: str) -> dict:
        response = _retrying(lambda: _answered(self.session.get(f"{self.url}{status_url}", timeout=30)), "status")
        response.raise_for_status()
        return response.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("READROOM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("READROOM_UPLOAD_TOKEN"), help="studies:write token")
    parser.add_argument("--slices", type=int, default=2048, help="512x512 slices; 2048 make just over 1 GiB")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--cut-at", type=float, default=0.5, help="fraction of the file sent before the cut")
    parser.add_argument("--work-dir", type=Path, default=Path("var"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the summary")
    parser.add_argument("--keep", action="store_true", help="keep the generated zip")
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or READROOM_UPLOAD_TOKEN) is required: a token with studies:write")

    args.work_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="upload-1gb-", suffix=".zip", dir=args.work_dir)
    os.close(handle)
    path = Path(name)
    failures: list[str] = []
    try:
        started = time.monotonic()
        slices = write_zip(path, slices=args.slices, rows=args.rows)
        size = path.stat().st_size
        generated_s = time.monotonic() - started
        print(f"generated {slices} slices, {size:,} bytes ({size / GIB:.3f} GiB) in {generated_s:.0f} s", flush=True)
        if size < GIB and args.slices == parser.get_default("slices"):
            failures.append(f"the archive is {size:,} bytes, under 1 GiB")

        upload = Upload(args.url, args.token)
        batch_id, file_id = upload.create(name=path.name, size=size)
        cut_chunk = min(int(size * args.cut_at) // CHUNK_BYTES, (size - 1) // CHUNK_BYTES)
        sent_at_cut = resumed_from = 0
        upload_started = time.monotonic()
        cut_seconds = 0.0
        unplanned_drops = 0
        with open(path, "rb") as source:
            offset, chunk_number, reported = 0, 0, 0.0
            while offset < size:
                source.seek(offset)
                chunk = source.read(CHUNK_BYTES)
                if chunk_number == cut_chunk and not sent_at_cut:
                    sent_at_cut = upload.put_cut(batch_id, file_id, offset, chunk)
                    cut_started = time.monotonic()
                    upload.reconnect()
                    resumed_from = upload.received(batch_id, file_id)
                    cut_seconds = time.monotonic() - cut_started
                    print(
                        f"connection dropped {_mb(sent_at_cut)} into the chunk at byte {offset:,}; "
                        f"the server holds {resumed_from:,} bytes: resuming there",
                        flush=True,
                    )
                    if resumed_from != offset:
                        failures.append(f"after the cut the server reported {resumed_from}, expected {offset}")
                    offset = resumed_from
                    continue
                received = upload.put(batch_id, file_id, offset, chunk)
                if received is None:
                    unplanned_drops += 1
                    time.sleep(1)
                    upload.reconnect()
                    received = upload.received(batch_id, file_id)
                offset = received
                chunk_number = offset // CHUNK_BYTES
                if offset / size - reported >= 0.1 or offset == size:
                    reported = offset / size
                    elapsed = time.monotonic() - upload_started
                    print(f"  sent {offset / size:4.0%} ({_mb(offset)}, {_mb(offset / elapsed)}/s)", flush=True)
        upload_s = time.monotonic() - upload_started
        if upload.received(batch_id, file_id) != size:
            failures.append("the server does not hold the whole file")

        finish_started = time.monotonic()
        accepted = upload.finish(batch_id)
        answered_s = time.monotonic() - finish_started
        if accepted.status_code != 202:
            failures.append(f"finish answered {accepted.status_code}, expected 202")
        status_url = accepted.json()["status_url"]
        print(f"finish answered {accepted.status_code} in {answered_s * 1000:.0f} ms; polling {status_url}", flush=True)
        state, shown = accepted.json(), 0.0
        while state["status"] != "processed":
            if time.monotonic() - finish_started > args.timeout:
                raise SystemExit(f"no summary after {args.timeout:.0f} s: {state}")
            time.sleep(2)
            state = upload.state(status_url)
            if time.monotonic() - shown >= 15:
                shown = time.monotonic()
                print(
                    f"  processing file {min(state['files_done'] + 1, state['files_total'])} of "
                    f"{state['files_total']}: {state['entries_done']} entries checked",
                    flush=True,
                )
        processing_s = time.monotonic() - finish_started
        summary = state["summary"]
        accepted_counts = [study["instances_accepted"] for study in summary["studies"]]
        if accepted_counts != [slices]:
            failures.append(f"instances accepted per study {accepted_counts}, expected [{slices}]")
        for listed in ("refused", "failed", "skipped"):
            if summary[listed]:
                failures.append(f"{len(summary[listed])} {listed}, e.g. {summary[listed][0]}")

        print(
            "\n".join(
                [
                    "",
                    f"archive          {size:,} bytes ({size / GIB:.3f} GiB), {slices} slices, {args.rows} px square",
                    f"generated in     {generated_s:.0f} s",
                    f"upload           {upload_s:.0f} s, {_mb(size / upload_s)}/s, {CHUNK_BYTES // 1024**2} MiB chunks",
                    f"cut              {_mb(sent_at_cut)} into the chunk at {resumed_from:,}; resumed from "
                    f"{resumed_from:,} ({resumed_from / size:.0%}) after {cut_seconds * 1000:.0f} ms",
                    f"unplanned drops  {unplanned_drops} (each resumed from the offset the server reported)",
                    f"finish answered  {accepted.status_code} in {answered_s * 1000:.0f} ms",
                    f"processed in     {processing_s:.0f} s ({slices / processing_s:.1f} instances/s)",
                    f"summary          {accepted_counts} accepted; refused {len(summary['refused'])}, "
                    f"failed {len(summary['failed'])}, skipped {len(summary['skipped'])}",
                    f"batch            {batch_id}",
                    "result           " + ("OK" if not failures else "FAILED: " + "; ".join(failures)),
                ]
            )
        )
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
