"""The viewer's AI layer in a real browser: a highdicom SEG drawn as a labelmap over its CT, and a findings list.

Also SEGs as other software writes them: compressed (JPEG 2000, RLE, JPEG-LS lossless; PS3.5 A.4), decoded by
the viewer with Cornerstone's codecs, and over an enhanced multi-frame CT, drawn on the frames they name.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis, Finding
from saas.studies.models import Study
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tests.conftest import committed
from tests.e2e.viewing import canvas_pixel, open_as_radiologist, screenshot, store_and_index

pytestmark = [pytest.mark.e2e, pytest.mark.orthanc]

SLICES = 12
SIZE = 64
# The lesion's centre slice in acquisition order (z grows with InstanceNumber); the viewer shows superior
# (highest z) first, so this is image SLICES - LESION_SLICE of the stack.
LESION_SLICE = 8
LESION_RADIUS_PX = 8


def _sphere_mask() -> np.ndarray:
    z, y, x = np.mgrid[0:SLICES, 0:SIZE, 0:SIZE]
    # 2.5 mm slices and 0.7 mm pixels: a ~11 mm ball spans the centre slice and one either side.
    distance = np.sqrt(((z - LESION_SLICE) * 2.5 / 0.7) ** 2 + (y - SIZE / 2) ** 2 + (x - SIZE / 2) ** 2)
    return distance <= LESION_RADIUS_PX


def _ct(*, patient_id: str, patient_name: str):
    """The small noiseless CT the SEGs lie over (SLICES slices of SIZE x SIZE, 2.5 mm apart)."""
    return ct_series(
        patient_id=patient_id,
        patient_name=patient_name,
        accession_number=f"ACC-{patient_id}",
        series_description="Axial 2.5mm",
        slices=SLICES,
        rows=SIZE,
        columns=SIZE,
        noise_hu=0,
    )


def _segmentation(
    datasets,
    segmentation_type: hd.seg.SegmentationTypeValues = hd.seg.SegmentationTypeValues.BINARY,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    mask: np.ndarray | None = None,
) -> hd.seg.Segmentation:
    """A SEG of `mask` (frames of the source images in their order; the ball around slice 8 by default)."""
    mask = _sphere_mask() if mask is None else mask
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ct_focal_lesion", family=codes.cid7162.ArtificialIntelligence, version="e2e"
    )
    return hd.seg.Segmentation(
        source_images=datasets,
        # A fractional SEG gets probabilities: 1.0 inside the ball, stored as MaximumFractionalValue (255).
        pixel_array=mask if segmentation_type == hd.seg.SegmentationTypeValues.BINARY else mask.astype(np.float32),
        segmentation_type=segmentation_type,
        transfer_syntax_uid=transfer_syntax_uid,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="focal lesion 1",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=hd.sr.CodedConcept(value="52988006", scheme_designator="SCT", meaning="Lesion"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        ],
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="ReadRoom",
        manufacturer_model_name="ct_focal_lesion",
        software_versions="e2e",
        device_serial_number="E2E",
        series_description="AI lesion segmentation",
    )


def _clinic_with_ct_seg_and_finding(live_platform, **segmentation):
    tenant, token = live_platform.tenant_with_token(prefix="e2e-seg")
    datasets = _ct(patient_id="E2E-SEG-1", patient_name="Synthetic^Overlay")
    seg = _segmentation(datasets, **segmentation)
    store_and_index(live_platform, tenant, token, [dataset_bytes(dataset) for dataset in datasets] + [seg_bytes(seg)])
    lesion = datasets[LESION_SLICE]
    _record_finding(tenant, lesion=lesion, instance=lesion, seg=seg)
    return tenant, lesion.StudyInstanceUID


def _record_finding(tenant, *, lesion, instance, seg) -> None:
    """A successful ct_focal_lesion analysis of the study with one finding, as the AI pipeline records it: centred
    on the `lesion` slice, pointing at `instance` (that slice, or a multi-frame image holding it), outlined by
    segment 1 of `seg`."""
    study_uid, series_uid, sop_uid = lesion.StudyInstanceUID, instance.SeriesInstanceUID, instance.SOPInstanceUID
    centre_mm = [float(value) for value in lesion.ImagePositionPatient]
    seg_sop_uid = seg.SOPInstanceUID

    def record():
        with tenant_context(tenant_ids=[tenant.pk]):
            study = Study.objects.get(tenant=tenant, study_instance_uid=study_uid)
            analysis = Analysis.objects.create(
                tenant=tenant,
                study=study,
                study_version=study.version,
                model_name="ct_focal_lesion",
                model_version="e2e",
                pool="cpu",
                idempotency_key=f"{study.study_instance_uid}|{study.version}|ct_focal_lesion|e2e",
                series_instance_uid=series_uid,
                status=AnalysisStatus.SUCCEEDED,
                seg_sop_instance_uid=seg_sop_uid,
            )
            Finding.objects.create(
                tenant=tenant,
                analysis=analysis,
                study=study,
                label="focal_lesion",
                confidence=0.87,
                centre_mm=centre_mm,
                diameter_mm=11.2,
                volume_ml=0.7,
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
                segment_number=1,
            )

    committed(record)


def seg_bytes(seg: hd.seg.Segmentation) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _wait_centre(page, predicate: str) -> None:
    """Waits until the main canvas' centre pixel [r, g, b] satisfies a JavaScript predicate over r, g, b."""
    page.wait_for_function(
        f"""() => {{
            const canvas = document.querySelector('[data-viewport=main] canvas');
            const [r, g, b] = canvas.getContext('2d')
                .getImageData(Math.floor(canvas.width / 2), Math.floor(canvas.height / 2), 1, 1).data;
            return {predicate};
        }}""",
        timeout=15_000,
    )


