"""The worker's input download: into a mapping of the announced size, read in place, and refused by name when the
server's answer cannot be trusted (no length, too long, cut off)."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from inference_workers import app as worker_app
from inference_workers.app import JobError, TransientError, fetch_volume
from inference_workers.arrays import npz_bytes


def _input_bytes(voxels: np.ndarray) -> bytes:
    return npz_bytes(
        compressed=False,
        voxels=voxels,
        spacing=np.array([2.0, 0.7, 0.7]),
        orientation=np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        origin=np.array([-100.0, -120.0, 30.0]),
    )


def test_an_input_from_s3_is_read_whole_and_in_place(s3):
    client, bucket = s3
    voxels = np.arange(6 * 40 * 50, dtype=np.int16).reshape(6, 40, 50) - 1000
    key = f"ai-inputs/{uuid.uuid4().hex}.npz"
    client.put_object(Bucket=bucket, Key=key, Body=_input_bytes(voxels))
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)

    fetched, geometry = fetch_volume(url)

    assert np.array_equal(fetched, voxels) and fetched.flags.writeable
    assert geometry == {
        "spacing": (2.0, 0.7, 0.7),
        "orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        "origin": (-100.0, -120.0, 30.0),
    }


Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], str]]:
    """A loopback HTTP server answering every GET with ``answer``: a server or proxy that misbehaves."""
    servers = []

    def start(answer: Answer) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
                answer(self)

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/input.npz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_answer_without_a_length_is_refused(serve):
    def chunked(handler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        body = _input_bytes(np.zeros((2, 3, 4), np.int16))
        handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    with pytest.raises(JobError, match="input response carries no Content-Length"):
        fetch_volume(serve(chunked))


def test_an_input_over_the_limit_is_refused_before_it_is_read(serve, monkeypatch):
    monkeypatch.setattr(worker_app, "MAX_INPUT_BYTES", 1000)

    def announce_a_lot(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(5 * 1024**3))
        handler.end_headers()
        handler.wfile.write(b"\0" * 1024)

    with pytest.raises(JobError, match=r"input is larger than 1000 bytes \(5368709120\)"):
        fetch_volume(serve(announce_a_lot))


def test_an_answer_cut_off_before_its_length_is_a_transient_failure(serve):
    body = _input_bytes(np.zeros((4, 30, 30), np.int16))

    def cut_off(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.close_connection = True

    with pytest.raises(TransientError, match=rf"GET broke off after {len(body) // 2} of {len(body)} bytes"):
        fetch_volume(serve(cut_off))
