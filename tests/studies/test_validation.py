"""Tests for upload validation: what is accepted, what is refused with which words, and what is skipped."""

from __future__ import annotations

import gzip
import io
import random
import stat
import struct
import zipfile
from collections.abc import Iterable

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    DeflatedExplicitVRLittleEndian,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from saas.studies.synthetic import cr_image, ct_series, dataset_bytes
from saas.studies.validation import (
    AcceptedInstance,
    Refusal,
    RefusalKind,
    Skipped,
    ValidationLimits,
    expand_upload,
    summarise,
    validate_instance,
)

JPEG_THUMBNAIL = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64)


def _ct_datasets(slices: int = 1, **overrides: object) -> list[Dataset]:
    arguments: dict[str, object] = {
        "patient_id": "SYN-001",
        "patient_name": "Synthetic^Patient",
        "accession_number": "ACC-001",
        "slices": slices,
    }
    arguments.update(overrides)
    return ct_series(**arguments)  # type: ignore[arg-type]


def _ct_bytes(**overrides: object) -> bytes:
    return dataset_bytes(_ct_datasets(**overrides)[0])


def _testdata(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as file:
        return file.read()


def _part10(ds: Dataset, *, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _document(sop_class_uid: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "SYN-002"
    ds.PatientName = "Synthetic^Report"
    ds.Modality = modality
    return ds


def _zip(entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def _patch_zip(raw: bytes, *, local_offset: int, central_offset: int, value: bytes) -> bytes:
    """Overwrite one field in the (single) local header and its central directory record alike."""
    patched = bytearray(raw)
    patched[local_offset : local_offset + len(value)] = value
    central = raw.index(b"PK\x01\x02")
    patched[central + central_offset : central + central_offset + len(value)] = value
    return bytes(patched)


def _assert_refused(result: object, kind: RefusalKind, reason: str) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.kind is kind
    assert reason in result.reason, result.reason
    return result


def _assert_archive_refused(results: list, kind: RefusalKind, reason: str) -> Refusal:
    # a refused archive is one Refusal for the archive itself and nothing else: nothing accepted, nothing skipped
    assert len(results) == 1, results
    refusal = _assert_refused(results[0], kind, reason)
    assert refusal.file == "upload.zip"
    return refusal


# --- single instances: accepted ---------------------------------------------------------------------------------


def test_synthetic_ct_slice_is_accepted_with_its_identifiers() -> None:
    # given a synthetic CT slice written as a Part 10 file
    ds = _ct_datasets()[0]
    raw = dataset_bytes(ds)

    # when it is validated
    result = validate_instance("slice1.dcm", raw)

    # then it is accepted unchanged, with the identifiers the ingest path needs
    assert isinstance(result, AcceptedInstance)
    assert result.data == raw
    assert result.file == "slice1.dcm"
    assert result.sop_class_uid == ds.SOPClassUID
    assert result.sop_instance_uid == ds.SOPInstanceUID
    assert result.study_instance_uid == ds.StudyInstanceUID
    assert result.series_instance_uid == ds.SeriesInstanceUID
    assert result.transfer_syntax_uid == ExplicitVRLittleEndian
    assert (result.patient_id, result.modality) == ("SYN-001", "CT")
    assert "data=" not in repr(result)


def test_synthetic_cr_is_accepted() -> None:
    # given a synthetic chest radiograph
    raw = dataset_bytes(cr_image(patient_id="SYN-003", patient_name="Synthetic^Chest", accession_number="ACC-3"))

    # when it is validated
    result = validate_instance("chest.dcm", raw)

    # then it is accepted as a CR
    assert isinstance(result, AcceptedInstance)
    assert result.modality == "CR"


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000.dcm",
        "MR_small_jp2klossless.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 SV1)
        "JPEG-lossy.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
    ],
)
def test_pydicom_reference_files_are_accepted(name: str) -> None:
    # given one of pydicom's reference files (compressed, multi-frame, other encodings)
    raw = _testdata(name)

    # when it is validated
    result = validate_instance(name, raw)

    # then it is accepted with its own transfer syntax
    assert isinstance(result, AcceptedInstance), result
    assert (
        result.transfer_syntax_uid
        == pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta.TransferSyntaxUID
    )


def test_images_with_pixel_data_over_a_mebibyte_are_accepted() -> None:
    # given a 1024 x 1024 CT slice (2 MiB of pixels) and the same slice RLE-compressed (fragments over 1 MiB):
    # real radiographs, mammograms and multi-frame images are this size or larger
    ds = _ct_datasets(rows=1024, columns=1024)[0]
    raw = dataset_bytes(ds)
    compressed = _ct_datasets(rows=1024, columns=1024)[0]
    compressed.compress(RLELossless, generate_instance_uid=False)
    raw_rle = dataset_bytes(compressed)
    assert len(compressed.PixelData) > 1024 * 1024

    # when they are validated
    results = [validate_instance("big.dcm", raw), validate_instance("big-rle.dcm", raw_rle)]

    # then both are accepted, bytes unchanged
    for result, data in zip(results, (raw, raw_rle), strict=True):
        assert isinstance(result, AcceptedInstance), result
        assert result.data == data


def test_an_image_claiming_zero_frames_is_refused() -> None:
    ds = _ct_datasets()[0]
    ds.NumberOfFrames = 0
    result = validate_instance("zero.dcm", dataset_bytes(ds))
    _assert_refused(result, RefusalKind.PIXEL_MISMATCH, "the image claims 0 frames")


def test_the_ybr_422_size_reduction_applies_only_to_colour_images() -> None:
    # given a one-sample image labelled YBR_FULL_422 whose pixel data is two thirds of its size
    ds = _ct_datasets()[0]
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3 * 2]
    result = validate_instance("short.dcm", dataset_bytes(ds))
    _assert_refused(result, RefusalKind.PIXEL_MISMATCH, "the pixel data does not match the image size")


def test_a_compressed_image_with_a_wrong_sized_offset_table_is_refused() -> None:
    # given an RLE image of one frame whose basic offset table claims 3 entries (checked before it is unpacked)
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    pixel_data = ds.PixelData
    (table_length,) = struct.unpack_from("<L", pixel_data, 4)
    table = struct.pack("<III", 0, 0, 0)
    ds.PixelData = pixel_data[:4] + struct.pack("<L", len(table)) + table + pixel_data[8 + table_length :]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)

    result = validate_instance("rle.dcm", buffer.getvalue())

    _assert_refused(result, RefusalKind.PIXEL_MISMATCH, "offset table (3 entries) does not match its 1 frame(s)")


