"""The streaming multipart/related reader: parts split correctly whatever the chunking; limits hold."""

import io

import pytest

from saas.dicomweb import multipart
from saas.dicomweb.multipart import MultipartError, PartTooLarge, iter_parts


def _body(parts, boundary="b0und"):
    return b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    ) + (b"--" + boundary.encode() + b"--\r\n")


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1024 * 1024])
def test_parts_survive_any_chunking(monkeypatch, chunk):
    monkeypatch.setattr(multipart, "CHUNK_BYTES", chunk)
    payloads = [b"A" * 100, b"\r\n--b0un not a boundary\r\n", b"", bytes(range(256)) * 3]
    parts = list(iter_parts(io.BytesIO(_body(payloads)), "b0und", max_part_bytes=10_000, max_total_bytes=100_000))
    assert [part.read() for part in parts] == payloads
    assert [part.content_type for part in parts] == ["application/dicom"] * 4


def test_a_part_over_the_limit_is_refused_by_number():
    with pytest.raises(PartTooLarge, match="part 2 is larger"):
        list(iter_parts(io.BytesIO(_body([b"x", b"y" * 5000])), "b0und", max_part_bytes=1000, max_total_bytes=10**6))


def test_a_request_over_the_limit_is_refused():
    with pytest.raises(MultipartError, match="request is larger"):
        list(iter_parts(io.BytesIO(_body([b"x" * 5000])), "b0und", max_part_bytes=10**6, max_total_bytes=1000))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"no boundary here", "no multipart boundary"),
        (b"--b0und\r\nContent-Type: application/dicom\r\n\r\nunterminated", "ends before its closing boundary"),
        (b"--b0und\r\nbroken header\r\n\r\nx\r\n--b0und--", "malformed part header"),
    ],
)
def test_malformed_bodies_are_refused_with_where(body, message):
    with pytest.raises(MultipartError, match=message):
        list(iter_parts(io.BytesIO(body), "b0und", max_part_bytes=1000, max_total_bytes=10**6))
