"""Validation of every file a clinic sends (upload, folder, .zip, STOW-RS part) before anything reaches the image store.

Pure Python (pydicom, zipfile, zlib, stdlib) and free of Django, so the edge gateway and the web side apply
exactly the same rules. Nothing here writes to disk: archives are read entry by entry in memory, under limits.
"""

from __future__ import annotations

import copy
import io
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import BinaryIO

import pydicom
from pydicom import uid as dicom_uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, AllTransferSyntaxes

_GB = 1024**3


@dataclass(frozen=True)
class ValidationLimits:
    """What one clinic may send at once; the defaults fit the largest real studies (multi-frame DBT, long cine)."""

    max_file_bytes: int = 2 * _GB
    max_request_bytes: int = 4 * _GB
    max_zip_entries: int = 20_000
    max_zip_uncompressed_bytes: int = 8 * _GB
    # Per entry and for the whole archive, uncompressed / compressed. DICOM rarely packs better than 10:1.
    max_zip_ratio: float = 200.0
    max_frames: int = 10_000
    max_rows_columns: int = 16_384


DEFAULT_LIMITS = ValidationLimits()


class RefusalKind(StrEnum):
    NOT_DICOM = "not_dicom"
    BAD_META = "bad_meta"
    TOO_LARGE = "too_large"
    PIXEL_MISMATCH = "pixel_mismatch"
    SOP_CLASS_NOT_ALLOWED = "sop_class_not_allowed"
    MISSING_UID = "missing_uid"
    POLYGLOT = "polyglot"
    ZIP_BOMB = "zip_bomb"
    ZIP_SLIP = "zip_slip"
    NESTED_ARCHIVE = "nested_archive"
    ZIP_CORRUPT = "zip_corrupt"
    TOO_MANY_ENTRIES = "too_many_entries"
    # Not the file's own fault: its SOP Instance UID (or its series) is already stored in another study.
    DUPLICATE_SOP_INSTANCE = "duplicate_sop_instance"


# Kinds no honest export produces: each one is recorded as a Security Alert by the caller.
HOSTILE_KINDS = frozenset(
    {RefusalKind.POLYGLOT, RefusalKind.ZIP_BOMB, RefusalKind.ZIP_SLIP, RefusalKind.NESTED_ARCHIVE}
)


@dataclass(frozen=True)
class Refusal:
    """A file (or a whole archive) that was not accepted, with a reason a clinic user can act on."""

    file: str
    reason: str
    kind: RefusalKind

    @property
    def hostile(self) -> bool:
        return self.kind in HOSTILE_KINDS


@dataclass(frozen=True)
class Skipped:
    """A harmless non-DICOM file found beside the images (DICOMDIR, thumbnails, READMEs): ignored, not an error."""

    file: str
    reason: str


@dataclass(frozen=True)
class AcceptedInstance:
    """One instance that passed every check; ``data`` is what may be stored (preamble zeroed)."""

    file: str
    # Kept out of repr: it is patient data, and logs or tracebacks must never carry it.
    data: bytes = field(repr=False)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    modality: str


ValidationResult = AcceptedInstance | Refusal | Skipped

# Objects a reading radiologist can open in the viewer or the report pane and that the archive can serve back.
# Excluded on purpose: RT objects (plans, doses, structure sets, RT images) and raw data, waveforms (ECG),
# presentation states, spectroscopy, private SOP classes and DICOMDIR: we can neither display nor meaningfully
# archive them, and a radiologist must never be asked to sign off on a study that silently hides such parts.
_DOCUMENT_CLASSES = frozenset(
    {
        dicom_uid.BasicTextSRStorage,
        dicom_uid.EnhancedSRStorage,
        dicom_uid.ComprehensiveSRStorage,
        dicom_uid.Comprehensive3DSRStorage,
        dicom_uid.KeyObjectSelectionDocumentStorage,
        dicom_uid.EncapsulatedPDFStorage,
    }
)
SOP_CLASS_ALLOWLIST: frozenset[str] = frozenset(
    {
        dicom_uid.CTImageStorage,
        dicom_uid.EnhancedCTImageStorage,
        dicom_uid.LegacyConvertedEnhancedCTImageStorage,
        dicom_uid.MRImageStorage,
        dicom_uid.EnhancedMRImageStorage,
        dicom_uid.EnhancedMRColorImageStorage,
        dicom_uid.LegacyConvertedEnhancedMRImageStorage,
        dicom_uid.ComputedRadiographyImageStorage,
        dicom_uid.DigitalXRayImageStorageForPresentation,
        dicom_uid.DigitalXRayImageStorageForProcessing,
        dicom_uid.DigitalMammographyXRayImageStorageForPresentation,
        dicom_uid.DigitalMammographyXRayImageStorageForProcessing,
        dicom_uid.BreastTomosynthesisImageStorage,
        dicom_uid.UltrasoundImageStorage,
        dicom_uid.UltrasoundMultiFrameImageStorage,
        dicom_uid.NuclearMedicineImageStorage,
        dicom_uid.PositronEmissionTomographyImageStorage,
        dicom_uid.EnhancedPETImageStorage,
        dicom_uid.LegacyConvertedEnhancedPETImageStorage,
        dicom_uid.SecondaryCaptureImageStorage,
        dicom_uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
        dicom_uid.XRayAngiographicImageStorage,
        dicom_uid.EnhancedXAImageStorage,
        dicom_uid.XRayRadiofluoroscopicImageStorage,
        dicom_uid.EnhancedXRFImageStorage,
        dicom_uid.SegmentationStorage,
        dicom_uid.ParametricMapStorage,
    }
    | _DOCUMENT_CLASSES
)