def test_vendor_preamble_is_accepted_and_zeroed() -> None:
    # given a file whose vendor wrote a TIFF header into the preamble
    raw = _testdata("CT_small.dcm")
    assert raw[:4] == b"II*\x00"

    # when it is validated
    result = validate_instance("CT_small.dcm", raw)

    # then it is accepted, and the stored bytes carry a zeroed preamble and are otherwise identical
    assert isinstance(result, AcceptedInstance)
    assert result.data[:128] == bytes(128)
    assert result.data[128:] == raw[128:]


def test_basic_text_sr_is_accepted() -> None:
    # given a minimal Basic Text SR (no pixel data)
    ds = _document(BasicTextSRStorage, "SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = Sequence([title])
    finding = Dataset()
    finding.RelationshipType, finding.ValueType, finding.TextValue = "CONTAINS", "TEXT", "No acute findings."
    ds.ContentSequence = Sequence([finding])

    # when it is validated
    result = validate_instance("report.dcm", _part10(ds))

    # then it is accepted
    assert isinstance(result, AcceptedInstance), result
    assert (result.sop_class_uid, result.modality) == (BasicTextSRStorage, "SR")


def test_encapsulated_pdf_is_accepted() -> None:
    # given an Encapsulated PDF report
    ds = _document(EncapsulatedPDFStorage, "DOC")
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = "Referral"
    ds.EncapsulatedDocument = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"

    # when it is validated
    result = validate_instance("referral.dcm", _part10(ds))

    # then it is accepted
    assert isinstance(result, AcceptedInstance), result
    assert result.sop_class_uid == EncapsulatedPDFStorage


def test_deflated_file_is_accepted() -> None:
    # given a CT slice in Deflated Explicit VR Little Endian
    raw = _part10(_ct_datasets(noise_hu=0)[0], transfer_syntax=DeflatedExplicitVRLittleEndian)

    # when it is validated
    result = validate_instance("deflated.dcm", raw)

    # then it is accepted as sent
    assert isinstance(result, AcceptedInstance), result
    assert result.transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def test_missing_preamble_is_tolerated_only_when_not_strict() -> None:
    # given a Part 10 file sent without its 128-byte preamble (starts at 'DICM')
    raw = _ct_bytes()[128:]

    # when it is validated strictly and leniently
    strict = validate_instance("part 1", raw)
    lenient = validate_instance("part 1", raw, strict_part10=False)

    # then strict refuses it and lenient stores it with a zeroed preamble added
    _assert_refused(strict, RefusalKind.NOT_DICOM, "the 128-byte preamble before the 'DICM' marker is missing")
    assert isinstance(lenient, AcceptedInstance)
    assert lenient.data == bytes(128) + raw


# --- single instances: refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("magic", "label"),
    [(b"MZ\x90\x00", "a Windows program"), (b"\x7fELF\x02\x01", "a Linux program"), (b"PK\x03\x04", "a zip archive")],
)
def test_executable_preamble_is_refused_as_hostile_polyglot(magic: bytes, label: str) -> None:
    # given a valid CT slice whose preamble also makes it an executable or archive (CVE-2019-11687)
    raw = _ct_bytes()
    polyglot = (magic + bytes(128))[:128] + raw[128:]

    # when it is validated, alone or as an upload
    result = validate_instance("evil.dcm", polyglot)
    uploaded = list(expand_upload("evil.dcm", polyglot))

    # then it is refused as a hostile polyglot, naming what it pretends to be
    refusal = _assert_refused(result, RefusalKind.POLYGLOT, f"also makes it {label} (a DICOM polyglot, CVE-2019-11687)")
    assert refusal.hostile
    assert uploaded == [refusal]