def test_a_radiologist_sees_the_ai_segmentation_and_jumps_to_the_finding(page, page_errors, live_platform):
    # given a CT with an AI SEG (a ball around slice 8) and a recorded finding pointing at that slice
    tenant, study_uid = _clinic_with_ct_seg_and_finding(live_platform)
    # when the radiologist opens the study
    open_as_radiologist(page, live_platform, tenant, study_uid)
    page.wait_for_selector("[data-viewer][data-viewer-state=ready]", timeout=60_000)
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    # then the SEG is not offered as a series to scroll, but as an overlay, and the finding is listed
    assert page.locator(".series-list button").count() == 1
    finding = page.locator("[data-finding-id]")
    finding.wait_for()
    assert "Focal lesion" in finding.inner_text() and "87% confidence" in finding.inner_text()
    assert "11.2 mm" in finding.inner_text()
    toggle = page.locator("[data-seg-toggle]")
    toggle.wait_for()
    assert toggle.is_checked()
    # and the viewer draws with WebGL, the renderer that draws overlays (even where it would not otherwise)
    assert page.locator("[data-viewer]").get_attribute("data-render") == "gpu"
    # and the first image (far from the lesion) shows only grey
    assert page.locator("[data-overlay=slice]").inner_text() == f"Im 1/{SLICES}"
    r, g, b = canvas_pixel(page)
    assert r == g == b

    # when the finding is clicked, the viewer jumps to its slice and the mask is drawn in colour there
    finding.click()
    expected = f"Im {SLICES - LESION_SLICE}/{SLICES}"
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === '{expected}'")
    _wait_centre(page, "r > g + 40 && r > b + 40")
    outside = canvas_pixel(page, fx=0.5, fy=0.2)
    assert outside[0] == outside[1] == outside[2], "outside the mask the CT stays grey"
    screenshot(page, "viewer-seg-overlay.png")

    # when the overlay is toggled off, the same pixel is grey again; the S key brings it back
    toggle.uncheck()
    _wait_centre(page, "r === g && g === b")
    screenshot(page, "viewer-seg-hidden.png")
    page.locator("[data-viewport=main]").focus()
    page.keyboard.press("s")
    _wait_centre(page, "r > g + 40")
    assert toggle.is_checked()

    # when the opacity is raised and the segment's colour set to green, the mask turns green
    blended = canvas_pixel(page)
    page.locator("[data-seg-opacity]").fill("1")
    _wait_centre(page, f"r > {blended[0]}")
    page.locator("[data-segment-color='1']").fill("#00ff00")
    _wait_centre(page, "g > r + 100 && g > b + 100")
    screenshot(page, "viewer-seg-green.png")
    assert page.locator("[data-viewer]").get_attribute("data-viewer-state") == "ready"
    assert page_errors == []


@pytest.mark.parametrize(
    ("segmentation_type", "transfer_syntax_uid"),
    [
        (hd.seg.SegmentationTypeValues.BINARY, JPEG2000Lossless),
        (hd.seg.SegmentationTypeValues.FRACTIONAL, RLELossless),
        (hd.seg.SegmentationTypeValues.FRACTIONAL, JPEGLSLossless),
    ],
    ids=["binary-jpeg2000", "fractional-rle", "fractional-jpegls"],
)
def test_a_compressed_segmentation_is_drawn_like_a_native_one(
    page, page_errors, live_platform, segmentation_type, transfer_syntax_uid
):
    # given a CT whose SEG (the same ball around slice 8) is stored compressed
    tenant, study_uid = _clinic_with_ct_seg_and_finding(
        live_platform, segmentation_type=segmentation_type, transfer_syntax_uid=transfer_syntax_uid
    )
    # when the radiologist opens the study and jumps to the finding
    open_as_radiologist(page, live_platform, tenant, study_uid)
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    page.locator("[data-seg-toggle]").wait_for()
    page.locator("[data-finding-id]").click()
    expected = f"Im {SLICES - LESION_SLICE}/{SLICES}"
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === '{expected}'")
    # then the decoded mask is drawn there in colour, and only inside the ball
    _wait_centre(page, "r > g + 40 && r > b + 40")
    outside = canvas_pixel(page, fx=0.5, fy=0.2)
    assert outside[0] == outside[1] == outside[2], "outside the mask the CT stays grey"
    assert page.locator(".seg-error").count() == 0
    screenshot(page, f"viewer-seg-{transfer_syntax_uid.keyword}.png")
    assert page_errors == []