# CVE-2019-11687: the 128-byte preamble is free for the application, so a file can be a valid DICOM image and
# a Windows/Linux program (or archive, script, web page) at once. Vendor preambles (TIFF headers) are harmless.
_EXECUTABLE_PREAMBLES: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
    (b"\xfe\xed\xfa\xce", "a macOS program"),
    (b"\xfe\xed\xfa\xcf", "a macOS program"),
    (b"\xce\xfa\xed\xfe", "a macOS program"),
    (b"\xcf\xfa\xed\xfe", "a macOS program"),
    (b"\xca\xfe\xba\xbe", "a macOS or Java program"),
    (b"#!", "a script"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF", "a PDF document"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
    (b"{\\rtf", "an RTF document"),
)
_MARKUP_PREAMBLE = re.compile(rb"\s*<(!doctype|html|script|svg|\?xml)", re.IGNORECASE)

_ARCHIVE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!\x1a\x07", "RAR"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# Office and OpenDocument files are zips by design: skipped beside the images (never opened), not nested archives.
_OFFICE_SUFFIXES = (".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})

_DICM = b"DICM"
_PREAMBLE_BYTES = 128
# Values larger than this stay unread in the caller's buffer (pixel data, PDFs): parsing never decodes or copies them.
_DEFER_BYTES = 1024 * 1024
# Caps parsing work on hostile encapsulated pixel data (a 2 GB file could hold 268 million empty items).
_MAX_FRAGMENTS = 1_000_000
# An entry this small cannot exhaust anything, so its ratio does not matter (READMEs of spaces, blank masks).
_RATIO_FLOOR_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024
_ITEM_TAG = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER_TAG = (0xFFFE, 0xE0DD)
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float Pixel Data, Double Float Pixel Data
_EXTENDED_OFFSET_TABLE_TAG = 0x7FE00001
# Lenient on purpose: older modalities write components with leading zeros, which PS3.5 forbids but
# every archive accepts; refusing them would turn away real patients' images.
_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
_REQUIRED_META = {
    "MediaStorageSOPClassUID": "Media Storage SOP Class UID (0002,0002)",
    "MediaStorageSOPInstanceUID": "Media Storage SOP Instance UID (0002,0003)",
    "TransferSyntaxUID": "Transfer Syntax UID (0002,0010)",
}
_REQUIRED_UIDS = {
    "SOPClassUID": "SOP Class UID (0008,0016)",
    "SOPInstanceUID": "SOP Instance UID (0008,0018)",
    "StudyInstanceUID": "Study Instance UID (0020,000D)",
    "SeriesInstanceUID": "Series Instance UID (0020,000E)",
}
_UNREADABLE = "the DICOM data is damaged or truncated and cannot be read"


class _Refused(Exception):
    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _size(value: float) -> str:
    for unit, scale in (("GB", _GB), ("MB", 1024**2), ("KB", 1024)):
        if value >= scale:
            return f"{value / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(value)} bytes"


def _too_large(size: int, limit: int, per: str = "file") -> str:
    return f"{per} is {_size(size)}; the limit is {_size(limit)} per {per}"


def _base_name(name: str) -> str:
    return re.split(r"[\\/]", name)[-1]


def _sop_class_label(sop_class_uid: str) -> str:
    name = UID(sop_class_uid).name
    return (
        f"{name} ({sop_class_uid})" if name != sop_class_uid else f"a private or unknown object type ({sop_class_uid})"
    )


def _archive_kind(head: bytes) -> str | None:
    for magic, kind in _ARCHIVE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _looks_like_headerless_dicom(data: bytes) -> bool:
    # A bare dataset (no preamble, no file meta) starts with a group 0002 or 0008 tag; it is DICOM, so it must be
    # refused with a reason rather than skipped as "not DICOM", or the clinic believes its images arrived.
    return data[:4] == _DICM or (len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00") and data[3:4] == b"\x00")


def _not_part10_reason(data: bytes) -> str:
    if data[:4] == _DICM:
        return "not a standard DICOM file: the 128-byte preamble before the 'DICM' marker is missing"
    if _looks_like_headerless_dicom(data):
        return (
            "a DICOM dataset without the standard file header: no 'DICM' marker at byte 128 "
            "(re-export it as a DICOM Part 10 file)"
        )
    return "not a DICOM file: no 'DICM' marker at byte 128"


def _polyglot_reason(preamble: bytes) -> str | None:
    for magic, label in _EXECUTABLE_PREAMBLES:
        if preamble.startswith(magic):
            return f"the file's 128-byte preamble also makes it {label} (a DICOM polyglot, CVE-2019-11687)"
    if _MARKUP_PREAMBLE.match(preamble):
        return "the file's 128-byte preamble also makes it a web page (a DICOM polyglot, CVE-2019-11687)"
    return None


def _read_file_meta(data: bytes) -> tuple[FileMetaDataset, int]:
    buffer = io.BytesIO(data)
    meta_start = buffer.seek(_PREAMBLE_BYTES + len(_DICM))
    try:
        meta = FileMetaDataset(
            read_dataset(buffer, is_implicit_VR=False, is_little_endian=True, stop_when=_after_file_meta)
        )
        missing = [label for keyword, label in _REQUIRED_META.items() if not meta.get(keyword)]
        # The group length counts from the end of its own 12-byte element; a shorter file lost part of its header.
        declared_end = meta_start + 12 + int(meta.get("FileMetaInformationGroupLength") or 0)
    except Exception as error:  # a hostile header can make the parser raise almost anything; all mean "refuse"
        raise _Refused(
            RefusalKind.BAD_META, "the DICOM file header (group 0002) is damaged and cannot be read"
        ) from error
    if declared_end > len(data):
        raise _Refused(RefusalKind.BAD_META, "the DICOM file header is cut short: the file is truncated")
    if missing:
        raise _Refused(RefusalKind.BAD_META, f"the DICOM file header is missing {', '.join(missing)}")
    return meta, buffer.tell()


def _after_file_meta(tag, vr, length) -> bool:
    return tag >> 16 != 0x0002


def _check_inflated_size(payload: memoryview, limits: ValidationLimits) -> None:
    # pydicom inflates a deflated dataset in one unbounded call: a few kilobytes could become gigabytes.
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        for start in range(0, len(payload), _READ_CHUNK):
            pending = payload[start : start + _READ_CHUNK]
            while pending:
                total += len(inflater.decompress(pending, _READ_CHUNK))
                if total > limits.max_file_bytes:
                    raise _Refused(
                        RefusalKind.ZIP_BOMB,
                        f"the deflated DICOM data unpacks to more than {_size(limits.max_file_bytes)}, "
                        "the limit per file (a decompression bomb)",
                    )
                pending = inflater.unconsumed_tail
    except zlib.error as error:
        raise _Refused(RefusalKind.BAD_META, "the deflated DICOM data is damaged and cannot be read") from error


def _valid_uid(value: str) -> bool:
    return len(value) <= 64 and _UID_PATTERN.fullmatch(value) is not None


def _text(ds: Dataset, keyword: str) -> str:
    """As the index reads the tag from Orthanc: several values joined by a backslash, NULs dropped, trimmed."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        value = "\\".join(str(item) for item in value)
    return str(value).replace("\x00", "").strip()


def validate_instance(
    file: str, data: bytes, *, limits: ValidationLimits = DEFAULT_LIMITS, strict_part10: bool = True
) -> AcceptedInstance | Refusal:
    """Check one DICOM Part 10 file; the accepted copy always has its 128-byte preamble zeroed.

    ``strict_part10=False`` tolerates one known client mistake: a file that starts at the 'DICM' marker with
    no preamble (a zeroed preamble is added). STOW-RS ``application/dicom`` parts must still be Part 10 files
    (PS3.18), so the web side keeps the strict default; anything without file meta is always refused.
    """
    try:
        return _validate(file, data, limits=limits, strict_part10=strict_part10)
    except _Refused as refused:
        return Refusal(file=file, reason=refused.reason, kind=refused.kind)
    except Exception:
        # pydicom converts values lazily, so a hostile byte can surface as almost any exception at any later
        # access; one bad file must never abort the rest of an upload, and what we cannot read is not stored.
        return Refusal(file=file, reason=_UNREADABLE, kind=RefusalKind.BAD_META)


def _validate(file: str, data: bytes, *, limits: ValidationLimits, strict_part10: bool) -> AcceptedInstance:
    if len(data) > limits.max_file_bytes:
        raise _Refused(RefusalKind.TOO_LARGE, _too_large(len(data), limits.max_file_bytes))
    if not strict_part10 and data[:4] == _DICM:
        data = bytes(_PREAMBLE_BYTES) + data
    if data[_PREAMBLE_BYTES : _PREAMBLE_BYTES + 4] != _DICM:
        raise _Refused(RefusalKind.NOT_DICOM, _not_part10_reason(data))
    preamble = data[:_PREAMBLE_BYTES]
    if any(preamble) and (reason := _polyglot_reason(preamble)):
        raise _Refused(RefusalKind.POLYGLOT, reason)

    meta, dataset_start = _read_file_meta(data)
    transfer_syntax = UID(str(meta.TransferSyntaxUID).strip())
    if transfer_syntax not in AllTransferSyntaxes:
        raise _Refused(RefusalKind.BAD_META, f"the file uses transfer syntax {transfer_syntax}, which we cannot read")
    meta_sop_class_uid = str(meta.MediaStorageSOPClassUID).strip()
    # Checked before the dataset is parsed: an RT plan or DICOMDIR is refused by its class, whatever else it holds.
    if meta_sop_class_uid not in SOP_CLASS_ALLOWLIST:
        raise _Refused(
            RefusalKind.SOP_CLASS_NOT_ALLOWED,
            f"{_sop_class_label(meta_sop_class_uid)} is not accepted: "
            "only images, segmentations, structured reports and PDF reports are",
        )
    if transfer_syntax.is_deflated:
        _check_inflated_size(memoryview(data)[dataset_start:], limits)

    try:
        # Deflated datasets live in pydicom's own inflated buffer, so their values cannot be deferred to ours.
        ds = pydicom.dcmread(io.BytesIO(data), defer_size=None if transfer_syntax.is_deflated else _DEFER_BYTES)
        identifiers = {keyword: _text(ds, keyword) for keyword in (*_REQUIRED_UIDS, "PatientID", "Modality")}
    except Exception as error:  # as above: any parser failure on untrusted bytes means "refuse"
        raise _Refused(RefusalKind.BAD_META, _UNREADABLE) from error

    in_meta = {"SOPClassUID": meta_sop_class_uid, "SOPInstanceUID": str(meta.MediaStorageSOPInstanceUID).strip()}
    for keyword, label in _REQUIRED_UIDS.items():
        value = identifiers[keyword]
        if not value:
            raise _Refused(RefusalKind.MISSING_UID, f"the file has no {label}")
        if keyword in in_meta and value != in_meta[keyword]:
            # A broken or tampered export: which of the two is right cannot be known.
            raise _Refused(
                RefusalKind.BAD_META,
                f"the file header and the data disagree on the {label} (header {in_meta[keyword]}, data {value})",
            )
        if not _valid_uid(value):
            raise _Refused(RefusalKind.MISSING_UID, f"the file's {label} '{value[:80]}' is not a valid DICOM UID")

    _check_pixels(ds, data, transfer_syntax=transfer_syntax, sop_class_uid=meta_sop_class_uid, limits=limits)
    return AcceptedInstance(
        file=file,
        # Zeroed so no stored file can carry a polyglot payload, whatever the vendor put there.
        data=bytes(_PREAMBLE_BYTES) + data[_PREAMBLE_BYTES:] if any(preamble) else data,
        sop_class_uid=meta_sop_class_uid,
        sop_instance_uid=identifiers["SOPInstanceUID"],
        study_instance_uid=identifiers["StudyInstanceUID"],
        series_instance_uid=identifiers["SeriesInstanceUID"],
        transfer_syntax_uid=str(transfer_syntax),
        patient_id=identifiers["PatientID"],
        modality=identifiers["Modality"],
    )


def _check_pixels(
    ds: Dataset, data: bytes, *, transfer_syntax: UID, sop_class_uid: str, limits: ValidationLimits
) -> None:
    """Refuse pixel data that does not match the image's declared geometry (clinical safety: no garbled images)."""
    pixel_tag = next((tag for tag in _PIXEL_TAGS if tag in ds), None)
    if pixel_tag is None:
        if sop_class_uid in _DOCUMENT_CLASSES:
            return
        raise _Refused(RefusalKind.PIXEL_MISMATCH, "the image has no pixel data")
    try:
        rows, columns, samples, bits_allocated = (
            int(ds[keyword].value) for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")
        )
        # Absent (or empty) means one frame; a stated 0 stays 0 and is refused below.
        declared_frames = ds.get("NumberOfFrames")
        frames = 1 if declared_frames is None or str(declared_frames).strip() == "" else int(declared_frames)
        photometric = _text(ds, "PhotometricInterpretation")
    except Exception as error:  # see validate_instance: lazy conversion of hostile values raises anything
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            "the image's size fields (Rows, Columns, Samples per Pixel, Bits Allocated) are missing or unreadable",
        ) from error
    if not (0 < rows <= limits.max_rows_columns and 0 < columns <= limits.max_rows_columns):
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            f"the image claims {rows} x {columns} pixels; each side must be 1 to {limits.max_rows_columns}",
        )
    if not 0 < frames <= limits.max_frames:
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH, f"the image claims {frames} frames; the limit is 1 to {limits.max_frames}"
        )
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise _Refused(RefusalKind.PIXEL_MISMATCH, f"Bits Allocated is {bits_allocated}; it must be 1, 8, 16, 32 or 64")
    if samples not in (1, 3):
        raise _Refused(RefusalKind.PIXEL_MISMATCH, f"Samples per Pixel is {samples}; it must be 1 or 3")

    # keep_deferred: pixel data over _DEFER_BYTES stays unread (value None); without it pydicom would read
    # and convert it here, and a large image would look malformed.
    element = ds.get_item(pixel_tag, keep_deferred=True)
    if not isinstance(element, RawDataElement):
        # Only a sequence is parsed eagerly: pixel data encoded as one was crafted or mangled.
        raise _Refused(RefusalKind.PIXEL_MISMATCH, "the pixel data element is malformed")
    if transfer_syntax.is_encapsulated:
        if element.length != 0xFFFFFFFF:
            raise _Refused(
                RefusalKind.PIXEL_MISMATCH,
                "the transfer syntax says the pixel data is compressed but it is not stored in fragments",
            )
        _check_fragments(ds, data, start=element.value_tell, frames=frames)
        return
    if element.length == 0xFFFFFFFF:
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            "the pixel data is stored in compressed fragments but the transfer syntax says it is uncompressed",
        )
    declared = element.length
    present = len(element.value) if element.value is not None else max(0, min(declared, len(data) - element.value_tell))
    if present < declared:
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            f"the pixel data is cut short: it declares {declared:,} bytes but only {present:,} are in the file",
        )
    pixels = rows * columns * samples * frames
    expected = (pixels + 7) // 8 if bits_allocated == 1 else pixels * bits_allocated // 8
    if photometric == "YBR_FULL_422" and samples == 3:
        # PS3.3 C.7.6.3.1.2: two chroma samples are shared by each pair of pixels.
        expected = expected // 3 * 2
    # Odd lengths are padded to even with one byte (PS3.5 7.1.1).
    if declared != expected and not (expected % 2 and declared == expected + 1):
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            f"the pixel data does not match the image size: {rows} x {columns} pixels x {samples} sample(s) "
            f"x {frames} frame(s) at {bits_allocated} bits need {expected:,} bytes, but the file holds {declared:,}",
        )


