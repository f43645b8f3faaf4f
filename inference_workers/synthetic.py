"""Synthetic body-like CT phantoms with focal lesions, rendered to any grid, for training, evaluation and tests.

The phantom is analytic (shapes in millimetres), so a crop at any spacing can be rendered without
building the whole volume: training renders 10 cm cubes, evaluation whole small volumes, tests tiny ones.
Independent of ``saas.studies.synthetic`` on purpose (the workers import nothing from the Django side);
the tissue values follow the same conventions: air -1000, soft tissue 40, fat -100, bone 700 HU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 700.0
ORGAN_HU = {"liver": 60.0, "spleen": 50.0, "kidney": 30.0, "aorta": 45.0}


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in volume millimetres (z, y, x); ``rotation`` maps volume axes onto the ellipsoid's axes."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def contains(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        offsets = np.stack(np.broadcast_arrays(z - self.centre_mm[0], y - self.centre_mm[1], x - self.centre_mm[2]))
        local = np.tensordot(np.asarray(self.rotation), offsets, axes=1)
        semi = np.asarray(self.semi_axes_mm).reshape(3, *([1] * (local.ndim - 1)))
        return ((local / semi) ** 2).sum(axis=0) <= 1.0

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        reach = max(self.semi_axes_mm)
        centre = np.asarray(self.centre_mm)
        return centre - reach, centre + reach


@dataclass(frozen=True)
class Lesion:
    """A focal lesion: an ellipsoid ``delta_hu`` brighter than the tissue around it."""

    shape: Ellipsoid
    delta_hu: float

    @property
    def diameter_mm(self) -> float:
        """The longest diameter, the size a radiologist measures and the 10 mm critical rule uses."""
        return 2.0 * max(self.shape.semi_axes_mm)


@dataclass(frozen=True)
class Phantom:
    """A body: an elliptic cylinder along z with fat, ribs, a vertebra, organs and lesions."""

    extent_mm: tuple[float, float, float]
    body_centre_yx: tuple[float, float]
    body_semi_axes_yx: tuple[float, float]
    fat_mm: float
    organs: tuple[tuple[str, Ellipsoid], ...]
    lesions: tuple[Lesion, ...]
    noise_hu: float
    rib_phase: float = 0.0
    extra: dict = field(default_factory=dict)


def _random_rotation(rng: np.random.Generator) -> tuple[tuple[float, ...], ...]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return tuple(tuple(float(v) for v in row) for row in q)


def random_phantom(
    rng: np.random.Generator,
    *,
    extent_mm: tuple[float, float, float],
    lesion_count: int,
    diameter_range_mm: tuple[float, float] = (6.0, 30.0),
    delta_range_hu: tuple[float, float] = (40.0, 120.0),
    noise_range_hu: tuple[float, float] = (8.0, 20.0),
) -> Phantom:
    """Draw a body filling most of ``extent_mm`` (z, y, x) and ``lesion_count`` lesions inside its soft tissue."""
    _, extent_y, extent_x = extent_mm
    centre_yx = (extent_y / 2 + rng.uniform(-10, 10), extent_x / 2 + rng.uniform(-10, 10))
    semi_yx = (extent_y * rng.uniform(0.30, 0.42), extent_x * rng.uniform(0.36, 0.46))
    fat = rng.uniform(6.0, 20.0)
    cy, cx = centre_yx
    ay, ax = semi_yx
    z_mid = extent_mm[0] / 2
    organs = (
        ("liver", Ellipsoid((z_mid, cy - 0.1 * ay, cx - 0.45 * ax), (200.0, 0.45 * ay, 0.35 * ax))),
        ("spleen", Ellipsoid((z_mid, cy + 0.1 * ay, cx + 0.55 * ax), (200.0, 0.25 * ay, 0.15 * ax))),
        ("kidney", Ellipsoid((z_mid, cy + 0.45 * ay, cx - 0.3 * ax), (60.0, 0.18 * ay, 0.12 * ax))),
        ("kidney", Ellipsoid((z_mid, cy + 0.45 * ay, cx + 0.3 * ax), (60.0, 0.18 * ay, 0.12 * ax))),
        ("aorta", Ellipsoid((z_mid, cy + 0.35 * ay, cx + 0.05 * ax), (400.0, 11.0, 11.0))),
    )
    lesions: list[Lesion] = []
    attempts = 0
    while len(lesions) < lesion_count and attempts < 1000:
        attempts += 1
        diameter = rng.uniform(*diameter_range_mm)
        ratios = np.array([1.0, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0)])
        semi = tuple(float(v) for v in rng.permutation(ratios) * diameter / 2)
        # Inside the soft tissue, clear of the fat band, the ribs and the vertebra.
        angle = rng.uniform(0, 2 * np.pi)
        radius = np.sqrt(rng.uniform(0, 1)) * 0.68
        centre = (
            rng.uniform(diameter, extent_mm[0] - diameter) if extent_mm[0] > 2 * diameter else extent_mm[0] / 2,
            cy + radius * (ay - fat - 15) * np.sin(angle),
            cx + radius * (ax - fat - 15) * np.cos(angle),
        )
        if np.hypot(centre[1] - (cy + 0.7 * ay), centre[2] - cx) < 25 + diameter / 2:
            continue
        if any(
            np.linalg.norm(np.subtract(centre, other.shape.centre_mm)) < (diameter + other.diameter_mm) / 2 + 6
            for other in lesions
        ):
            continue
        lesions.append(Lesion(Ellipsoid(centre, semi, _random_rotation(rng)), float(rng.uniform(*delta_range_hu))))
    return Phantom(
        extent_mm=extent_mm,
        body_centre_yx=centre_yx,
        body_semi_axes_yx=semi_yx,
        fat_mm=fat,
        organs=organs,
        lesions=tuple(lesions),
        noise_hu=float(rng.uniform(*noise_range_hu)),
        rib_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def voxel_centres_mm(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], origin_mm: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable (z, y, x) coordinates of voxel centres: ``origin_mm`` is the centre of voxel (0, 0, 0)."""
    z = origin_mm[0] + np.arange(shape[0]) * spacing[0]
    y = origin_mm[1] + np.arange(shape[1]) * spacing[1]
    x = origin_mm[2] + np.arange(shape[2]) * spacing[2]
    return z[:, None, None], y[None, :, None], x[None, None, :]


