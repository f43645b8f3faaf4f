"""The ct_focal_lesion pipeline: resample to 2 mm, sliding-window 3D UNet, connected components to findings."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference
from scipy import ndimage

from inference_workers.pipelines import UnsuitableInput

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "models" / "ct_focal_lesion"


@dataclass(frozen=True)
class Geometry:
    """Where voxels sit in the patient: voxel (k, j, i) is at origin + i*sx*row + j*sy*column + k*sz*(row x column)."""

    spacing: tuple[float, float, float]
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_patient_mm(self, index_zyx: np.ndarray) -> tuple[float, float, float]:
        row = np.asarray(self.orientation[:3], dtype=float)
        column = np.asarray(self.orientation[3:], dtype=float)
        normal = np.cross(row, column)
        k, j, i = (float(v) for v in index_zyx)
        sz, sy, sx = self.spacing
        point = np.asarray(self.origin, dtype=float) + i * sx * row + j * sy * column + k * sz * normal
        return tuple(round(float(v), 2) for v in point)


@dataclass
class Prediction:
    """What one run produces: a mask on the input grid, the probability map on the model grid, findings."""

    mask: np.ndarray
    probability: np.ndarray
    probability_spacing: tuple[float, float, float]
    findings: list[dict]
    timings: dict[str, float] = field(default_factory=dict)
    # No image-level scores: a segmentation reports its findings' own confidences.
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def heatmap(self) -> np.ndarray:
        """What ``heatmap.npz`` holds: the probability map on the model grid (every pipeline names it so)."""
        return self.probability

    @property
    def heatmap_spacing(self) -> tuple[float, float, float]:
        return self.probability_spacing


def pick_device() -> torch.device:
    """CUDA when present, else CPU; chosen once when a worker starts."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class ResampleIsotropic:
    """Resample a (z, y, x) volume to ``spacing_mm`` voxels, averaging where it shrinks so noise is not aliased."""

    SLAB_SLICES = 16

    def __init__(self, spacing_mm: float) -> None:
        self.spacing_mm = spacing_mm

    def target_shape(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[int, int, int]:
        return tuple(max(1, int(round(n * s / self.spacing_mm))) for n, s in zip(shape, spacing, strict=True))

    def __call__(self, volume: torch.Tensor, spacing: tuple[float, float, float]) -> tuple[torch.Tensor, tuple]:
        shape = tuple(volume.shape[-3:])
        target = self.target_shape(shape, spacing)
        batch = volume.reshape(1, 1, *shape)
        upsampled = tuple(max(n, t) for n, t in zip(shape, target, strict=True))
        if upsampled != shape:
            batch = F.interpolate(batch, size=upsampled, mode="trilinear", align_corners=False)
        if upsampled != target:
            batch = F.adaptive_avg_pool3d(batch, target)
        return batch.reshape(*target), self.model_spacing(shape, spacing, target)

    @staticmethod
    def model_spacing(shape, spacing, target) -> tuple[float, float, float]:
        # The extent is kept exactly, so the new spacing differs slightly from the nominal one.
        return tuple(n * s / t for n, s, t in zip(shape, spacing, target, strict=True))

    def shrinks_only(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> bool:
        return all(t <= n for n, t in zip(shape, self.target_shape(shape, spacing), strict=True))

    def pool_in_slabs(self, voxels: np.ndarray, spacing: tuple[float, float, float]) -> tuple[torch.Tensor, tuple]:
        """The same box averages as ``__call__`` when every axis shrinks, computed a slab of slices at a time.

        A box average is separable, so each slab is pooled in-plane as soon as it is converted to float,
        then the stack along z: the full-size float copy of the input (4 bytes a voxel, 0.5 GB for a
        500-slice CT) never exists, and each slab stays in the CPU caches. Each slab is converted into one
        reused buffer laid out channels-last (the slab's slices as channels), which PyTorch's CPU pooling
        vectorises across; its default layout walks each window voxel by voxel. For a 500-slice CT on 2
        threads: 0.15-0.23 s before, 0.09-0.13 s now.
        """
        shape = tuple(voxels.shape)
        target = self.target_shape(shape, spacing)
        planes = torch.empty((shape[0], target[1], target[2]), dtype=torch.float32)
        slab = torch.empty((1, min(self.SLAB_SLICES, shape[0]), *shape[1:]), memory_format=torch.channels_last)
        for start in range(0, shape[0], self.SLAB_SLICES):
            source = torch.from_numpy(voxels[start : start + self.SLAB_SLICES])
            converted = slab[:, : len(source)]
            converted.copy_(source[None])
            planes[start : start + len(source)] = F.adaptive_avg_pool2d(converted, target[1:])[0]
        return average_along(planes, 0, target[0]), self.model_spacing(shape, spacing, target)


def average_along(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``tensor`` averaged down to ``size`` along ``dim`` in the windows ``adaptive_avg_pool`` uses.

    Output i averages inputs floor(i*n/size) to ceil((i+1)*n/size), so windows hold at most
    ceil(n/size) + 1 inputs: one weighted, gathered copy per window position. PyTorch's 3D adaptive pooling
    spends 0.08 s on the z-axis of a 500-slice CT (its in-plane windows are single voxels); this 0.02 s.
    """
    count = tensor.shape[dim]
    index = torch.arange(size)
    starts = index * count // size
    ends = -(-(index + 1) * count // size)
    lengths = ends - starts
    weight_shape = [1] * tensor.dim()
    weight_shape[dim] = size
    total = None
    for step in range(int(lengths.max())):
        inside = starts + step < ends
        rows = torch.minimum(starts + step, ends - 1)
        weights = (inside.to(tensor.dtype) / lengths.to(tensor.dtype)).reshape(weight_shape)
        term = tensor.index_select(dim, rows) * weights
        total = term if total is None else total.add_(term)
    return total


class ScaleHounsfield:
    """Window HU to [0, 1]: air and fat go to 0, bone saturates at 1, lesions fall inside."""

    def __init__(self, window: tuple[float, float]) -> None:
        self.low, self.high = window

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        return ((volume - self.low) / (self.high - self.low)).clamp(0.0, 1.0)


def _linear_axis(native_indices: np.ndarray, native_count: int, model_count: int):
    """Neighbouring model-grid indices and weights for native indices (the align_corners=False convention)."""
    coordinate = np.clip((native_indices + 0.5) * model_count / native_count - 0.5, 0, model_count - 1)
    lower = np.floor(coordinate).astype(int)
    upper = np.minimum(lower + 1, model_count - 1)
    return lower, upper, (coordinate - lower).astype(np.float32)


def upsample_box(probability: np.ndarray, native_shape: tuple[int, int, int], box: tuple[slice, ...]) -> np.ndarray:
    """Linearly interpolate the model-grid probability onto the native voxels of ``box`` only."""
    result = probability
    for axis, (native_slice, native_count) in enumerate(zip(box, native_shape, strict=True)):
        indices = np.arange(native_slice.start, native_slice.stop)
        lower, upper, weight = _linear_axis(indices, native_count, probability.shape[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        weight = weight.reshape(shape)
        result = np.take(result, lower, axis=axis) * (1 - weight) + np.take(result, upper, axis=axis) * weight
    return result


def _native_box(low_box: tuple[slice, ...], native_shape, model_shape) -> tuple[slice, ...]:
    box = []
    for low, n, t in zip(low_box, native_shape, model_shape, strict=True):
        start = max(0, int(np.floor((low.start - 1) * n / t)))
        stop = min(n, int(np.ceil((low.stop + 1) * n / t)))
        box.append(slice(start, stop))
    return tuple(box)


def _longest_diameter_mm(coordinates_mm: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Longest axis of the ellipsoid with the same second moments (a solid ellipsoid's variance is a^2 / 5)."""
    covariance = np.cov(coordinates_mm, rowvar=False) if len(coordinates_mm) > 1 else np.zeros((3, 3))
    # A voxel is a box, not a point: add its own variance so small lesions are not underestimated.
    covariance = covariance + np.diag(np.square(spacing) / 12.0)
    return float(2.0 * np.sqrt(5.0 * np.linalg.eigvalsh(covariance)[-1]))


class LesionFindings:
    """Connected components of the thresholded probability become findings, measured on the native grid."""

    def __init__(
        self,
        *,
        label: str,
        threshold: float,
        min_confidence: float,
        min_volume_ml: float,
        critical_diameter_mm: float,
    ) -> None:
        self.label = label
        self.threshold = threshold
        self.min_confidence = min_confidence
        self.min_volume_ml = min_volume_ml
        self.critical_diameter_mm = critical_diameter_mm

    def __call__(
        self, probability: np.ndarray, geometry: Geometry, native_shape: tuple[int, int, int]
    ) -> tuple[np.ndarray, list[dict]]:
        mask = np.zeros(native_shape, dtype=np.uint8)
        components, count = ndimage.label(probability > self.threshold, structure=np.ones((3, 3, 3)))
        findings: list[dict] = []
        voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
        for component_id, low_box in enumerate(ndimage.find_objects(components), start=1):
            if low_box is None:
                continue
            confidence = float(probability[low_box][components[low_box] == component_id].max())
            if confidence < self.min_confidence:
                continue
            box = _native_box(low_box, native_shape, probability.shape)
            native = upsample_box(probability, native_shape, box) > self.threshold
            # Keep the native voxels nearest to this component, not a neighbour's that shares the box.
            nearest = [
                np.clip(((np.arange(b.start, b.stop) + 0.5) * t / n).astype(int), 0, t - 1)
                for b, n, t in zip(box, native_shape, probability.shape, strict=True)
            ]
            owner = components[np.ix_(*nearest)]
            native &= (owner == 0) | (owner == component_id)
            voxel_count = int(native.sum())
            volume_ml = voxel_count * voxel_ml
            if voxel_count == 0 or volume_ml < self.min_volume_ml:
                continue
            mask[box][native] = 1
            index = np.argwhere(native) + np.array([b.start for b in box])
            coordinates_mm = index * np.asarray(geometry.spacing)
            centre_index = index.mean(axis=0)
            diameter = _longest_diameter_mm(coordinates_mm, geometry.spacing)
            findings.append(
                {
                    "label": self.label,
                    "confidence": round(confidence, 4),
                    "centre_mm": list(geometry.to_patient_mm(centre_index)),
                    "centre_voxel": [round(float(v), 2) for v in centre_index],
                    "diameter_mm": round(diameter, 1),
                    "volume_ml": round(volume_ml, 3),
                    "critical": diameter >= self.critical_diameter_mm,
                }
            )
        findings.sort(key=lambda finding: (-finding["diameter_mm"], -finding["confidence"]))
        return mask, findings


def load_bundle_config(bundle_dir: Path = BUNDLE_DIR) -> tuple[dict, ConfigParser]:
    metadata = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    return metadata, parser


class CtFocalLesionPipeline:
    """Built once per worker process (network and weights on the chosen device); called once per volume."""

    def __init__(self, *, bundle_dir: Path = BUNDLE_DIR, device: torch.device | None = None) -> None:
        self.metadata, parser = load_bundle_config(bundle_dir)
        self.name = self.metadata["name"]
        self.version = self.metadata["version"]
        # Which output URLs a job must (and may) carry: the Django side reads the same keys.
        self.required_outputs = tuple(self.metadata["output_urls"]["required"])
        self.optional_outputs = tuple(self.metadata["output_urls"]["optional"])
        self.device = device or pick_device()
        self.amp = self.device.type == "cuda"
        self.resample = ResampleIsotropic(parser["target_spacing_mm"])
        self.scale = ScaleHounsfield(tuple(parser["hu_window"]))
        self.roi_size = tuple(parser["roi_size"])
        self.overlap = parser["overlap"]
        self.sw_batch_size = parser["sw_batch_size_cuda"] if self.amp else parser["sw_batch_size_cpu"]
        self.findings = LesionFindings(
            label=parser["label"],
            threshold=parser["probability_threshold"],
            min_confidence=parser["min_confidence"],
            min_volume_ml=parser["min_volume_ml"],
            critical_diameter_mm=parser["critical_diameter_mm"],
        )
        self.network = parser.get_parsed_content("network")
        weights = bundle_dir / parser["weights"]
        self.network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.network.to(self.device).eval()

    def preprocess(self, voxels: np.ndarray, spacing: tuple[float, float, float]) -> tuple[torch.Tensor, tuple]:
        spacing = tuple(float(s) for s in spacing)
        if self.device.type == "cpu" and self.resample.shrinks_only(voxels.shape, spacing):
            resampled, model_spacing = self.resample.pool_in_slabs(voxels, spacing)
        else:
            volume = torch.from_numpy(np.ascontiguousarray(voxels)).to(self.device, dtype=torch.float32)
            resampled, model_spacing = self.resample(volume, spacing)
        return self.scale(resampled), model_spacing

    @torch.inference_mode()
    def forward(self, image: torch.Tensor) -> np.ndarray:
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = sliding_window_inference(
                image[None, None],
                roi_size=self.roi_size,
                sw_batch_size=self.sw_batch_size,
                predictor=self.network,
                overlap=self.overlap,
                mode="gaussian",
                padding_mode="replicate",
            )
        return torch.sigmoid(logits.float())[0, 0].cpu().numpy()

    def __call__(self, voxels: np.ndarray, geometry: Geometry) -> Prediction:
        if voxels.ndim != 3:
            raise UnsuitableInput(f"voxels must be 3D (z, y, x), got shape {voxels.shape}")
        timings = {}
        started = time.perf_counter()
        image, model_spacing = self.preprocess(voxels, geometry.spacing)
        timings["preprocess"] = time.perf_counter() - started
        started = time.perf_counter()
        probability = self.forward(image)
        timings["forward"] = time.perf_counter() - started
        started = time.perf_counter()
        mask, findings = self.findings(probability, geometry, tuple(voxels.shape))
        timings["postprocess"] = time.perf_counter() - started
        return Prediction(
            mask=mask,
            # Through torch: the map is mostly near zero, and NumPy converts values that underflow float16
            # slowly (0.9 s for the 10 M voxels of a 500-slice CT, against 10 ms; the results are identical).
            probability=torch.from_numpy(probability).half().numpy(),
            probability_spacing=model_spacing,
            findings=findings,
            timings=timings,
        )