def _check_fragments(ds: Dataset, data: bytes, *, start: int, frames: int) -> None:
    # Walked here rather than with pydicom.encaps.parse_fragments, which neither caps the item count nor notices
    # a final item that runs past the end of the file: both matter for hostile or truncated input.
    cut_short = _Refused(RefusalKind.PIXEL_MISMATCH, "the compressed pixel data is damaged or cut short")
    items: list[tuple[int, int]] = []
    position = start
    while True:
        if position + 8 > len(data):
            raise cut_short
        group, element, length = struct.unpack_from("<HHL", data, position)
        if (group, element) == _SEQUENCE_DELIMITER_TAG:
            break
        if (group, element) != _ITEM_TAG or length == 0xFFFFFFFF or position + 8 + length > len(data):
            raise cut_short
        items.append((position, length))
        if len(items) > _MAX_FRAGMENTS:
            raise _Refused(
                RefusalKind.PIXEL_MISMATCH, f"the compressed pixel data has more than {_MAX_FRAGMENTS:,} fragments"
            )
        position += 8 + length
    if not items or items[0][1] % 4:
        raise cut_short
    (table_position, table_length), fragments = items[0], items[1:]
    if len(fragments) < frames:
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            f"the image declares {frames} frame(s) but its compressed pixel data holds "
            f"only {len(fragments)} fragment(s)",
        )
    if table_length and table_length // 4 != frames:
        # Checked before the table is unpacked: its length alone is the attacker's to choose.
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH,
            f"the compressed pixel data's offset table ({table_length // 4} entries) does not match "
            f"its {frames} frame(s) and {len(fragments)} fragment(s)",
        )
    offsets = struct.unpack_from(f"<{table_length // 4}L", data, table_position + 8)
    if offsets:
        first = fragments[0][0]
        fragment_offsets = {fragment_position - first for fragment_position, _ in fragments}
        ordered = all(earlier < later for earlier, later in zip(offsets, offsets[1:], strict=False))
        if len(offsets) != frames or offsets[0] != 0 or not ordered or not fragment_offsets.issuperset(offsets):
            raise _Refused(
                RefusalKind.PIXEL_MISMATCH,
                f"the compressed pixel data's offset table ({len(offsets)} entries) does not match "
                f"its {frames} frame(s) and {len(fragments)} fragment(s)",
            )
    extended = ds.get_item(_EXTENDED_OFFSET_TABLE_TAG, keep_deferred=True) if _EXTENDED_OFFSET_TABLE_TAG in ds else None
    if extended is not None and getattr(extended, "length", 0) // 8 != frames:
        raise _Refused(
            RefusalKind.PIXEL_MISMATCH, f"the extended offset table does not list the image's {frames} frame(s)"
        )