def test_file_without_dicm_marker_is_refused() -> None:
    # given a PNG picked by mistake
    data = b"\x89PNG\r\n\x1a\n" + bytes(300)

    # when it is validated
    result = validate_instance("photo.png", data)

    # then it is refused as not DICOM, not as hostile
    refusal = _assert_refused(result, RefusalKind.NOT_DICOM, "not a DICOM file: no 'DICM' marker at byte 128")
    assert not refusal.hostile


def test_truncated_file_meta_is_refused() -> None:
    # given a file cut off inside its file meta header
    raw = _ct_bytes()[:170]

    # when it is validated
    result = validate_instance("cut.dcm", raw)

    # then it is refused for its header
    _assert_refused(result, RefusalKind.BAD_META, "the DICOM file header is cut short")


def test_file_meta_without_transfer_syntax_is_refused() -> None:
    # given a file whose header lacks its UIDs and Transfer Syntax UID
    raw = _testdata("meta_missing_tsyntax.dcm")

    # when it is validated
    result = validate_instance("no-ts.dcm", raw)

    # then it is refused, naming the missing elements
    refusal = _assert_refused(
        result, RefusalKind.BAD_META, "the DICOM file header is missing Media Storage SOP Class UID"
    )
    assert refusal.reason.endswith("Transfer Syntax UID (0002,0010)")


def test_meta_and_dataset_sop_instance_uid_mismatch_is_refused() -> None:
    # given a slice whose file header names another SOP Instance UID (of the same length) than its data
    ds = _ct_datasets()[0]
    raw = dataset_bytes(ds)
    other = ds.SOPInstanceUID[:-1] + ("1" if ds.SOPInstanceUID[-1] != "1" else "2")
    tampered = raw.replace(ds.SOPInstanceUID.encode(), other.encode(), 1)

    # when it is validated
    result = validate_instance("mismatch.dcm", tampered)

    # then it is refused: which of the two is right cannot be known
    _assert_refused(
        result, RefusalKind.BAD_META, "the file header and the data disagree on the SOP Instance UID (0008,0018)"
    )


def test_missing_study_instance_uid_is_refused() -> None:
    # given a slice without a Study Instance UID
    ds = _ct_datasets()[0]
    del ds.StudyInstanceUID

    # when it is validated
    result = validate_instance("orphan.dcm", dataset_bytes(ds))

    # then it is refused, naming the element
    _assert_refused(result, RefusalKind.MISSING_UID, "the file has no Study Instance UID (0020,000D)")


def test_malformed_series_instance_uid_is_refused() -> None:
    # given a slice whose Series Instance UID is not a UID
    ds = _ct_datasets()[0]
    ds.SeriesInstanceUID = "series-one"

    # when it is validated
    result = validate_instance("bad-uid.dcm", dataset_bytes(ds))

    # then it is refused
    _assert_refused(result, RefusalKind.MISSING_UID, "Series Instance UID (0020,000E) 'series-one' is not a valid")


