"""The relay to a tenant's Orthanc: URLs rewritten across chunk seams (part headers only), connections reused."""

import random

import pytest

from saas.dicomweb import upstream
from saas.dicomweb.upstream import ORTHANC_URL_PREFIX, OrthancFailed, orthanc_open, rewrite_chunks, rewrite_part_headers
from tenants import orthanc_http
from tests.faults.conftest import wait_for

NEW_PREFIX = b"https://readroom.example.org/dicomweb/clinic/"


def _split(body: bytes, sizes: list[int]) -> list[bytes]:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(body[start : start + size])
        start += size
    return chunks + [body[start:]]


def test_rewriting_finds_every_url_whatever_the_chunk_seams():
    # given a body with the placeholder URL at both ends, side by side, and across every kind of seam
    body = ORTHANC_URL_PREFIX + b"x" * 300 + ORTHANC_URL_PREFIX + ORTHANC_URL_PREFIX + b"y" * 50 + ORTHANC_URL_PREFIX
    expected = body.replace(ORTHANC_URL_PREFIX, NEW_PREFIX)
    randomly = random.Random(20261130)
    splits = [[len(body)], [1] * len(body), [10, 20, 30], [43, 1, 43, 1]]
    splits += [[randomly.randint(0, 90) for _ in range(12)] for _ in range(300)]
    for sizes in splits:
        # when it streams in those chunks, then the result is the whole-body replacement
        assert b"".join(rewrite_chunks(iter(_split(body, sizes)), ORTHANC_URL_PREFIX, NEW_PREFIX)) == expected


def test_a_chunk_without_the_url_goes_out_untouched():
    pixels = [bytes(range(256)) * 1024, bytes(256 * 1024)]
    out = list(rewrite_chunks(iter(pixels), ORTHANC_URL_PREFIX, NEW_PREFIX))
    assert out == pixels and all(sent is original for sent, original in zip(out, pixels, strict=True))


BOUNDARY = b"64436ae0-7200-454f-94b7-b48e0566bf9c"


def _multipart(contents: list[bytes]) -> tuple[bytes, bytes]:
    """A multipart/related body as Orthanc writes it, and the same with the URLs of its part headers rewritten."""
    body = expected = b""
    for number, content in enumerate(contents, start=1):
        headers = (
            b"Content-Type: application/octet-stream\r\nContent-Location: "
            + ORTHANC_URL_PREFIX
            + b"studies/1.2/series/3.4/instances/5.6/frames/%d\r\n" % number
        )
        opening = (b"" if number == 1 else b"\r\n") + b"--" + BOUNDARY + b"\r\n"
        body += opening + headers + b"\r\n" + content
        expected += opening + headers.replace(ORTHANC_URL_PREFIX, NEW_PREFIX) + b"\r\n" + content
    closing = b"\r\n--" + BOUNDARY + b"--\r\n"
    return body + closing, expected + closing


def test_multipart_urls_are_rewritten_in_part_headers_only_whatever_the_seams():
    # given parts whose content holds the placeholder URL, a delimiter's beginnings and CRs at their ends
    crafted = b"\x00" * 40 + ORTHANC_URL_PREFIX + b"\r\n--" + BOUNDARY[:-1] + b"\r\n" + ORTHANC_URL_PREFIX + b"\r"
    body, expected = _multipart([crafted, b"", bytes(range(256)) * 3 + b"\r\n\r\n", b"\r\n--"])
    assert body.count(ORTHANC_URL_PREFIX) == 6 and expected.count(ORTHANC_URL_PREFIX) == 2
    randomly = random.Random(20261202)
    splits = [[len(body)], [1] * len(body), [100, 200, 300], [len(crafted) + 120, 5, 500]]
    splits += [[randomly.randint(0, 200) for _ in range(15)] for _ in range(400)]
    for sizes in splits:
        # when it streams in those chunks, then only the headers' URLs changed and every content byte is kept
        out = b"".join(rewrite_part_headers(iter(_split(body, sizes)), BOUNDARY, ORTHANC_URL_PREFIX, NEW_PREFIX))
        assert out == expected, sizes


def test_a_frame_chunk_goes_out_untouched_and_a_runaway_part_header_is_refused():
    # given a frame's part whose pixels arrive in large chunks that cannot begin a delimiter
    body, _ = _multipart([b"\x01\x02" * 256 * 1024])
    head = body.index(b"\r\n\r\n") + 4
    chunks = [body[:head], body[head : head + 256 * 1024], body[head + 256 * 1024 :]]
    out = list(rewrite_part_headers(iter(chunks), BOUNDARY, ORTHANC_URL_PREFIX, NEW_PREFIX))
    # then the pixel chunk is sent as the same object (no copy of a frame per request)
    assert any(piece is chunks[1] for piece in out)
    # and a part whose headers never end is refused rather than held in memory without bound
    endless = [b"--" + BOUNDARY + b"\r\n"] + [b"X-Filler: " + b"a" * 1000 + b"\r\n"] * 40
    with pytest.raises(OrthancFailed):
        list(rewrite_part_headers(iter(endless), BOUNDARY, ORTHANC_URL_PREFIX, NEW_PREFIX))


@pytest.mark.django_db
@pytest.mark.orthanc
def test_connections_are_kept_alive_replaced_when_orthanc_closed_them_and_dropped_when_abandoned(clinic_with_ct):
    clinic = clinic_with_ct
    frame = (
        f"/dicom-web/studies/{clinic.study_uid}/series/{clinic.series_uid}"
        f"/instances/{clinic.datasets[0].SOPInstanceUID}/frames/1"
    )
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    pool = orthanc_http._pool(clinic.tenant)
    # The fixture's store and sync went over the same pool: start from no idle connection.
    while pool._idle:
        pool._idle.pop().close()

    pixels = clinic.datasets[0].PixelData

    def read_all() -> bool:
        response = orthanc_open(clinic.tenant, frame, accept=accept)
        try:
            return pixels in b"".join(response.iter_raw(upstream.CHUNK_BYTES))
        finally:
            response.close()

    # a frame read to its end leaves its connection for the next request, which takes it
    assert read_all() and len(pool._idle) == 1
    kept = pool._idle[0]
    assert read_all() and pool._idle == [kept]
    # Orthanc closes idle connections after its keep-alive timeout: the next request does not notice
    wait_for(lambda: not orthanc_http._still_open(kept), timeout=30, interval=0.1, what="Orthanc to close the idle one")
    assert read_all() and len(pool._idle) == 1 and pool._idle[0] is not kept
    # a body abandoned half-way (the reader went away) never goes back to the pool
    response = orthanc_open(clinic.tenant, frame, accept=accept)
    next(response.iter_raw(1024))
    response.close()
    assert pool._idle == []
    assert read_all()
