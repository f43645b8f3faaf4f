"""A streaming reader of multipart/related bodies (STOW-RS): parts are spooled, never the whole request.

The stdlib email parser and form-data parsers either buffer everything or insist on
Content-Disposition, which multipart/related parts do not carry.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024
# A part bigger than this in memory goes to a temporary file.
SPOOL_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/related; the message says where."""


class PartTooLarge(MultipartError):
    def __init__(self, index: int, limit: int) -> None:
        super().__init__(f"part {index} is larger than the {limit // (1024 * 1024)} MB limit per instance")
        self.index = index


@dataclass
class Part:
    index: int
    headers: dict[str, str]
    body: BinaryIO
    size: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def read(self) -> bytes:
        self.body.seek(0)
        return self.body.read()


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if not line:
            continue
        name, separator, value = line.partition(":")
        if not separator:
            raise MultipartError(f"malformed part header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def iter_parts(
    stream: BinaryIO, boundary: str, *, max_part_bytes: int, max_total_bytes: int, max_parts: int = 10_000
) -> Iterator[Part]:
    """Yield each part in order; raise MultipartError on a malformed body or a broken limit."""
    delimiter = b"--" + boundary.encode("latin-1")
    buffer = b""
    total = 0
    eof = False

    def fill() -> bool:
        nonlocal buffer, total, eof
        if eof:
            return False
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            eof = True
            return False
        total += len(chunk)
        if total > max_total_bytes:
            raise MultipartError(f"the request is larger than the {max_total_bytes // (1024 * 1024)} MB limit")
        buffer += chunk
        return True

    # Preamble up to the first delimiter.
    while (start := buffer.find(delimiter)) < 0:
        if len(buffer) > MAX_HEADER_BYTES or not fill():
            raise MultipartError("no multipart boundary found at the start of the body")
    buffer = buffer[start + len(delimiter) :]
    index = 0
    body_delimiter = b"\r\n" + delimiter
    while True:
        while len(buffer) < 2 and fill():
            pass
        if buffer.startswith(b"--"):
            return
        if not buffer.startswith(b"\r\n"):
            raise MultipartError(f"part {index + 1}: malformed boundary line")
        buffer = buffer[2:]
        while (header_end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_HEADER_BYTES or not fill():
                raise MultipartError(f"part {index + 1}: headers are missing or too long")
        headers = _parse_headers(buffer[:header_end])
        buffer = buffer[header_end + 4 :]
        index += 1
        if index > max_parts:
            raise MultipartError(f"more than {max_parts} parts in one request")
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - handed to the caller
        size = 0
        while True:
            end = buffer.find(body_delimiter)
            if end >= 0:
                body.write(buffer[:end])
                size += end
                buffer = buffer[end + len(body_delimiter) :]
                break
            # Keep a tail that might hold the start of the delimiter.
            keep = len(body_delimiter)
            if len(buffer) > keep:
                body.write(buffer[:-keep])
                size += len(buffer) - keep
                buffer = buffer[-keep:]
            if size > max_part_bytes:
                raise PartTooLarge(index, max_part_bytes)
            if not fill():
                raise MultipartError(f"part {index}: the body ends before its closing boundary")
        if size > max_part_bytes:
            raise PartTooLarge(index, max_part_bytes)
        yield Part(index=index, headers=headers, body=body, size=size)
