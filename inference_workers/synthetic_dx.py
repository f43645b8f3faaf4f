"""Synthetic PA chest radiographs with or without a nodule-like opacity, rendered to any grid, for training and tests.

Like ``synthetic.py`` the anatomy is analytic (shapes in detector millimetres, y down from the top edge,
x from the image's left edge, which is the patient's right on a PA film), so the same chest can be
rendered at a native detector spacing (0.14-0.2 mm, evaluation and tests) or straight onto the model
grid (training). What is rendered is an attenuation map in millimetres of water equivalent (body,
air in the lungs and trachea, heart, spine, ribs, clavicles, vessels); ``to_pixels`` turns it into a
processed 12-bit DX image (0..4095, higher = more attenuation) with a per-image processing curve and
quantum noise whose strength is defined per square millimetre, so it averages down consistently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from scipy import ndimage

PIXEL_MAX = 4095
NODULE_DIAMETER_MM = (8.0, 30.0)
# Smaller nodules are drawn denser, as opaque at their centre as one this size (see random_nodule).
CONSPICUOUS_DIAMETER_MM = 16.0
# The finest grid the anatomy is evaluated on; finer detector grids are interpolated from it (the
# structures are at least a few millimetres soft, and the noise is added at the detector's own spacing).
RENDER_MM = 0.5
# Sub-pixel size for nodules: a small opacity must be area-averaged, not point-sampled, on a coarse grid.
NODULE_SUBPIXEL_MM = 0.4


@dataclass(frozen=True)
class Band:
    """A curved bony band (rib, clavicle): centreline y = c0 + c1*t + c2*t^2 for t = x - x_start in [0, length]."""

    x_start: float
    length: float
    coefficients: tuple[float, float, float]
    half_width_mm: tuple[float, float]
    strength: float

    def render(self, y: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
        c0, c1, c2 = self.coefficients
        t_grid = np.linspace(0.0, self.length, 16)
        centre = c0 + c1 * t_grid + c2 * t_grid**2
        reach = max(self.half_width_mm) + 1.0
        rows = _index_range(y[:, 0], centre.min() - reach, centre.max() + reach)
        cols = _index_range(x[0], self.x_start, self.x_start + self.length)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return
        t = x[0, cols] - self.x_start
        centre = c0 + c1 * t + c2 * t**2
        slope = c1 + 2 * c2 * t
        half_width = self.half_width_mm[0] + (self.half_width_mm[1] - self.half_width_mm[0]) * t / self.length
        distance = (y[rows, :1] - centre[None]) / np.sqrt(1.0 + slope**2)[None]
        u = np.clip(1.0 - (distance / half_width[None]) ** 2, 0.0, 1.0)
        # A tube with a denser cortex: the rim shows as two brighter lines, as on a film.
        profile = 0.55 * np.sqrt(u) + 0.45 * np.exp(-(((np.abs(distance) - 0.8 * half_width) / 1.2) ** 2)) * (u > 0)
        # Bands fade out at both ends instead of stopping square.
        fade = np.clip(np.minimum(t, self.length - t) / 8.0, 0.0, 1.0)
        out[rows, cols] += self.strength * profile * fade[None]


@dataclass(frozen=True)
class Vessel:
    """A tapered vessel segment with a Gaussian cross-profile, from (y0, x0) to (y1, x1)."""

    start_mm: tuple[float, float]
    end_mm: tuple[float, float]
    width_mm: tuple[float, float]
    strength: float

    def render(self, y: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
        (y0, x0), (y1, x1) = self.start_mm, self.end_mm
        reach = 2 * max(self.width_mm)
        rows = _index_range(y[:, 0], min(y0, y1) - reach, max(y0, y1) + reach)
        cols = _index_range(x[0], min(x0, x1) - reach, max(x0, x1) + reach)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return
        dy, dx = y1 - y0, x1 - x0
        length_sq = max(dy * dy + dx * dx, 1e-6)
        py, px = y[rows, :1] - y0, x[:1, cols] - x0
        along = np.clip((py * dy + px * dx) / length_sq, 0.0, 1.0)
        distance_sq = (py - along * dy) ** 2 + (px - along * dx) ** 2
        sigma = (self.width_mm[0] + (self.width_mm[1] - self.width_mm[0]) * along) / 2.355
        out[rows, cols] += self.strength * np.exp(-distance_sq / (2 * sigma**2))


@dataclass(frozen=True)
class Nodule:
    """A nodule-like opacity: a soft-edged, slightly elliptic sphere of ``density`` times water's attenuation."""

    centre_mm: tuple[float, float]
    diameter_mm: float
    density: float
    edge_mm: float = 1.0
    axis_ratio: float = 1.0
    angle: float = 0.0

    def render(self, y: np.ndarray, x: np.ndarray, out: np.ndarray, *, subpixels: int = 1) -> None:
        radius = self.diameter_mm / 2
        reach = radius + 3 * self.edge_mm + 2.0
        cy, cx = self.centre_mm
        rows = _index_range(y[:, 0], cy - reach, cy + reach)
        cols = _index_range(x[0], cx - reach, cx + reach)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return
        step_y = float(y[1, 0] - y[0, 0]) if y.shape[0] > 1 else 1.0
        step_x = float(x[0, 1] - x[0, 0]) if x.shape[1] > 1 else 1.0
        offsets = (np.arange(subpixels) + 0.5) / subpixels - 0.5
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        total = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
        for oy in offsets:
            for ox in offsets:
                py = y[rows, :1] + oy * step_y - cy
                px = x[:1, cols] + ox * step_x - cx
                u = (px * cos + py * sin) / self.axis_ratio
                v = -px * sin + py * cos
                r = np.sqrt(u * u + v * v)
                # The projected thickness of a sphere, with a sigmoid rim so the edge is soft, not cut.
                chord = np.sqrt(np.clip(1.0 - (r / (radius + 2 * self.edge_mm)) ** 2, 0.0, 1.0))
                total += (chord / (1.0 + np.exp((r - radius) / self.edge_mm))).astype(np.float32)
        out[rows, cols] += self.density * self.diameter_mm * total / subpixels**2