def test_pixel_data_shorter_than_the_image_size_is_refused() -> None:
    # given a 64 x 64 16-bit slice whose pixel data lost 100 bytes
    ds = _ct_datasets()[0]
    ds.PixelData = ds.PixelData[:-100]

    # when it is validated
    result = validate_instance("short.dcm", dataset_bytes(ds))

    # then it is refused with the numbers
    _assert_refused(
        result,
        RefusalKind.PIXEL_MISMATCH,
        "64 x 64 pixels x 1 sample(s) x 1 frame(s) at 16 bits need 8,192 bytes, but the file holds 8,092",
    )


def test_file_cut_inside_pixel_data_is_refused() -> None:
    # given a slice whose last 100 bytes were lost in transfer
    raw = _ct_bytes()[:-100]

    # when it is validated
    result = validate_instance("truncated.dcm", raw)

    # then it is refused as cut short
    _assert_refused(
        result, RefusalKind.PIXEL_MISMATCH, "the pixel data is cut short: it declares 8,192 bytes but only 8,092"
    )


def test_absurd_rows_are_refused() -> None:
    # given a slice claiming 20000 rows
    ds = _ct_datasets()[0]
    ds.Rows = 20000

    # when it is validated
    result = validate_instance("huge.dcm", dataset_bytes(ds))

    # then it is refused before any size arithmetic matters
    _assert_refused(
        result, RefusalKind.PIXEL_MISMATCH, "the image claims 20000 x 64 pixels; each side must be 1 to 16384"
    )


def test_compressed_frames_without_fragments_are_refused() -> None:
    # given an RLE image claiming 5 frames but holding one compressed fragment
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    ds.NumberOfFrames = 5
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)

    # when it is validated
    result = validate_instance("rle.dcm", buffer.getvalue())

    # then it is refused
    _assert_refused(
        result,
        RefusalKind.PIXEL_MISMATCH,
        "the image declares 5 frame(s) but its compressed pixel data holds only 1 fragment(s)",
    )


def test_rt_plan_is_refused_as_class_not_allowed() -> None:
    # given an RT Plan
    raw = _testdata("rtplan.dcm")

    # when it is validated
    result = validate_instance("plan.dcm", raw)

    # then it is refused by class, in words a clinic understands
    _assert_refused(
        result,
        RefusalKind.SOP_CLASS_NOT_ALLOWED,
        "RT Plan Storage (1.2.840.10008.5.1.4.1.1.481.5) is not accepted: "
        "only images, segmentations, structured reports and PDF reports are",
    )


def test_too_large_file_is_refused() -> None:
    # given limits of 2 KB per file and a 9 KB slice
    limits = ValidationLimits(max_file_bytes=2 * 1024)
    raw = _ct_bytes()

    # when it is validated
    result = validate_instance("big.dcm", raw, limits=limits)

    # then it is refused with both sizes
    _assert_refused(result, RefusalKind.TOO_LARGE, "file is 9.3 KB; the limit is 2 KB per file")


def test_deflate_bomb_is_refused() -> None:
    # given a deflated slice that unpacks beyond the per-file limit though its packed size is under it
    raw = _part10(_ct_datasets(noise_hu=0)[0], transfer_syntax=DeflatedExplicitVRLittleEndian)
    limits = ValidationLimits(max_file_bytes=len(raw) + 100)

    # when it is validated
    result = validate_instance("deflated.dcm", raw, limits=limits)

    # then it is refused as a decompression bomb, never inflated in full
    refusal = _assert_refused(result, RefusalKind.ZIP_BOMB, "the deflated DICOM data unpacks to more than")
    assert refusal.hostile


# --- uploads and folders ----------------------------------------------------------------------------------------


def test_gzip_upload_is_refused_as_unsupported_archive() -> None:
    # given a .tar.gz picked instead of a .zip
    data = gzip.compress(_ct_bytes())

    # when it is uploaded
    results = list(expand_upload("study.tar.gz", data))

    # then it is refused, not hostile, telling the clinic what to send
    assert len(results) == 1
    refusal = _assert_refused(results[0], RefusalKind.NOT_DICOM, "only .zip archives are accepted (this is a gzip")
    assert not refusal.hostile


