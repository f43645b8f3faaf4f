"""The viewer decodes what clinics send: compressed transfer syntaxes (pydicom's bundled test files) and CR/DX/MR.

Each file becomes a series of one study in a live clinic's Orthanc; Cornerstone's loader asks for frames in
the stored transfer syntax (`transfer-syntax=*`), so the browser's codecs (JPEG baseline, JPEG-LS,
JPEG 2000, RLE) do the decoding. Lossless encodings of MR_small must draw exactly what the uncompressed
MR_small draws; the lossy JPEG colour bars must come out red, green, blue, top to bottom.
"""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from saas.studies.synthetic import cr_image, dataset_bytes, dx_image
from tests.e2e.viewing import open_as_radiologist, screenshot, store_and_index

pytestmark = [pytest.mark.e2e, pytest.mark.orthanc]

PATIENT_ID = "E2E-CODEC-1"
REFERENCE = "MR_small.dcm"
# Bundled with pydicom (no download): lossless re-encodings of MR_small, and a YBR JPEG baseline colour image.
LOSSLESS_MR = {
    "JPEG-LS lossless": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG 2000 lossless": "MR_small_jp2klossless.dcm",
    "RLE lossless": "MR_small_RLE.dcm",
}
JPEG_BASELINE = "SC_rgb_jpeg_dcmtk.dcm"

# Canvas pixels on a 7 x 7 grid over the middle of the main viewport, as [r, g, b] triples.
GRID = """() => {
    const canvas = document.querySelector('[data-viewport=main] canvas');
    const context = canvas.getContext('2d');
    const points = [];
    for (let j = 0; j < 7; j++) for (let i = 0; i < 7; i++) {
        const x = Math.floor(canvas.width * (0.35 + 0.05 * i)), y = Math.floor(canvas.height * (0.35 + 0.05 * j));
        points.push(Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3)));
    }
    return points;
}"""
# Runs of one colour down the centre column of the canvas: [[r, g, b], length] top to bottom.
CENTRE_COLUMN_RUNS = """() => {
    const canvas = document.querySelector('[data-viewport=main] canvas');
    const data = canvas.getContext('2d').getImageData(Math.floor(canvas.width / 2), 0, 1, canvas.height).data;
    const runs = [];
    for (let y = 0; y < canvas.height; y++) {
        const pixel = [data[4 * y], data[4 * y + 1], data[4 * y + 2]];
        const last = runs[runs.length - 1];
        if (last && pixel.every((value, k) => Math.abs(value - last[0][k]) <= 24)) last[1] += 1;
        else runs.push([pixel, 1]);
    }
    return runs;
}"""


def _into_study(dataset: pydicom.Dataset, *, study_uid: str, series_number: int, description: str) -> bytes:
    """The file as a series of the test study: new identifiers, the pixel data (and its encoding) untouched."""
    dataset.PatientID = PATIENT_ID
    dataset.PatientName = "Synthetic^Codecs"
    dataset.AccessionNumber = "ACC-CODEC"
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.SeriesNumber = series_number
    dataset.SeriesDescription = description
    dataset.InstanceNumber = 1
    return dataset_bytes(dataset)


def _clinic_with_codec_study(live_platform):
    tenant, token = live_platform.tenant_with_token(prefix="e2e-codec")
    study_uid = generate_uid()
    files = {"Uncompressed": REFERENCE, **LOSSLESS_MR, "JPEG baseline": JPEG_BASELINE}
    parts = []
    for number, (description, name) in enumerate(files.items(), start=1):
        path = get_testdata_file(name, download=False)
        assert path is not None, f"{name} is bundled with pydicom"
        dataset = pydicom.dcmread(path)
        parts.append(_into_study(dataset, study_uid=study_uid, series_number=number, description=description))
    common = {"patient_id": PATIENT_ID, "patient_name": "Synthetic^Codecs", "accession_number": "ACC-CODEC"}
    radiographs = [
        cr_image(**common, study_instance_uid=study_uid, series_number=20, series_description="CR chest"),
        dx_image(**common, study_instance_uid=study_uid, series_number=21, series_description="DX chest"),
    ]
    parts += [dataset_bytes(dataset) for dataset in radiographs]
    store_and_index(live_platform, tenant, token, parts)
    return tenant, study_uid


def _show(page, description: str):
    page.locator(".series-list button", has_text=description).click()
    page.wait_for_function(
        f"document.querySelector('[data-overlay=series]').textContent.includes({description!r})", timeout=30_000
    )
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=30_000)
    # The frame is decoded in a web worker; the grid is read once the canvas stops changing.
    previous = None
    for _ in range(40):
        grid = page.evaluate(GRID)
        if grid == previous:
            return grid
        previous = grid
        page.wait_for_timeout(150)
    return previous


def test_compressed_transfer_syntaxes_and_radiographs_render(page, page_errors, live_platform):
    # given one study holding MR_small uncompressed and in three lossless encodings, a JPEG baseline colour
    # image, a CR and a DX
    tenant, study_uid = _clinic_with_codec_study(live_platform)
    open_as_radiologist(page, live_platform, tenant, study_uid)
    page.wait_for_selector("[data-viewer][data-viewer-state=ready]", timeout=60_000)
    assert page.locator(".series-list button").count() == 7

    # when the uncompressed MR is shown, it is a real image (not one flat grey)
    reference = _show(page, "Uncompressed")
    assert len({tuple(pixel) for pixel in reference}) > 5
    assert all(r == g == b for r, g, b in reference)
    # then every lossless encoding draws the very same pixels
    for description in LOSSLESS_MR:
        decoded = _show(page, description)
        pairs = zip(decoded, reference, strict=True)
        differences = [abs(a - b) for pixel, expected in pairs for a, b in zip(pixel, expected, strict=True)]
        assert max(differences) <= 1, f"{description} renders differently from the uncompressed MR"
        screenshot(page, f"viewer-codec-{description.lower().replace(' ', '-')}.png")

    # when the JPEG baseline (YBR_FULL) colour bars are shown, they come out red, green, blue from the top
    _show(page, "JPEG baseline")
    runs = page.evaluate(CENTRE_COLUMN_RUNS)
    bars = [colour for colour, length in runs if length >= 20 and max(colour) >= 200]
    dominant = ["rgb"[colour.index(max(colour))] for colour in bars if max(colour) - min(colour) >= 150]
    assert dominant[:3] == ["r", "g", "b"], runs
    screenshot(page, "viewer-codec-jpeg-baseline.png")

    # and a CR and a DX render as non-blank grey images
    for description in ("CR chest", "DX chest"):
        grid = _show(page, description)
        assert len({tuple(pixel) for pixel in grid}) > 3, f"{description} is blank"
        assert all(r == g == b for r, g, b in grid)
    screenshot(page, "viewer-codec-dx.png")
    assert page_errors == []