@dataclass(frozen=True)
class ChestAnatomy:
    """One patient on one detector: every size in millimetres, every strength in mm of water equivalent."""

    extent_mm: tuple[float, float]
    centre_x: float
    body_half_width: float
    neck_half_width: float
    shoulder_y: float
    body_thickness: float
    lung_apex_y: float
    lung_height: float
    lung_offset: float
    lung_half_width: tuple[float, float]
    lung_depth: float
    dome_y: tuple[float, float]
    mediastinum_half_width: float
    heart_centre: tuple[float, float]
    heart_semi_axes: tuple[float, float]
    heart_opacity: float
    spine_half_width: float
    spine_strength: float
    vertebra_period: float
    trachea_half_width: float
    trachea_depth: float
    carina_y: float
    hila: tuple[tuple[float, float], ...]
    hilum_strength: float
    bands: tuple[Band, ...]
    vessels: tuple[Vessel, ...]
    texture_seed: int
    texture_strength: float

    def side_centre_x(self, side: int) -> float:
        """The lung centre on ``side`` -1 (image left, the patient's right) or +1."""
        return self.centre_x + side * self.lung_offset


@dataclass(frozen=True)
class Exposure:
    """How the detector and its processing turned attenuation into pixel values, and how noisy it was."""

    offset: float
    gain: float
    gamma: float
    reference_mm: float
    noise_per_mm: float
    ramp: float


@dataclass(frozen=True)
class Radiograph:
    """A rendered DX image (``voxels`` int16 (1, y, x)), its spacing (z, y, x) and the truth it was drawn from."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    anatomy: ChestAnatomy
    exposure: Exposure
    nodules: tuple[Nodule, ...]


def _index_range(centres: np.ndarray, low: float, high: float) -> slice:
    """The slice of sorted pixel centres that lie in [low, high]."""
    return slice(int(np.searchsorted(centres, low)), int(np.searchsorted(centres, high, side="right")))


def pixel_centres_mm(
    shape: tuple[int, int], spacing: tuple[float, float], origin_mm: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel centres as broadcastable arrays; by default the grid tiles the detector from its corner."""
    if origin_mm is None:
        origin_mm = (spacing[0] / 2, spacing[1] / 2)
    y = (origin_mm[0] + np.arange(shape[0]) * spacing[0]).astype(np.float32)
    x = (origin_mm[1] + np.arange(shape[1]) * spacing[1]).astype(np.float32)
    return y[:, None], x[None, :]


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(value, -30.0, 30.0)))


def _ellipse_chord(y, x, centre, semi_axes) -> np.ndarray:
    rho_sq = ((y - centre[0]) / semi_axes[0]) ** 2 + ((x - centre[1]) / semi_axes[1]) ** 2
    return np.sqrt(np.clip(1.0 - rho_sq, 0.0, 1.0))