def test_non_dicom_files_in_a_folder_are_skipped() -> None:
    # given a README and a thumbnail picked up with a folder
    readme = list(expand_upload("CD/README.TXT", b"Burned by ACME PACS\r\n", inside_folder=True))
    thumbnail = list(expand_upload("CD/thumb.jpg", JPEG_THUMBNAIL, inside_folder=True))

    # when/then they are skipped with plain reasons
    assert readme == [Skipped("CD/README.TXT", "not a DICOM file (text file)")]
    assert thumbnail == [Skipped("CD/thumb.jpg", "not a DICOM file (thumbnail image)")]


def test_headerless_dicom_in_a_folder_is_refused_not_skipped() -> None:
    # given a DICOM dataset with no preamble and no file meta, found in a folder
    data = _testdata("ExplVR_LitEndNoMeta.dcm")

    # when it is uploaded from the folder
    results = list(expand_upload("CD/IM0001", data, inside_folder=True))

    # then it is refused, so the clinic does not believe the image arrived
    assert len(results) == 1
    _assert_refused(results[0], RefusalKind.NOT_DICOM, "a DICOM dataset without the standard file header")


def test_oversized_upload_is_refused() -> None:
    # given limits of 1 KB per upload
    limits = ValidationLimits(max_request_bytes=1024)

    # when a 9 KB slice is uploaded as a stream
    results = list(expand_upload("big.dcm", io.BytesIO(_ct_bytes()), limits=limits))

    # then it is refused
    assert len(results) == 1
    _assert_refused(results[0], RefusalKind.TOO_LARGE, "upload is 9.3 KB; the limit is 1 KB per upload")


# --- zip archives -----------------------------------------------------------------------------------------------


def test_zip_with_folders_and_extras_accepts_images_and_skips_the_rest() -> None:
    # given a CD-style export: folders, a DICOMDIR, a thumbnail, a README and 3 CT slices
    slices = [dataset_bytes(ds) for ds in _ct_datasets(slices=3)]
    data = _zip(
        [
            ("STUDY/", b""),
            ("STUDY/SERIES1/", b""),
            ("DICOMDIR", _testdata("rtplan.dcm")),
            ("STUDY/thumb.jpg", JPEG_THUMBNAIL),
            ("README.txt", b"Exported by ACME PACS 5.2\n"),
            *((f"STUDY/SERIES1/IM{index}", raw) for index, raw in enumerate(slices, 1)),
        ]
    )

    # when it is uploaded as a stream
    results = list(expand_upload("upload.zip", io.BytesIO(data)))

    # then the slices are accepted under their path in the archive and the extras skipped
    accepted = [result for result in results if isinstance(result, AcceptedInstance)]
    assert [result.file for result in accepted] == [f"upload.zip/STUDY/SERIES1/IM{index}" for index in (1, 2, 3)]
    assert [result.data for result in accepted] == slices
    assert [result for result in results if isinstance(result, Skipped)] == [
        Skipped("upload.zip/DICOMDIR", "DICOMDIR index file"),
        Skipped("upload.zip/STUDY/thumb.jpg", "not a DICOM file (thumbnail image)"),
        Skipped("upload.zip/README.txt", "not a DICOM file (text file)"),
    ]
    assert summarise(results) == {"accepted": 3, "refused": 0, "hostile": 0, "skipped": 3}


def test_zip_keeps_per_file_refusals_beside_accepted_files() -> None:
    # given an archive with one good slice and one RT plan
    data = _zip([("a/IM1", _ct_bytes()), ("a/PLAN", _testdata("rtplan.dcm"))])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then the slice is accepted and only the plan refused
    assert isinstance(results[0], AcceptedInstance)
    _assert_refused(results[1], RefusalKind.SOP_CLASS_NOT_ALLOWED, "RT Plan Storage")
    assert results[1].file == "upload.zip/a/PLAN"


def test_office_document_inside_zip_is_skipped_not_nested() -> None:
    # given a referral letter (.docx, itself a zip) beside a slice
    letter = _zip([("word/document.xml", b"<w:document/>")])
    data = _zip([("IM1", _ct_bytes()), ("referral.docx", letter)])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then the letter is skipped, never opened, and the slice accepted
    assert isinstance(results[0], AcceptedInstance)
    assert results[1] == Skipped("upload.zip/referral.docx", "not a DICOM file (office document)")


