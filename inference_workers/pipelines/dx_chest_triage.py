"""The dx_chest_triage pipeline: a radiograph to the model grid, nodule probability, GradCAM heatmap, one finding."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from monai.visualize import GradCAM
from scipy import ndimage

from inference_workers.pipelines import UnsuitableInput
from inference_workers.pipelines.ct_focal_lesion import Geometry, load_bundle_config, pick_device

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "models" / "dx_chest_triage"


@dataclass
class DxPrediction:
    """What one run produces: the image-level probability, the heatmap on the model grid, at most one finding."""

    probability: float
    heatmap: np.ndarray
    heatmap_spacing: tuple[float, float, float]
    findings: list[dict]
    scores: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    mask: None = None


class ResizeArea:
    """Resize (..., y, x) images to ``shape`` by area averaging, so detector noise and fine texture are not aliased."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = tuple(shape)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) == self.shape:
            return images
        batch = images.reshape(-1, 1, *images.shape[-2:])
        upsampled = tuple(max(n, t) for n, t in zip(batch.shape[-2:], self.shape, strict=True))
        if upsampled != tuple(batch.shape[-2:]):
            # A detector smaller than the model grid (never seen in practice) is first interpolated up.
            batch = F.interpolate(batch, size=upsampled, mode="bilinear", align_corners=False)
        batch = F.adaptive_avg_pool2d(batch, self.shape)
        return batch.reshape(*images.shape[:-2], *self.shape)


class ScalePercentiles:
    """Map each image's ``lower``..``upper`` percentiles to 0..1: DX processing curves and exposures differ per site."""

    def __init__(self, lower: float, upper: float) -> None:
        self.quantiles = torch.tensor([lower / 100.0, upper / 100.0])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(-1, images.shape[-2] * images.shape[-1])
        low, high = torch.quantile(flat, self.quantiles.to(flat.device), dim=1)
        scaled = (flat - low[:, None]) / (high - low).clamp_min(1.0)[:, None]
        return scaled.clamp(0.0, 1.0).reshape(images.shape)


class DxPreprocess:
    """Pixel values (int16, (1, y, x) or a batch of them) -> the model's input: area-resized, percentile-scaled."""

    def __init__(self, *, model_shape: tuple[int, int], percentiles: tuple[float, float]) -> None:
        self.resize = ResizeArea(model_shape)
        self.scale = ScalePercentiles(*percentiles)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale(self.resize(images.float()))


class HeatmapFinding:
    """Probability and heatmap -> one finding at the heatmap's peak blob when the probability reaches the threshold.

    The blob is the connected region above half the peak that holds the peak; its weighted centre is
    the finding's centre and its area gives a diameter, bounded to the sizes the model was trained on
    (a GradCAM blob is as coarse as the last block's cells, so small opacities read large).
    """

    def __init__(
        self,
        *,
        label: str,
        operating_threshold: float,
        critical_threshold: float,
        diameter_range_mm: tuple[float, float],
    ) -> None:
        self.label = label
        self.operating_threshold = operating_threshold
        self.critical_threshold = critical_threshold
        self.diameter_range_mm = diameter_range_mm

    def __call__(
        self,
        probability: float,
        heatmap: np.ndarray,
        geometry: Geometry,
        native_shape: tuple[int, int, int],
    ) -> list[dict]:
        if probability < self.operating_threshold or not np.any(heatmap > 0):
            return []
        plane = heatmap[0].astype(np.float32)
        peak_index = np.unravel_index(int(np.argmax(plane)), plane.shape)
        components, _ = ndimage.label(plane >= 0.5 * plane[peak_index])
        blob = components == components[peak_index]
        weights = plane * blob
        model_yx = np.array(ndimage.center_of_mass(weights))
        # Model-grid index -> input index (the grids share their outer edges: the align_corners=False convention).
        scale = np.array(native_shape[1:], dtype=float) / np.array(plane.shape, dtype=float)
        native_yx = (model_yx + 0.5) * scale - 0.5
        centre_index = np.array([0.0, *native_yx])
        pixel_mm = np.array(geometry.spacing[1:]) * scale
        area_mm2 = float(blob.sum() * np.prod(pixel_mm))
        diameter = float(np.clip(2.0 * np.sqrt(area_mm2 / np.pi), *self.diameter_range_mm))
        return [
            {
                "label": self.label,
                "confidence": round(float(probability), 4),
                "centre_mm": list(geometry.to_patient_mm(centre_index)),
                "centre_voxel": [round(float(v), 2) for v in centre_index],
                "diameter_mm": round(diameter, 1),
                "volume_ml": 0.0,
                "critical": bool(probability >= self.critical_threshold),
            }
        ]