def test_over_a_multiframe_ct_a_segmentation_and_a_finding_land_on_their_frames(page, page_errors, live_platform):
    # given the CT as one enhanced multi-frame instance (highdicom's legacy conversion), and a SEG over its frames
    tenant, token = live_platform.tenant_with_token(prefix="e2e-segmf")
    datasets = _ct(patient_id="E2E-SEG-MF", patient_name="Synthetic^Multiframe")
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    # The ball of the single-frame test, frame by frame in the enhanced image's own frame order.
    slice_of_z = {float(dataset.ImagePositionPatient[2]): index for index, dataset in enumerate(datasets)}
    frame_z = [
        float(group.PlanePositionSequence[0].ImagePositionPatient[2])
        for group in enhanced.PerFrameFunctionalGroupsSequence
    ]
    mask = _sphere_mask()[[slice_of_z[z] for z in frame_z]]
    lesion = datasets[LESION_SLICE]
    lesion_frame = frame_z.index(float(lesion.ImagePositionPatient[2])) + 1
    assert lesion_frame > 3, "the lesion's frame must lie away from the first one for this test to tell them apart"
    seg = _segmentation([enhanced], mask=mask)
    store_and_index(live_platform, tenant, token, [dataset_bytes(enhanced), seg_bytes(seg)])
    # and a finding on the enhanced instance, at the ball's centre (which frame is for the viewer to find)
    _record_finding(tenant, lesion=lesion, instance=enhanced, seg=seg)
    # when a radiologist opens the study and clicks the finding
    open_as_radiologist(page, live_platform, tenant, datasets[0].StudyInstanceUID)
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    page.locator("[data-seg-toggle]").wait_for()
    assert page.locator("[data-overlay=slice]").inner_text() == f"Im 1/{SLICES}"
    # (the series panel counts the frames as images, not the one instance)
    assert page.locator(".series-list button").inner_text().endswith(f"{SLICES} images")
    page.locator("[data-finding-id]").click()
    page.wait_for_function(
        f"document.querySelector('[data-overlay=slice]').textContent === 'Im {lesion_frame}/{SLICES}'"
    )
    # then the viewer shows the lesion's frame with the mask in colour; and the first frame, far from it, without
    _wait_centre(page, "r > g + 40 && r > b + 40")
    screenshot(page, "viewer-seg-multiframe.png")
    page.locator("[data-viewport=main]").focus()
    page.keyboard.press("Home")
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === 'Im 1/{SLICES}'")
    _wait_centre(page, "r === g && g === b")
    assert page.locator(".seg-error").count() == 0
    assert page_errors == []


def test_drawing_without_webgl_the_viewer_says_why_the_segmentation_is_not_shown(page, page_errors, live_platform):
    # given a CT with an AI SEG, opened with Cornerstone's CPU renderer (as in a browser without WebGL 2),
    # which has no labelmap layer
    tenant, study_uid = _clinic_with_ct_seg_and_finding(live_platform)
    open_as_radiologist(page, live_platform, tenant, study_uid, query="?render=cpu")
    page.wait_for_selector("[data-viewer][data-series-loaded=true]", timeout=60_000)
    assert page.locator("[data-viewer]").get_attribute("data-render") == "cpu"
    # then the overlays panel says why there is no overlay, and offers no toggle that would do nothing
    note = page.locator(".seg-error")
    note.wait_for()
    assert "not drawn" in note.inner_text() and "render=cpu" in note.inner_text()
    assert page.locator("[data-seg-toggle]").count() == 0
    # and the images are read as usual: the finding still jumps to its slice, shown in grey
    page.locator("[data-finding-id]").click()
    expected = f"Im {SLICES - LESION_SLICE}/{SLICES}"
    page.wait_for_function(f"document.querySelector('[data-overlay=slice]').textContent === '{expected}'")
    _wait_centre(page, "r === g && g === b && r > 0")
    screenshot(page, "viewer-seg-without-webgl.png")
    assert page_errors == []