@pytest.mark.parametrize("name", ["../evil.dcm", "/etc/x", "images/../../evil.dcm", "C:/Windows/evil.dcm", "a\\..\\b"])
def test_zip_slip_path_refuses_the_whole_archive(name: str) -> None:
    # given an archive with a good slice and an entry whose path escapes its folder
    data = _zip([("IM1", _ct_bytes()), (zipfile.ZipInfo(name), b"x")])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then the whole archive is refused as hostile, and the good slice is not accepted
    refusal = _assert_archive_refused(results, RefusalKind.ZIP_SLIP, f"an entry with an unsafe path '{name}'")
    assert refusal.hostile


def test_zip_symlink_refuses_the_whole_archive() -> None:
    # given an archive holding a symbolic link
    link = zipfile.ZipInfo("IM2")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = _zip([("IM1", _ct_bytes()), (link, b"/etc/passwd")])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then it is refused as hostile
    _assert_archive_refused(results, RefusalKind.ZIP_SLIP, "the archive holds a symbolic link 'IM2'")


def test_highly_compressed_entry_refuses_the_whole_archive() -> None:
    # given an archive with a good slice and 8 MB of zeros (about 1000:1)
    data = _zip([("IM1", _ct_bytes()), ("padding.bin", bytes(8 * 1024 * 1024))])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then the whole archive is refused as a zip bomb
    refusal = _assert_archive_refused(results, RefusalKind.ZIP_BOMB, "'padding.bin' would unpack to")
    assert "its packed size; the limit is 200 times (a zip bomb)" in refusal.reason
    assert refusal.hostile


def test_entry_lying_about_its_size_refuses_the_whole_archive() -> None:
    # given an entry of 2 MB of zeros whose headers claim 1000 bytes (so every declared ratio looks harmless)
    honest = _zip([("IM1", bytes(2 * 1024 * 1024))])
    lying = _patch_zip(honest, local_offset=22, central_offset=24, value=struct.pack("<L", 1000))

    # when it is uploaded
    results = list(expand_upload("upload.zip", lying))

    # then inflation stops at the limits, not at the end of the stream, and the archive is refused as a bomb
    refusal = _assert_archive_refused(
        results, RefusalKind.ZIP_BOMB, "'IM1' unpacks to more than the 1,000 bytes its header declares and beyond"
    )
    assert refusal.hostile


def test_entry_slightly_longer_than_declared_is_damage_not_a_bomb() -> None:
    # given a slice whose headers claim 100 bytes fewer than it holds (within every limit)
    raw = _ct_bytes()
    honest = _zip([("IM1", raw)])
    short = _patch_zip(honest, local_offset=22, central_offset=24, value=struct.pack("<L", len(raw) - 100))

    # when it is uploaded
    results = list(expand_upload("upload.zip", short))

    # then the archive is refused as damaged, without a security alert
    refusal = _assert_archive_refused(
        results, RefusalKind.ZIP_CORRUPT, f"'IM1' holds {len(raw):,} bytes but its header declares {len(raw) - 100:,}"
    )
    assert not refusal.hostile


def test_archive_over_the_uncompressed_total_is_refused() -> None:
    # given limits of 20 KB unpacked per archive and three 9 KB slices
    limits = ValidationLimits(max_zip_uncompressed_bytes=20 * 1024)
    data = _zip([(f"IM{index}", dataset_bytes(ds)) for index, ds in enumerate(_ct_datasets(slices=3))])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data, limits=limits))

    # then it is refused as a whole
    _assert_archive_refused(results, RefusalKind.ZIP_BOMB, "the archive would unpack to 28 KB; the limit is 20 KB")


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("inner.zip", _zip([("IM1", b"x")]), "zip"),
        ("images.dat", _zip([("IM1", b"x")]), "zip"),
        ("study.tar.gz", gzip.compress(b"x" * 100), "gzip"),
    ],
)
def test_nested_archive_refuses_the_whole_archive(name: str, content: bytes, kind: str) -> None:
    # given an archive with a good slice and another archive inside (found by content, not name)
    data = _zip([("IM1", _ct_bytes()), (name, content)])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then the whole archive is refused as hostile
    refusal = _assert_archive_refused(
        results, RefusalKind.NESTED_ARCHIVE, f"the archive contains another archive ('{name}', {kind})"
    )
    assert refusal.hostile