def lung_air(anatomy: ChestAnatomy, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Air in the line of sight as a fraction of the full lung depth: 0 outside the lungs, less behind the heart."""
    air = np.zeros(np.broadcast_shapes(y.shape, x.shape), dtype=np.float32)
    for index, side in enumerate((-1, 1)):
        half_width = anatomy.lung_half_width[index]
        centre_x = anatomy.side_centre_x(side)
        vertical = 0.62 * anatomy.lung_height
        chord = _ellipse_chord(y, x, (anatomy.lung_apex_y + vertical, centre_x), (vertical, half_width))
        # The hemidiaphragm is a dome, highest a little medial of the lung centre, lowest at the recess.
        dome = (
            anatomy.dome_y[index]
            + 0.22 * anatomy.lung_height * ((x - (centre_x - side * 0.15 * half_width)) / half_width) ** 2
        )
        below_dome = _sigmoid((dome - y) / 2.5)
        medial = _sigmoid((side * (x - anatomy.centre_x) - anatomy.mediastinum_half_width) / 2.5)
        air = np.maximum(air, (chord**0.7 * below_dome * medial).astype(np.float32))
    heart = _ellipse_chord(y, x, anatomy.heart_centre, anatomy.heart_semi_axes)
    return air * (1.0 - anatomy.heart_opacity * np.sqrt(heart)).astype(np.float32)


def _texture(anatomy: ChestAnatomy, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Smooth lung parenchyma mottling on a fixed 6 mm lattice, so every render of a chest shows the same one."""
    cell = 6.0
    lattice_shape = (int(anatomy.extent_mm[0] / cell) + 3, int(anatomy.extent_mm[1] / cell) + 3)
    lattice = np.random.default_rng(anatomy.texture_seed).normal(size=lattice_shape)
    lattice = ndimage.gaussian_filter(lattice, 1.0)
    lattice /= lattice.std() + 1e-6
    yy, xx = np.broadcast_arrays(y / cell + 1, x / cell + 1)
    return ndimage.map_coordinates(lattice, [yy.ravel(), xx.ravel()], order=1, mode="nearest").reshape(yy.shape)


def attenuation(
    anatomy: ChestAnatomy,
    nodules: tuple[Nodule, ...] = (),
    *,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    origin_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """Render the attenuation map (mm of water equivalent, float32) of ``anatomy`` and ``nodules`` on a grid."""
    y, x = pixel_centres_mm(shape, spacing, origin_mm)
    # The trunk: an elliptic cross-section, narrowing to the neck above the shoulders.
    shoulders = _sigmoid((y - anatomy.shoulder_y) / 12.0)
    half_width = anatomy.neck_half_width + (anatomy.body_half_width - anatomy.neck_half_width) * shoulders
    half_width = half_width * (1.0 + 0.06 * (y - anatomy.lung_apex_y) / anatomy.extent_mm[0])
    thickness = anatomy.body_thickness * (0.55 + 0.45 * shoulders)
    total = (thickness * np.sqrt(np.clip(1.0 - ((x - anatomy.centre_x) / half_width) ** 2, 0.0, 1.0))).astype(
        np.float32
    )
    air = lung_air(anatomy, y, x)
    total -= anatomy.lung_depth * air
    # The trachea: an air column down the midline to the carina.
    trachea = _sigmoid((anatomy.carina_y - y) / 4.0) * np.sqrt(
        np.clip(1.0 - ((x - anatomy.centre_x) / anatomy.trachea_half_width) ** 2, 0.0, 1.0)
    )
    total -= (anatomy.trachea_depth * trachea * shoulders).astype(np.float32)
    # The spine: a column behind the mediastinum; disc spaces every vertebra_period are a little less dense.
    spine = np.sqrt(np.clip(1.0 - ((x - anatomy.centre_x) / anatomy.spine_half_width) ** 2, 0.0, 1.0))
    discs = 0.8 + 0.2 * np.cos(2 * np.pi * (y - anatomy.shoulder_y) / anatomy.vertebra_period) ** 2
    total += (anatomy.spine_strength * spine * discs).astype(np.float32)
    for hilum in anatomy.hila:
        distance_sq = (y - hilum[0]) ** 2 + (x - hilum[1]) ** 2
        total += (anatomy.hilum_strength * np.exp(-distance_sq / (2 * 9.0**2))).astype(np.float32)
    vessels = np.zeros_like(total)
    for vessel in anatomy.vessels:
        vessel.render(y, x, vessels)
    vessels += anatomy.texture_strength * _texture(anatomy, y, x)
    # Vessels and parenchyma show only against lung air; elsewhere they drown in soft tissue.
    total += vessels * air
    for band in anatomy.bands:
        band.render(y, x, total)
    subpixels = max(1, int(math.ceil(max(spacing) / NODULE_SUBPIXEL_MM)))
    for nodule in nodules:
        nodule.render(y, x, total, subpixels=subpixels)
    return np.clip(total, 0.0, None)


def to_pixels(
    attenuation_mm: np.ndarray,
    exposure: Exposure,
    *,
    spacing: tuple[float, float],
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Processing curve, exposure ramp and noise: attenuation -> 12-bit pixel values (int16, higher = denser)."""
    relative = np.clip(attenuation_mm / exposure.reference_mm, 0.0, None)
    pixels = exposure.offset + exposure.gain * relative**exposure.gamma
    columns = np.linspace(-1.0, 1.0, attenuation_mm.shape[-1], dtype=np.float32)
    pixels = pixels + exposure.ramp * columns
    if rng is not None and exposure.noise_per_mm > 0:
        # Quantum noise: stronger where fewer photons arrive; per pixel it scales with 1/sqrt(pixel area).
        sigma = exposure.noise_per_mm * (0.6 + 0.8 * np.clip(relative, 0.0, 1.5)) / math.sqrt(spacing[0] * spacing[1])
        pixels = pixels + sigma * rng.standard_normal(attenuation_mm.shape, dtype=np.float32)
    return np.clip(np.rint(pixels), 0, PIXEL_MAX).astype(np.int16)


def random_chest(rng: np.random.Generator, *, extent_mm: tuple[float, float] | None = None) -> ChestAnatomy:
    """Draw a patient and a detector: adult PA chest, sizes and densities varying across the population."""
    if extent_mm is None:
        extent_mm = (float(rng.uniform(380, 440)), float(rng.uniform(350, 430)))
    height, width = extent_mm
    centre_x = width / 2 + rng.uniform(-12, 12)
    body_half_width = min(width * rng.uniform(0.40, 0.47), rng.uniform(145, 190))
    lung_apex_y = rng.uniform(30, 75)
    lung_height = min(height - lung_apex_y - 40, rng.uniform(230, 290))
    lung_offset = body_half_width * rng.uniform(0.44, 0.52)
    lung_half_width = tuple(float(lung_offset * rng.uniform(0.80, 0.92)) for _ in range(2))
    mediastinum = rng.uniform(22, 32)
    # The right hemidiaphragm (image left) usually sits higher.
    dome = lung_apex_y + lung_height * rng.uniform(0.80, 0.88)
    dome_y = (float(dome - rng.uniform(5, 20)), float(dome))
    heart_semi = (float(rng.uniform(45, 60)), float(rng.uniform(55, 78)))
    heart_centre = (float(dome - rng.uniform(0.2, 0.5) * heart_semi[0]), float(centre_x + rng.uniform(8, 28)))
    carina_y = lung_apex_y + lung_height * rng.uniform(0.30, 0.40)
    hila = tuple(
        (float(carina_y + rng.uniform(15, 35)), float(centre_x + side * (mediastinum + rng.uniform(8, 20))))
        for side in (-1, 1)
    )
    bands: list[Band] = []
    rib_spacing = lung_height * rng.uniform(0.085, 0.1)
    first_rib = lung_apex_y - rng.uniform(0, 12)
    for side in (-1, 1):
        lateral = body_half_width * rng.uniform(0.90, 0.97)
        for index in range(10):
            y0 = first_rib + index * rib_spacing + rng.uniform(-2, 2)
            start = 14.0
            reach = lateral - start
            rise, drop = rng.uniform(0.15, 0.32), rng.uniform(10, 32) + index * 1.5
            curvature = (drop + rise * reach) / reach**2
            half_width = (rng.uniform(3.5, 5.0), rng.uniform(5.0, 7.0))
            strength = rng.uniform(10, 20)
            posterior = (y0, -rise, curvature)
            bands.append(_band_along(centre_x, side, start, lateral, posterior, half_width, strength))
            # The anterior rib: fainter, from the lateral end running medially and downwards.
            end_y = y0 - rise * reach + curvature * reach**2
            anterior = (end_y, rng.uniform(0.25, 0.45), rng.uniform(-0.0008, 0.0008))
            bands.append(
                _band_along(
                    centre_x,
                    side,
                    lateral,
                    body_half_width * rng.uniform(0.25, 0.4),
                    anterior,
                    (rng.uniform(5, 7), rng.uniform(6, 8)),
                    strength * rng.uniform(0.3, 0.5),
                )
            )
        # The clavicle: from the sternal notch up and out to the shoulder.
        notch_y = lung_apex_y + rng.uniform(0, 12)
        medial_end = rng.uniform(15, 25)
        reach = body_half_width * rng.uniform(0.7, 0.85)
        lift = rng.uniform(15, 40)
        sag = rng.uniform(0.0, 0.0015)
        clavicle = (notch_y, -(lift / reach) - sag * reach, sag)
        half_width = (rng.uniform(5, 6.5),) * 2
        strength = rng.uniform(18, 28)
        bands.append(_band_along(centre_x, side, medial_end, medial_end + reach, clavicle, half_width, strength))
    vessels: list[Vessel] = []
    for index, side in enumerate((-1, 1)):
        hilum = hila[index]
        for _ in range(int(rng.integers(5, 8))):
            # Main branches fan out laterally, up and down from the hilum.
            angle = rng.uniform(-0.45 * np.pi, 0.45 * np.pi)
            _grow_vessel(rng, vessels, hilum, side, angle, width=rng.uniform(3.5, 5.5), depth=0)
    return ChestAnatomy(
        extent_mm=(float(height), float(width)),
        centre_x=float(centre_x),
        body_half_width=float(body_half_width),
        neck_half_width=float(rng.uniform(45, 62)),
        shoulder_y=float(lung_apex_y - rng.uniform(5, 25)),
        body_thickness=float(rng.uniform(190, 260)),
        lung_apex_y=float(lung_apex_y),
        lung_height=float(lung_height),
        lung_offset=float(lung_offset),
        lung_half_width=lung_half_width,
        lung_depth=float(rng.uniform(110, 160)),
        dome_y=dome_y,
        mediastinum_half_width=float(mediastinum),
        heart_centre=heart_centre,
        heart_semi_axes=heart_semi,
        heart_opacity=float(rng.uniform(0.55, 0.85)),
        spine_half_width=float(rng.uniform(17, 24)),
        spine_strength=float(rng.uniform(8, 16)),
        vertebra_period=float(rng.uniform(24, 32)),
        trachea_half_width=float(rng.uniform(7, 10)),
        trachea_depth=float(rng.uniform(18, 30)),
        carina_y=float(carina_y),
        hila=hila,
        hilum_strength=float(rng.uniform(6, 14)),
        bands=tuple(bands),
        vessels=tuple(vessels),
        texture_seed=int(rng.integers(2**31)),
        texture_strength=float(rng.uniform(0.8, 2.0)),
    )


def _band_along(centre_x, side, t_from, t_to, coefficients, half_width, strength) -> Band:
    """A band drawn from ``t_from`` to ``t_to`` mm off the midline on ``side``, y quadratic in the path length."""
    c0, c1, c2 = (float(c) for c in coefficients)
    x_from, x_to = centre_x + side * t_from, centre_x + side * t_to
    length = float(abs(x_to - x_from))
    if x_from <= x_to:
        return Band(float(x_from), length, (c0, c1, c2), tuple(half_width), float(strength))
    # Drawn right to left: re-express the quadratic from the left end, where the path ends.
    coefficients = (c0 + c1 * length + c2 * length**2, -c1 - 2 * c2 * length, c2)
    return Band(float(x_to), length, coefficients, tuple(half_width)[::-1], float(strength))


def _grow_vessel(rng, vessels: list[Vessel], start, side, angle, *, width: float, depth: int) -> None:
    length = rng.uniform(25, 50) * (0.8**depth)
    direction = (math.sin(angle), side * math.cos(angle))
    end = (start[0] + length * direction[0], start[1] + length * direction[1])
    end_width = max(1.0, width * rng.uniform(0.6, 0.8))
    vessels.append(
        Vessel(
            (float(start[0]), float(start[1])),
            (float(end[0]), float(end[1])),
            (width, end_width),
            rng.uniform(4.0, 8.0) * 0.85**depth,
        )
    )
    if depth < 3:
        for _ in range(2):
            _grow_vessel(rng, vessels, end, side, angle + rng.uniform(-0.6, 0.6), width=end_width, depth=depth + 1)


def random_exposure(rng: np.random.Generator, anatomy: ChestAnatomy) -> Exposure:
    return Exposure(
        offset=float(rng.uniform(60, 300)),
        gain=float(rng.uniform(3000, 3700)),
        gamma=float(rng.uniform(0.8, 1.25)),
        reference_mm=float(anatomy.body_thickness + rng.uniform(10, 40)),
        noise_per_mm=float(rng.uniform(4.0, 12.0)),
        ramp=float(rng.uniform(-120, 120)),
    )


def random_nodule(
    rng: np.random.Generator,
    anatomy: ChestAnatomy,
    *,
    diameter_range_mm: tuple[float, float] = NODULE_DIAMETER_MM,
    density_range: tuple[float, float] = (1.0, 1.8),
    min_air: float = 0.45,
) -> Nodule:
    """A nodule anywhere in the lung fields where enough air surrounds it to see it (not behind the heart).

    Below CONSPICUOUS_DIAMETER_MM the density is raised so the peak opacity matches a nodule of that
    size: the demo's floor of conspicuity (a solid 8 mm sphere is lost among ribs at the model's 1.6 mm grid).
    """
    for _ in range(1000):
        diameter = float(rng.uniform(*diameter_range_mm))
        side = int(rng.choice((-1, 1)))
        half_width = anatomy.lung_half_width[(side + 1) // 2]
        centre = (
            float(anatomy.lung_apex_y + rng.uniform(0.05, 1.0) * anatomy.lung_height),
            float(anatomy.side_centre_x(side) + rng.uniform(-1, 1) * half_width),
        )
        air = lung_air(anatomy, np.array([[centre[0]]]), np.array([[centre[1]]]))[0, 0]
        if air >= min_air:
            return Nodule(
                centre_mm=centre,
                diameter_mm=diameter,
                density=float(rng.uniform(*density_range) * max(1.0, CONSPICUOUS_DIAMETER_MM / diameter)),
                edge_mm=float(rng.uniform(0.5, 2.5)),
                axis_ratio=float(rng.uniform(0.8, 1.0)),
                angle=float(rng.uniform(0, np.pi)),
            )
    raise RuntimeError("no place in the lung fields for a nodule")


def render_radiograph(
    anatomy: ChestAnatomy,
    exposure: Exposure,
    nodules: tuple[Nodule, ...],
    *,
    pixel_mm: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The whole detector at ``pixel_mm``: int16 (1, y, x). Anatomy is evaluated on a grid no finer than RENDER_MM."""
    shape = tuple(int(round(extent / pixel_mm)) for extent in anatomy.extent_mm)
    spacing = tuple(extent / n for extent, n in zip(anatomy.extent_mm, shape, strict=True))
    render_shape = tuple(
        max(2, min(n, int(round(extent / RENDER_MM)))) for extent, n in zip(anatomy.extent_mm, shape, strict=True)
    )
    render_spacing = tuple(extent / n for extent, n in zip(anatomy.extent_mm, render_shape, strict=True))
    attenuation_mm = attenuation(anatomy, nodules, shape=render_shape, spacing=render_spacing)
    if render_shape != shape:
        attenuation_mm = F.interpolate(
            torch.from_numpy(attenuation_mm)[None, None], size=shape, mode="bilinear", align_corners=False
        )[0, 0].numpy()
    return to_pixels(attenuation_mm, exposure, spacing=spacing, rng=rng)[None]


def random_radiograph(
    rng: np.random.Generator,
    *,
    nodule: bool,
    pixel_mm_range: tuple[float, float] = (0.14, 0.2),
    **nodule_kwargs,
) -> Radiograph:
    """A whole PA chest radiograph at a native detector spacing, with one nodule or none."""
    anatomy = random_chest(rng)
    exposure = random_exposure(rng, anatomy)
    nodules = (random_nodule(rng, anatomy, **nodule_kwargs),) if nodule else ()
    pixel_mm = float(rng.uniform(*pixel_mm_range))
    voxels = render_radiograph(anatomy, exposure, nodules, pixel_mm=pixel_mm, rng=rng)
    spacing = (1.0, anatomy.extent_mm[0] / voxels.shape[1], anatomy.extent_mm[1] / voxels.shape[2])
    return Radiograph(voxels=voxels, spacing=spacing, anatomy=anatomy, exposure=exposure, nodules=nodules)