class DxChestTriagePipeline:
    """Built once per worker process (network, GradCAM hooks and weights on the chosen device); called per image."""

    def __init__(self, *, bundle_dir: Path = BUNDLE_DIR, device: torch.device | None = None) -> None:
        self.metadata, parser = load_bundle_config(bundle_dir)
        self.name = self.metadata["name"]
        self.version = self.metadata["version"]
        self.required_outputs = tuple(self.metadata["output_urls"]["required"])
        self.optional_outputs = tuple(self.metadata["output_urls"]["optional"])
        self.device = device or pick_device()
        self.label = parser["label"]
        self.model_shape = tuple(parser["model_shape"])
        self.min_pixels = int(parser["min_pixels"])
        self.preprocess_images = DxPreprocess(model_shape=self.model_shape, percentiles=tuple(parser["percentiles"]))
        self.findings = HeatmapFinding(
            label=self.label,
            operating_threshold=parser["operating_threshold"],
            critical_threshold=parser["critical_threshold"],
            diameter_range_mm=tuple(parser["diameter_range_mm"]),
        )
        self.network = parser.get_parsed_content("network")
        weights = bundle_dir / parser["weights"]
        self.network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.network.to(self.device).eval()
        # GradCAM needs gradients, so this model runs in full precision even on CUDA (it is tiny anyway);
        # the identity postprocessing keeps the raw map (MONAI's default normaliser inverts it).
        self.gradcam = GradCAM(nn_module=self.network, target_layers=parser["gradcam_layer"], postprocessing=_identity)

    def preprocess(self, voxels: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(voxels)).to(self.device)
        return self.preprocess_images(image)

    def forward(self, image: torch.Tensor) -> tuple[float, np.ndarray]:
        """The probability and the heatmap (GradCAM scaled so its peak is the probability; zeros without evidence)."""
        batch = image[None]
        with torch.inference_mode():
            probability = float(torch.sigmoid(self.network(batch))[0, 0])
        # An input that asks for gradients keeps the full backward hook on the first block well defined.
        cam = self.gradcam(batch.clone().requires_grad_(True), class_idx=0).detach()[0].float()
        peak = float(cam.max())
        heatmap = cam * (probability / peak) if peak > 0 else torch.zeros_like(cam)
        self.network.zero_grad(set_to_none=True)
        return probability, heatmap.cpu().numpy()

    def __call__(self, voxels: np.ndarray, geometry: Geometry) -> DxPrediction:
        if voxels.ndim != 3 or voxels.shape[0] != 1:
            raise UnsuitableInput(f"a radiograph must be one frame (1, y, x), got shape {voxels.shape}")
        if min(voxels.shape[1:]) < self.min_pixels:
            raise UnsuitableInput(f"a radiograph needs at least {self.min_pixels} pixels a side, got {voxels.shape}")
        timings = {}
        started = time.perf_counter()
        image = self.preprocess(voxels)
        timings["preprocess"] = time.perf_counter() - started
        started = time.perf_counter()
        probability, heatmap = self.forward(image)
        timings["forward"] = time.perf_counter() - started
        started = time.perf_counter()
        findings = self.findings(probability, heatmap, geometry, tuple(voxels.shape))
        timings["postprocess"] = time.perf_counter() - started
        scale = np.array(voxels.shape, dtype=float) / np.array(heatmap.shape, dtype=float)
        return DxPrediction(
            probability=probability,
            heatmap=heatmap.astype(np.float16),
            heatmap_spacing=tuple(float(s * k) for s, k in zip(geometry.spacing, scale, strict=True)),
            findings=findings,
            scores={self.label: round(probability, 4)},
            timings=timings,
        )


def _identity(cam: torch.Tensor) -> torch.Tensor:
    return cam