def expand_upload(
    file: str,
    data: bytes | BinaryIO,
    *,
    limits: ValidationLimits = DEFAULT_LIMITS,
    inside_folder: bool = False,
) -> Iterator[ValidationResult]:
    """Validate one uploaded file (from a browser, a folder, or a .zip detected by content) into per-file results.

    A stream is read from its start. Inside folders and archives, harmless non-DICOM files are Skipped; a
    refused archive yields exactly one Refusal for the archive and nothing accepted.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    if not getattr(stream, "seekable", lambda: False)():
        # zipfile needs to seek; bounded so a never-ending body cannot fill memory.
        stream = io.BytesIO(stream.read(limits.max_request_bytes + 1))
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    if size > limits.max_request_bytes:
        yield Refusal(file, _too_large(size, limits.max_request_bytes, "upload"), RefusalKind.TOO_LARGE)
        return
    head = stream.read(512)
    stream.seek(0)
    # A Part 10 file that also starts like a zip is a polyglot: validate_instance must see it, not the zip reader.
    if head[128:132] != _DICM and head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        yield from _expand_zip(file, stream, size=size, limits=limits)
        return
    if size > limits.max_file_bytes:
        yield Refusal(file, _too_large(size, limits.max_file_bytes), RefusalKind.TOO_LARGE)
        return
    content = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else stream.read()
    yield _classify(file, content, limits=limits, inside_folder=inside_folder)


def _classify(file: str, content: bytes, *, limits: ValidationLimits, inside_folder: bool) -> ValidationResult:
    base_name = _base_name(file)
    if base_name.upper().split(";")[0] == "DICOMDIR":
        return Skipped(file, "DICOMDIR index file")
    if content[128:132] != _DICM and not _looks_like_headerless_dicom(content):
        if inside_folder:
            return Skipped(file, _non_dicom_reason(base_name, content))
        if (archive := _archive_kind(content)) is not None:
            return Refusal(
                file, f"only .zip archives are accepted (this is a {archive} archive)", RefusalKind.NOT_DICOM
            )
    return validate_instance(file, content, limits=limits)


def _non_dicom_reason(base_name: str, content: bytes) -> str:
    lowered = base_name.lower()
    if lowered in _SYSTEM_FILES:
        return "not a DICOM file (system file)"
    if lowered.startswith("._"):
        return "not a DICOM file (macOS metadata file)"
    if lowered.endswith(_OFFICE_SUFFIXES):
        return "not a DICOM file (office document)"
    if (archive := _archive_kind(content)) is not None:
        return f"not a DICOM file ({archive} archive; only .zip archives are opened)"
    if content.startswith(_IMAGE_MAGIC):
        return "not a DICOM file (thumbnail image)"
    if content.startswith(b"%PDF"):
        return "not a DICOM file (PDF document)"
    if content.startswith((b"MZ", b"\x7fELF")):
        return "not a DICOM file (program file)"
    sample = content[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the sample's end still means text; any other bad byte means binary.
        text = sample[: error.start].decode("utf-8") if error.start > len(sample) - 4 else "\0"
    if content and all(character.isprintable() or character in "\r\n\t\f" for character in text):
        return "not a DICOM file (text file)"
    return "not a DICOM file"


def _directory_records(stream: BinaryIO, end_record: list, *, limit: int) -> int:
    """How many records the central directory holds, counted up to limit + 1 without building them."""
    size = end_record[zipfile._ECD_SIZE]
    start = end_record[zipfile._ECD_LOCATION] - size
    if end_record[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    count = position = 0
    stream.seek(max(0, start))
    while count <= limit and position + 46 <= size:
        header = stream.read(46)
        if len(header) < 46 or header[:4] != b"PK\x01\x02":
            break
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", header, 28)
        skipped = name_length + extra_length + comment_length
        stream.seek(skipped, io.SEEK_CUR)
        position += 46 + skipped
        count += 1
    stream.seek(0)
    return count


def _expand_zip(file: str, stream: BinaryIO, *, size: int, limits: ValidationLimits) -> Iterator[ValidationResult]:
    try:
        # The central directory is read whole by zipfile: bound it by the end record's own claims first.
        end_record = zipfile._EndRecData(stream)  # CPython's end-record reader; private, unchanged since 2.6
        stream.seek(0)
        if end_record is None:
            raise zipfile.BadZipFile("no end of central directory")
        declared_entries = end_record[zipfile._ECD_ENTRIES_TOTAL]
        directory_bytes = end_record[zipfile._ECD_SIZE]
        limit = limits.max_zip_entries
        if (
            declared_entries > limit
            or directory_bytes > limit * 4096
            # The end record may understate the count: the records themselves are what zipfile reads.
            or _directory_records(stream, end_record, limit=limit) > limit
        ):
            held = f"{declared_entries:,}" if declared_entries > limit else f"more than {limit:,}"
            yield Refusal(file, f"the archive holds {held} files; the limit is {limit:,}", RefusalKind.TOO_MANY_ENTRIES)
            return
        archive = zipfile.ZipFile(stream)
    except Exception:  # zipfile raises many kinds on crafted input (NotImplementedError, struct.error...)
        yield Refusal(file, "the .zip archive is damaged and cannot be read", RefusalKind.ZIP_CORRUPT)
        return
    with archive:
        entries = archive.infolist()
        refusal = _screen_directory(file, entries, archive_bytes=size, limits=limits)
        if refusal is None:
            refusal = _screen_contents(file, archive, entries, limits=limits)
        if refusal is not None:
            yield refusal
            return
        files = [entry for entry in entries if not entry.is_dir()]
        if not files:
            yield Skipped(file, "empty archive")
            return
        # Second pass: the whole archive is known to be sound, so per-entry results may now be handed out.
        for entry in files:
            name = f"{file}/{entry.filename}"
            if entry.file_size > limits.max_file_bytes:
                yield Refusal(name, _too_large(entry.file_size, limits.max_file_bytes), RefusalKind.TOO_LARGE)
                continue
            try:
                content = b"".join(_inflate_entry(archive, entry, limits))
            except _Refused as refused:
                yield Refusal(file, refused.reason, refused.kind)
                return
            yield _classify(name, content, limits=limits, inside_folder=True)


def _unsafe_name(name: str) -> bool:
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None or ".." in parts or "\0" in name


def _screen_directory(
    file: str, entries: list[zipfile.ZipInfo], *, archive_bytes: int, limits: ValidationLimits
) -> Refusal | None:
    """Refuse an archive from its table of contents alone, before a single byte is inflated."""
    if len(entries) > limits.max_zip_entries:
        return Refusal(
            file,
            f"the archive holds {len(entries):,} files; the limit is {limits.max_zip_entries:,}",
            RefusalKind.TOO_MANY_ENTRIES,
        )
    for entry in entries:
        # We never extract to disk, but a path that escapes its folder is only ever crafted (zip slip).
        if _unsafe_name(entry.filename):
            return Refusal(
                file, f"the archive holds an entry with an unsafe path '{entry.filename[:200]}'", RefusalKind.ZIP_SLIP
            )
        if stat.S_ISLNK(entry.external_attr >> 16):
            return Refusal(file, f"the archive holds a symbolic link '{entry.filename[:200]}'", RefusalKind.ZIP_SLIP)
        if entry.flag_bits & 0x41:  # traditional (bit 0) or strong (bit 6) encryption
            return Refusal(
                file,
                f"'{entry.filename[:200]}' in the archive is password-protected; "
                "please send the zip without a password",
                RefusalKind.ZIP_CORRUPT,
            )
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # zipfile inflates bzip2/LZMA without an output bound; every OS zip tool writes deflate anyway.
            return Refusal(
                file,
                f"'{entry.filename[:200]}' uses a compression method we do not accept; "
                "please re-create the zip with standard compression",
                RefusalKind.ZIP_CORRUPT,
            )
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_zip_ratio:
            return Refusal(
                file,
                f"'{entry.filename[:200]}' would unpack to {ratio:,.0f} times "
                f"its packed size; the limit is {limits.max_zip_ratio:,.0f} times (a zip bomb)",
                RefusalKind.ZIP_BOMB,
            )
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_zip_uncompressed_bytes:
        return Refusal(
            file,
            f"the archive would unpack to {_size(total)}; "
            f"the limit is {_size(limits.max_zip_uncompressed_bytes)} (a zip bomb)",
            RefusalKind.ZIP_BOMB,
        )
    # Overlapping entries (one compressed stream listed many times) only show in the overall ratio.
    if total > _RATIO_FLOOR_BYTES and total > limits.max_zip_ratio * max(archive_bytes, 1):
        return Refusal(
            file,
            f"the archive would unpack to {total / max(archive_bytes, 1):,.0f} times its size; "
            f"the limit is {limits.max_zip_ratio:,.0f} times (a zip bomb)",
            RefusalKind.ZIP_BOMB,
        )
    return None


def _screen_contents(
    file: str, archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], *, limits: ValidationLimits
) -> Refusal | None:
    """Inflate every entry once, keeping only its head, so a bad entry late in the archive refuses it all up front."""
    for entry in entries:
        if entry.is_dir() or entry.file_size > limits.max_file_bytes:
            continue
        head = b""
        try:
            for chunk in _inflate_entry(archive, entry, limits):
                if len(head) < 512:
                    head += chunk[: 512 - len(head)]
        except _Refused as refused:
            return Refusal(file, refused.reason, refused.kind)
        base_name = _base_name(entry.filename).lower()
        archive_kind = _archive_kind(head)
        if head[128:132] != _DICM and archive_kind is not None and not base_name.endswith(_OFFICE_SUFFIXES):
            # We never open archives inside archives (recursive bombs); one inside a clinic's export is crafted.
            return Refusal(
                file,
                f"the archive contains another archive ('{entry.filename[:200]}', {archive_kind}); "
                "please send one .zip holding the DICOM files themselves",
                RefusalKind.NESTED_ARCHIVE,
            )
    return None


def _inflate_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limits: ValidationLimits) -> Iterator[bytes]:
    """Yield an entry's bytes (never more than its header declares), refusing it unless size and CRC both match.

    zipfile silently stops at the declared size and then reports only a CRC error, so it is handed a copy of
    the entry allowed to run further, and the CRC is checked here. Output beyond the declaration is counted,
    not kept: up to the limits it is plain damage (a flipped bit in a deflate stream), past them a header
    that lies to slip under the ratio checks (a zip bomb).
    """
    bound = max(entry.file_size, min(limits.max_file_bytes, int(limits.max_zip_ratio * max(entry.compress_size, 1))))
    probe = copy.copy(entry)
    del probe.CRC
    probe.file_size = bound + 1
    name = entry.filename[:200]
    produced = 0
    crc = 0
    try:
        with archive.open(probe) as stream:
            while chunk := stream.read(_READ_CHUNK):
                produced += len(chunk)
                if produced > bound:
                    raise _Refused(
                        RefusalKind.ZIP_BOMB,
                        f"'{name}' unpacks to more than the {entry.file_size:,} bytes its header declares "
                        "and beyond the limits (a zip bomb)",
                    )
                if produced <= entry.file_size:
                    crc = zlib.crc32(chunk, crc)
                    yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as error:
        raise _Refused(RefusalKind.ZIP_CORRUPT, f"the .zip archive is damaged: '{name}' cannot be read") from error
    if produced != entry.file_size:
        raise _Refused(
            RefusalKind.ZIP_CORRUPT,
            f"the .zip archive is damaged: '{name}' holds {produced:,} bytes "
            f"but its header declares {entry.file_size:,}",
        )
    if crc != entry.CRC:
        raise _Refused(RefusalKind.ZIP_CORRUPT, f"the .zip archive is damaged: '{name}' fails its integrity check")


def summarise(results: Iterable[ValidationResult]) -> dict[str, int]:
    """Counts for a results page: accepted, refused (of which hostile), skipped."""
    counts = {"accepted": 0, "refused": 0, "hostile": 0, "skipped": 0}
    for result in results:
        if isinstance(result, AcceptedInstance):
            counts["accepted"] += 1
        elif isinstance(result, Refusal):
            counts["refused"] += 1
            counts["hostile"] += result.hostile
        else:
            counts["skipped"] += 1
    return counts