def render(
    phantom: Phantom,
    *,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render HU (int16, scanner range, with noise when ``rng`` is given) and a lesion label map (0 = none)."""
    z, y, x = voxel_centres_mm(shape, spacing, origin_mm)
    cy, cx = phantom.body_centre_yx
    ay, ax = phantom.body_semi_axes_yx
    # The body tapers slowly along z so neighbouring slices are not identical.
    taper = 1.0 + 0.04 * np.sin(z / 60.0)
    r_body = np.sqrt(((y - cy) / (ay * taper)) ** 2 + ((x - cx) / (ax * taper)) ** 2)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[r_body <= 1.0] = FAT_HU
    fat_fraction = phantom.fat_mm / min(ay, ax)
    inner = r_body <= 1.0 - fat_fraction
    hu[inner] = SOFT_TISSUE_HU
    for name, organ in phantom.organs:
        hu[organ.contains(z, y, x) & inner] = ORGAN_HU[name]
    # Ribs: short arcs in a ring just inside the fat; a vertebra posteriorly.
    angle = np.arctan2(y - cy, x - cx) + phantom.rib_phase
    ribs = (np.abs(r_body - (1.0 - fat_fraction - 0.03)) < 0.025) & (np.sin(angle * 9) > 0.3)
    vertebra = ((y - (cy + 0.7 * ay)) ** 2 + (x - cx) ** 2) <= 16.0**2
    hu[(ribs | vertebra) & (r_body <= 1.0)] = BONE_HU
    labels = np.zeros(shape, dtype=np.uint8)
    for index, lesion in enumerate(phantom.lesions, start=1):
        inside = lesion.shape.contains(z, y, x)
        hu[inside] += lesion.delta_hu
        labels[inside] = index
    if rng is not None and phantom.noise_hu > 0:
        hu += rng.normal(0.0, phantom.noise_hu, size=shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), labels


def random_volume(
    rng: np.random.Generator,
    *,
    lesion_count: int,
    matrix: int = 192,
    in_plane_mm: tuple[float, float] = (1.2, 1.8),
    slice_mm: tuple[float, float] = (1.25, 5.0),
    z_extent_mm: tuple[float, float] = (80.0, 160.0),
    **phantom_kwargs,
) -> tuple[np.ndarray, tuple[float, float, float], Phantom, np.ndarray]:
    """A whole volume of varying size and slice spacing: (HU voxels, spacing, phantom, lesion labels)."""
    pixel = float(rng.uniform(*in_plane_mm))
    thickness = float(rng.choice([1.25, 2.0, 2.5, 3.0, 5.0])) if slice_mm == (1.25, 5.0) else rng.uniform(*slice_mm)
    slices = int(round(rng.uniform(*z_extent_mm) / thickness))
    spacing = (float(thickness), pixel, pixel)
    shape = (slices, matrix, matrix)
    phantom = random_phantom(
        rng,
        extent_mm=tuple(float(n * s) for n, s in zip(shape, spacing, strict=True)),
        lesion_count=lesion_count,
        **phantom_kwargs,
    )
    voxels, labels = render(phantom, shape=shape, spacing=spacing, rng=rng)
    return voxels, spacing, phantom, labels
