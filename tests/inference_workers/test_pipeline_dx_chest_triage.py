"""The dx_chest_triage pipeline pieces: resizing, scaling, the finding from a heatmap, and the whole model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_workers.pipelines import UnsuitableInput
from inference_workers.pipelines.ct_focal_lesion import Geometry
from inference_workers.pipelines.dx_chest_triage import HeatmapFinding, ResizeArea, ScalePercentiles
from tests.inference_workers.conftest import chest_radiograph


def test_resize_area_averages_blocks_and_keeps_the_mean():
    image = torch.arange(8 * 12, dtype=torch.float32).reshape(1, 8, 12)

    resized = ResizeArea((4, 6))(image)

    assert tuple(resized.shape) == (1, 4, 6)
    assert resized[0, 0, 0] == image[0, :2, :2].mean()
    assert torch.isclose(resized.mean(), image.mean())


def test_scale_percentiles_undoes_each_images_gain_and_offset():
    # Given the same image twice, once through another processing curve's gain and offset
    base = torch.rand(1, 64, 64) * 1000
    batch = torch.stack([base, 300 + 2.5 * base])

    scaled = ScalePercentiles(1.0, 99.0)(batch)

    assert torch.allclose(scaled[0], scaled[1], atol=1e-4)
    assert scaled.min() == 0.0 and scaled.max() == 1.0


def finder(**overrides) -> HeatmapFinding:
    settings = {
        "label": "nodule_opacity",
        "operating_threshold": 0.5,
        "critical_threshold": 0.9,
        "diameter_range_mm": (8.0, 30.0),
    } | overrides
    return HeatmapFinding(**settings)


def blob_heatmap(centre_yx: tuple[float, float], radius: float, shape=(64, 64)) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    distance = np.hypot(y - centre_yx[0], x - centre_yx[1])
    return np.clip(1.0 - distance / (2 * radius), 0.0, 1.0)[None].astype(np.float32)


def test_finding_sits_at_the_heatmap_peak_in_input_and_patient_coordinates():
    # Given a heatmap on a 64 x 64 grid over a 256 x 256 input at 0.5 mm, peaking at model (20, 40)
    heatmap = blob_heatmap((20.0, 40.0), radius=4.0) * 0.95
    geometry = Geometry(
        spacing=(1.0, 0.5, 0.5), orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0), origin=(-64.0, 0.0, 100.0)
    )

    (finding,) = finder()(0.95, heatmap, geometry, (1, 256, 256))

    # Then the centre is model (20, 40) scaled by 4 on the align_corners=False grid: input (81.5, 161.5)
    assert np.allclose(finding["centre_voxel"], (0.0, 81.5, 161.5), atol=0.05)
    # Rows run along patient +x, columns along patient -z (a PA chest): x = -64 + 161.5 * 0.5, z = 100 - 81.5 * 0.5.
    assert np.allclose(finding["centre_mm"], (-64.0 + 80.75, 0.0, 100.0 - 40.75), atol=0.05)
    # The blob above half its peak is a disc of radius 4 model pixels = 8 mm: 16 mm across
    assert abs(finding["diameter_mm"] - 16.0) < 1.5
    assert finding["label"] == "nodule_opacity" and finding["confidence"] == 0.95
    assert finding["critical"] is True and finding["volume_ml"] == 0.0


def test_finding_needs_the_operating_threshold_and_critical_its_own():
    heatmap = blob_heatmap((30.0, 30.0), radius=1.0)
    geometry = Geometry(spacing=(1.0, 0.2, 0.2))

    assert finder()(0.49, heatmap, geometry, (1, 640, 640)) == []
    (finding,) = finder()(0.7, heatmap, geometry, (1, 640, 640))
    assert finding["critical"] is False
    # A blob of a few model pixels is still reported at the smallest size the model knows.
    assert finding["diameter_mm"] == 8.0


def test_no_finding_from_an_empty_heatmap_even_with_a_high_probability():
    assert finder()(0.8, np.zeros((1, 64, 64), dtype=np.float32), Geometry(spacing=(1.0, 0.2, 0.2)), (1, 64, 64)) == []


def test_pipeline_refuses_more_than_one_frame(dx_pipeline):
    with pytest.raises(UnsuitableInput, match="one frame"):
        dx_pipeline(np.zeros((2, 512, 512), dtype=np.int16), Geometry(spacing=(1.0, 0.2, 0.2)))


def test_pipeline_finds_a_20_mm_nodule_and_points_at_it(dx_pipeline):
    radiograph = chest_radiograph(nodule_diameter_mm=20.0)

    prediction = dx_pipeline(radiograph.voxels, Geometry(spacing=radiograph.spacing))

    (finding,) = prediction.findings
    assert finding["label"] == "nodule_opacity" and finding["confidence"] == round(prediction.probability, 4)
    assert prediction.scores == {"nodule_opacity": round(prediction.probability, 4)}
    # The heatmap is on the model grid, covers the input, and peaks (at the probability) on the nodule
    assert prediction.heatmap.shape == (1, 256, 256) and prediction.heatmap.dtype == np.float16
    assert np.allclose(
        np.asarray(prediction.heatmap_spacing[1:]) * 256,
        np.asarray(radiograph.spacing[1:]) * radiograph.voxels.shape[1:],
    )
    assert abs(float(prediction.heatmap.max()) - prediction.probability) < 1e-2
    peak = np.array(np.unravel_index(int(np.argmax(prediction.heatmap[0])), (256, 256)), dtype=float)
    peak_mm = (peak + 0.5) * np.asarray(prediction.heatmap_spacing[1:])
    assert np.linalg.norm(peak_mm - np.asarray(radiograph.nodule.centre_mm)) < 20.0
    centre_error = np.asarray(finding["centre_voxel"][1:]) - radiograph.nodule_index()
    assert np.linalg.norm(centre_error * np.asarray(radiograph.spacing[1:])) < 15.0
    assert 8.0 <= finding["diameter_mm"] <= 30.0
    assert set(prediction.timings) == {"preprocess", "forward", "postprocess"}
    # GradCAM included, one image is well under the 2 s the issue allows on a CPU.
    assert sum(prediction.timings.values()) < 2.0


def test_pipeline_passes_the_same_chest_without_the_nodule(dx_pipeline):
    with_nodule = chest_radiograph(nodule_diameter_mm=20.0)
    without = chest_radiograph(nodule_diameter_mm=None)

    negative = dx_pipeline(without.voxels, Geometry(spacing=without.spacing))
    positive = dx_pipeline(with_nodule.voxels, Geometry(spacing=with_nodule.spacing))

    assert negative.findings == []
    assert negative.probability < dx_pipeline.findings.operating_threshold < positive.probability
    assert negative.scores == {"nodule_opacity": round(negative.probability, 4)}
    assert negative.heatmap.shape == (1, 256, 256) and float(negative.heatmap.max()) <= negative.probability + 1e-2
