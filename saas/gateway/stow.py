"""STOW-RS on the wire: a streamed multipart/related request body, and the platform's DICOM JSON answer parsed."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
ERROR_COMMENT = "00000902"

# Failure reasons (PS3.18 and PS3.4 status codes) the platform may put on one instance.
# Transient ones say nothing about the instance itself: keep it and send it again later.
TRANSIENT_FAILURES = {0xA700: "out of resources", 0x0110: "processing failure"}
PERMANENT_FAILURES = {
    0xC000: "cannot understand",
    0xA900: "does not match SOP class",
    0x0122: "SOP class not supported",
    0x0111: "duplicate SOP instance",
    0xC122: "refused",
}


def failure_is_permanent(code: int | None) -> bool:
    """Permanent failures are set aside for a person; unknown codes are retried, since dropping is not undoable."""
    if code in PERMANENT_FAILURES:
        return True
    if code in TRANSIENT_FAILURES or code is None:
        return False
    # The families of PS3.4: A9xx "does not match", Cxxx "cannot understand" never heal by waiting.
    return (code & 0xFF00) == 0xA900 or (code & 0xF000) == 0xC000


def failure_label(code: int | None) -> str:
    if code is None:
        return "no failure reason given"
    name = PERMANENT_FAILURES.get(code) or TRANSIENT_FAILURES.get(code) or "unknown failure reason"
    return f"0x{code:04X} ({name})"


class MultipartBody:
    """A multipart/related body over already-opened files, produced chunk by chunk.

    It has a length, so requests sends a Content-Length instead of chunked transfer encoding
    (WSGI servers in front of Django do not hand chunked bodies on), yet no more than one
    chunk of one file is in memory at a time. The files are opened before the length is taken,
    so a file replaced in the spool meanwhile cannot make the length lie.
    """

    def __init__(self, files: list[BinaryIO], *, boundary: str | None = None):
        self.files = files
        self.boundary = boundary or f"readroom-{uuid.uuid4().hex}"
        self._part_head = f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
        self._tail = f"--{self.boundary}--\r\n".encode("ascii")
        self._sizes = [os.fstat(file.fileno()).st_size for file in files]

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def __len__(self) -> int:
        return sum(len(self._part_head) + size + 2 for size in self._sizes) + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        for file, size in zip(self.files, self._sizes, strict=True):
            yield self._part_head
            remaining = size
            file.seek(0)
            while remaining > 0:
                chunk = file.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise OSError(f"{getattr(file, 'name', 'spooled file')} shrank while being sent")
                remaining -= len(chunk)
                yield chunk
            yield b"\r\n"
        yield self._tail


@dataclass(frozen=True)
class InstanceFailure:
    sop_instance_uid: str
    reason_code: int | None
    comment: str

    @property
    def permanent(self) -> bool:
        return failure_is_permanent(self.reason_code)

    def describe(self) -> str:
        text = f"FailureReason {failure_label(self.reason_code)}"
        return f"{text}: {self.comment}" if self.comment else text


@dataclass(frozen=True)
class StowResult:
    stored: list[str]
    failed: list[InstanceFailure]


class UnreadableResponse(ValueError):
    """The platform answered 200/202/409 with a body that is not the STOW-RS DICOM JSON object."""


def _first_value(item: dict, tag: str) -> object | None:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def parse_stow_response(body: bytes) -> StowResult:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableResponse(f"not JSON: {error}") from error
    # Some servers wrap the object in a one-element array; the contract is the bare object.
    if isinstance(document, list) and len(document) == 1:
        document = document[0]
    if not isinstance(document, dict):
        raise UnreadableResponse("not a DICOM JSON object")

    stored = []
    for item in (document.get(REFERENCED_SOP_SEQUENCE) or {}).get("Value") or []:
        uid = _first_value(item, REFERENCED_SOP_INSTANCE_UID) if isinstance(item, dict) else None
        if isinstance(uid, str):
            stored.append(uid)

    failed = []
    for item in (document.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []:
        if not isinstance(item, dict):
            continue
        uid = _first_value(item, REFERENCED_SOP_INSTANCE_UID)
        code = _first_value(item, FAILURE_REASON)
        comment = _first_value(item, ERROR_COMMENT)
        failed.append(
            InstanceFailure(
                # Empty when the platform could not read the part at all; the forwarder then works out whose it is.
                sop_instance_uid=uid if isinstance(uid, str) else "",
                reason_code=code if isinstance(code, int) else None,
                comment=comment if isinstance(comment, str) else "",
            )
        )
    return StowResult(stored=stored, failed=failed)