def test_too_many_entries_refuses_the_whole_archive() -> None:
    # given limits of 3 entries and an archive of 5
    limits = ValidationLimits(max_zip_entries=3)
    data = _zip([(f"IM{index}", _ct_bytes()) for index in range(5)])

    # when it is uploaded
    results = list(expand_upload("upload.zip", data, limits=limits))

    # then it is refused, not as hostile
    refusal = _assert_archive_refused(
        results, RefusalKind.TOO_MANY_ENTRIES, "the archive holds 5 files; the limit is 3"
    )
    assert not refusal.hostile


def test_an_end_record_understating_the_entry_count_is_still_refused() -> None:
    # given an archive of 5 entries whose end record claims 1 (zipfile would build every record it finds)
    limits = ValidationLimits(max_zip_entries=3)
    data = bytearray(_zip([(f"IM{index}", _ct_bytes()) for index in range(5)]))
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 1, 1)

    # when it is uploaded
    results = list(expand_upload("upload.zip", bytes(data), limits=limits))

    # then it is refused for its entries before zipfile reads the directory
    _assert_archive_refused(
        results, RefusalKind.TOO_MANY_ENTRIES, "the archive holds more than 3 files; the limit is 3"
    )


def test_truncated_zip_is_refused_as_corrupt() -> None:
    # given an archive that lost its end (and so its table of contents)
    data = _zip([("IM1", _ct_bytes()), ("IM2", _ct_bytes())])[:-40]

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then it is refused as damaged
    _assert_archive_refused(results, RefusalKind.ZIP_CORRUPT, "the .zip archive is damaged and cannot be read")


def test_zip_entry_failing_its_crc_refuses_the_whole_archive() -> None:
    # given a stored (uncompressed) entry with one byte flipped in its pixel data
    raw = _ct_bytes()
    data = bytearray(_zip([("IM1", raw)], compression=zipfile.ZIP_STORED))
    data[len(data) // 2] ^= 0xFF

    # when it is uploaded
    results = list(expand_upload("upload.zip", bytes(data)))

    # then the archive is refused as damaged rather than a corrupted image being stored
    _assert_archive_refused(results, RefusalKind.ZIP_CORRUPT, "'IM1' fails its integrity check")


def test_password_protected_zip_is_refused() -> None:
    # given an archive whose entry is flagged as encrypted
    data = _patch_zip(_zip([("IM1", _ct_bytes())]), local_offset=6, central_offset=8, value=b"\x01")

    # when it is uploaded
    results = list(expand_upload("upload.zip", data))

    # then it is refused with a plain instruction
    _assert_archive_refused(results, RefusalKind.ZIP_CORRUPT, "'IM1' in the archive is password-protected")


# --- robustness -------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_damaged_files_are_always_answered_and_never_called_hostile() -> None:
    # given 300 copies of valid files with a few random bytes changed after the preamble (seeded, so reproducible)
    rng = random.Random(20260101)
    seeds = [_ct_bytes(), _testdata("JPEG2000.dcm"), _testdata("SC_rgb_rle_2frame.dcm"), _testdata("reportsi.dcm")]
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(128, len(data))] = rng.randrange(256)

        # when each is validated
        result = validate_instance("damaged.dcm", bytes(data))

        # then it is accepted or refused, never an exception, and damage never raises a security alert
        assert isinstance(result, AcceptedInstance | Refusal)
        assert not (isinstance(result, Refusal) and result.hostile), result


@pytest.mark.filterwarnings("ignore")
def test_damaged_archives_are_refused_whole_and_never_raise() -> None:
    # given 200 copies of a valid archive with one or two bytes changed in its compressed data
    original = _zip([(f"IM{index}", dataset_bytes(ds)) for index, ds in enumerate(_ct_datasets(slices=3))])
    data_end = original.index(b"PK\x01\x02")
    rng = random.Random(20260102)
    for _ in range(200):
        data = bytearray(original)
        for _ in range(rng.randint(1, 2)):
            data[rng.randrange(100, data_end)] = rng.randrange(256)

        # when each is uploaded
        results = list(expand_upload("upload.zip", bytes(data)))

        # then it is answered without an exception, and a refused archive yields nothing accepted
        refusals = [result for result in results if isinstance(result, Refusal) and result.file == "upload.zip"]
        assert not refusals or results == refusals
