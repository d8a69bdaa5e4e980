"""The synthetic lesion: its parameters, their sampling, and rendering a SLICE-3D-style tile.

Coordinates: a point (x, y) is in mm from the tile's top-left corner, x along columns, y along
rows (downward); pixel (i, j) covers [j, j+1) x [i, i+1) times ``pixel_mm``, centre at
((j + 0.5) pixel_mm, (i + 0.5) pixel_mm). :mod:`skinground.demo.measure` computes every attribute
from what is rendered here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from skinground.demo.color import lab_to_rgb

FOV_MM = 15.0
#: Points sampled on the lesion's boundary curve (``Tile.contour_mm``).
CONTOUR_POINTS = 512
#: The lesion stays at least this far from the tile's edge (room for the ring and skin).
EDGE_MARGIN_MM = 1.6
#: Lesion area range (mm^2) of the sampler.
AREA_RANGE_MM2 = (1.0, 60.0)


# --------------------------------------------------------------------------- the lesion model


@dataclass(frozen=True)
class LesionParams:
    """One rendered lesion. Colours are CIE L*a*b*; lengths mm; angles radians.

    Shape: r(t) = ellipse_radius(t; semi_axes_mm, rotation) * (1 + sum_k amp_k cos(k t + phase_k))
    around the tile centre + ``centre_offset_mm``; ``harmonics`` holds (k, amp_k, phase_k).
    Skin: ``skin_lab`` + ``skin_shading`` * a smooth unit-std field (L; a, b at 0.3, 0.4 of it)
    + per-pixel noise of std ``skin_noise`` (L; a, b at 0.4, 0.5 of it).
    Lesion: local smooth skin + ``delta_lab``, darkened by blotches (L: ``variation[0]`` times a
    smooth field in [0, 1]; a, b: ``variation[1:]`` times zero-mean unit-std fields of scale
    ``blotch_mm``) and by a linear gradient along ``gradient_angle`` (L: 0 on one side to
    ``gradient[0]`` darker on the other; a, b: +-``gradient[1:]`` / 2), + noise ``lesion_noise``.
    Edge: the lesion fades into the skin over ``edge_mm`` (at least one pixel) across the curve.
    """

    semi_axes_mm: tuple[float, float] = (2.0, 2.0)
    rotation: float = 0.0
    harmonics: tuple[tuple[int, float, float], ...] = ()
    centre_offset_mm: tuple[float, float] = (0.0, 0.0)
    skin_lab: tuple[float, float, float] = (65.0, 12.0, 18.0)
    skin_shading: float = 0.0
    skin_noise: float = 0.0
    delta_lab: tuple[float, float, float] = (-20.0, 6.0, 6.0)
    variation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    blotch_mm: float = 1.0
    gradient: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gradient_angle: float = 0.0
    lesion_noise: float = 0.0
    edge_mm: float = 0.0


@dataclass(frozen=True, eq=False)
class Tile:
    """A rendered tile: ``rgb`` (uint8 HxWx3, before JPEG), ``mask`` (bool HxW, pixel centre
    inside the boundary), ``contour_mm`` ((N, 2) boundary polygon, (x, y) in mm), ``pixel_mm``."""

    rgb: np.ndarray
    mask: np.ndarray
    contour_mm: np.ndarray
    pixel_mm: float
    centre_mm: tuple[float, float] = (0.0, 0.0)
    lesion: LesionParams = field(default_factory=LesionParams)


def boundary_radius(lesion: LesionParams, theta: np.ndarray) -> np.ndarray:
    """r(theta) of the lesion's polar boundary curve (mm)."""
    a, b = lesion.semi_axes_mm
    t = theta - lesion.rotation
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    if not lesion.harmonics:
        return r
    k, amp, phase = (np.array(v, dtype=np.float64)[:, None] for v in zip(*lesion.harmonics,
                                                                         strict=True))
    return r * (1.0 + (amp * np.cos(k * theta + phase)).sum(axis=0))


def contour_polygon(lesion: LesionParams, centre_mm, n: int = CONTOUR_POINTS) -> np.ndarray:
    """The boundary curve sampled at ``n`` equally spaced angles: (n, 2) points (x, y) in mm."""
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    r = boundary_radius(lesion, theta)
    return np.stack([centre_mm[0] + r * np.cos(theta), centre_mm[1] + r * np.sin(theta)], axis=1)


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_length(points: np.ndarray) -> float:
    """Length of a closed polygon."""
    return float(np.hypot(*(np.roll(points, -1, axis=0) - points).T).sum())


# --------------------------------------------------------------------------- sampling


def sample_skin_tone(rng: np.random.Generator) -> tuple[float, float, float]:
    """A patient's skin colour (L*, a*, b*): fair to medium-dark, reddish-yellow."""
    lightness = rng.uniform(48.0, 78.0)
    redness = rng.uniform(8.0, 19.0) + 0.08 * (70.0 - lightness)
    yellowness = rng.uniform(12.0, 27.0)
    return (float(lightness), float(redness), float(yellowness))


def _sample_harmonics(rng, irregularity: float) -> tuple[tuple[int, float, float], ...]:
    """Boundary harmonics k = 2..18, amplitude ~ irregularity * 0.22 * N(0,1) / k^0.75; scaled
    down if the radius factor 1 + sum(...) would drop below 0.4 anywhere."""
    ks = np.arange(2, 19)
    amps = irregularity * 0.22 * rng.standard_normal(ks.size) / ks**0.75
    phases = rng.uniform(0.0, 2.0 * np.pi, ks.size)
    theta = np.linspace(0.0, 2.0 * np.pi, CONTOUR_POINTS, endpoint=False)
    wave = (amps[:, None] * np.cos(ks[:, None] * theta + phases[:, None])).sum(axis=0)
    if wave.min() < -0.6:
        amps = amps * (0.6 / -wave.min())
    return tuple((int(k), float(a), float(p)) for k, a, p in zip(ks, amps, phases, strict=True))


def _fit_shape(lesion: LesionParams, area_mm2: float, fov_mm: float, rng) -> LesionParams:
    """Scale the shape to ``area_mm2``, shrink it to fit the tile, and place its centre within
    half its smallest radius (at most 1 mm) of the tile centre, so the centre is inside it."""
    unit = contour_polygon(lesion, (0.0, 0.0))
    scale = math.sqrt(area_mm2 / polygon_area(unit))
    radii = np.hypot(unit[:, 0], unit[:, 1]) * scale
    room = fov_mm / 2.0 - EDGE_MARGIN_MM
    shift_max = min(1.0, 0.5 * float(radii.min()))
    if radii.max() + shift_max > room:
        scale *= room / (radii.max() + shift_max)
        shift_max *= room / (radii.max() + shift_max)
    a, b = lesion.semi_axes_mm
    rho, phi = shift_max * math.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
    return replace(lesion, semi_axes_mm=(a * scale, b * scale),
                   centre_offset_mm=(rho * math.cos(phi), rho * math.sin(phi)))


def _level(rng, power: float, size: float, coupling: float) -> float:
    """An atypia level in [0, 1]: u^power, a share ``coupling`` of it replaced by the lesion's
    relative size (0 = independent of size)."""
    return (1.0 - coupling) * rng.uniform() ** power + coupling * size


def _sample_colour(rng, skin_lab, malignant: bool, size: float = 0.0,
                   coupling: float = 0.0) -> dict:
    """Lesion and skin colour fields of LesionParams. The extra L darkening by blotches and by
    the gradient averages at most 0.9 |delta_lab[0]| together, so the lightest lesion pixels
    (skin + delta_lab[0]) stay darker than halfway between mean lesion and mean skin L; skin
    shading and noise are kept small for faint lesions for the same reason. The darkest
    lesion pixel stays at L* >= ~15."""
    skin_l = skin_lab[0]
    depth = min(rng.uniform(5.0, 28.0) + (3.0 if malignant else 0.0), skin_l - 25.0)
    delta = (-depth, rng.uniform(0.0, 10.0), rng.uniform(-3.0, 12.0))
    v_level = min(1.0, _level(rng, 1.2, size, coupling) + (0.2 if malignant else 0.0))
    g_level = min(1.0, _level(rng, 1.3, size, coupling) + (0.25 if malignant else 0.0))
    var_l, grad_l = v_level * min(18.0, 0.9 * depth), g_level * min(12.0, 0.9 * depth)
    budget = skin_l - depth - 15.0  # keep the darkest pixel at L >= ~15
    if var_l + grad_l > budget:
        var_l, grad_l = var_l * budget / (var_l + grad_l), grad_l * budget / (var_l + grad_l)
    chroma_level = rng.uniform()
    return dict(
        delta_lab=tuple(float(x) for x in delta),
        variation=(float(var_l), float(v_level * chroma_level * rng.uniform(0.0, 6.0)),
                   float(v_level * chroma_level * rng.uniform(0.0, 8.0))),
        blotch_mm=float(rng.uniform(0.4, 1.4)),
        gradient=(float(grad_l), float(g_level * rng.uniform(-6.0, 6.0)),
                  float(g_level * rng.uniform(-8.0, 8.0))),
        gradient_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        lesion_noise=float(rng.uniform(0.3, 1.5)),
        edge_mm=float(rng.uniform(0.0, 0.3)),
        skin_shading=float(rng.uniform() * min(3.5, 0.15 * depth + 0.4)),
        skin_noise=float(rng.uniform(0.2, min(2.5, 0.12 * depth + 0.6))),
    )


def sample_lesion(rng: np.random.Generator, *, skin_lab=None, fov_mm: float = FOV_MM,
                  malignant: bool = False, size_coupling: float = 0.0) -> LesionParams:
    """A random lesion: log-uniform area in AREA_RANGE_MM2 (x1.8 if malignant, before fitting
    the tile), aspect ratio 0.5-1, irregularity level u^1.1 (+0.3 if malignant) and colour
    variation / asymmetry levels (higher on average if malignant); ``skin_lab`` defaults to a
    random skin tone. ``size_coupling`` (0-1): the share of the three atypia levels given by
    the lesion's relative size (log area in the range) instead of chance, as the ABCD rule
    has border, colour and asymmetry atypia grow with the diameter (0: independent)."""
    skin_lab = sample_skin_tone(rng) if skin_lab is None else tuple(skin_lab)
    area = math.exp(rng.uniform(*np.log(AREA_RANGE_MM2))) * (1.8 if malignant else 1.0)
    lo, hi = np.log(AREA_RANGE_MM2)
    size = min(1.0, max(0.0, (math.log(area) - lo) / (hi - lo)))
    irregularity = min(1.0, _level(rng, 1.1, size, size_coupling)
                       + (0.3 if malignant else 0.0))
    lesion = LesionParams(
        semi_axes_mm=(1.0, float(rng.uniform(0.5, 1.0))),
        rotation=float(rng.uniform(0.0, np.pi)),
        harmonics=_sample_harmonics(rng, irregularity),
        skin_lab=tuple(float(x) for x in skin_lab),
        **_sample_colour(rng, skin_lab, malignant, size, size_coupling),
    )
    return _fit_shape(lesion, area, fov_mm, rng)


# --------------------------------------------------------------------------- rendering


def _smooth_fields(rng, size: int, pixel_mm: float, scale_mm: float, n: int) -> np.ndarray:
    """``n`` smooth random fields (n, size, size) of unit variance at every pixel: Gaussian
    bumps of width 0.7 ``scale_mm`` on a grid of spacing ``scale_mm`` with N(0,1) weights,
    divided by the pointwise std of that sum."""
    fov = size * pixel_mm
    centres = np.arange(-scale_mm, fov + 2 * scale_mm, scale_mm)
    x = (np.arange(size) + 0.5) * pixel_mm
    basis = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / (0.7 * scale_mm)) ** 2)
    norm = np.sqrt((basis**2).sum(axis=1))
    basis /= norm[:, None]
    weights = rng.standard_normal((n, centres.size, centres.size))
    return basis @ weights @ basis.T


def _noise(rng, shape, scale) -> np.ndarray:
    """Zero-mean uniform noise of std ``scale`` (per last-axis channel), float32."""
    u = rng.random(shape, dtype=np.float32) - np.float32(0.5)
    return u * (np.float32(math.sqrt(12.0)) * np.asarray(scale, np.float32))


def _skin(rng, lesion: LesionParams, size: int, pixel_mm: float):
    """Smooth skin colour (H, W, 3) and the same plus per-pixel noise (float32)."""
    shading = _smooth_fields(rng, size, pixel_mm, 6.0, 1)[0].astype(np.float32)
    smooth = np.asarray(lesion.skin_lab, np.float32) + (
        shading[..., None] * (lesion.skin_shading * np.array([1.0, 0.3, 0.4], np.float32)))
    noisy = smooth + _noise(rng, smooth.shape, lesion.skin_noise * np.array([1.0, 0.4, 0.5]))
    return smooth, noisy


def _coverage(lesion, contour_r, centre, pixel_mm, rows, cols):
    """Lesion coverage alpha in [0, 1] of the pixels rows x cols: clip((r(theta) - rho) / w
    + 1/2), rho, theta the pixel centre's polar coordinates, w = max(edge_mm, pixel_mm)."""
    dx = (cols + 0.5) * pixel_mm - centre[0]
    dy = (rows + 0.5) * pixel_mm - centre[1]
    dx, dy = np.broadcast_arrays(dx[None, :], dy[:, None])
    rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx) % (2.0 * np.pi)
    grid = np.linspace(0.0, 2.0 * np.pi, contour_r.size, endpoint=False)
    radius = np.interp(theta, grid, contour_r, period=2.0 * np.pi)
    width = max(lesion.edge_mm, pixel_mm)
    return np.clip((radius - rho) / width + 0.5, 0.0, 1.0), dx, dy


def _lesion_colour(rng, lesion, skin_smooth, dx, dy, r_max, pixel_mm):
    """Lesion L*a*b* over a window: skin + delta, blotches, gradient, noise."""
    h, w = dx.shape
    size = max(h, w)
    fields = _smooth_fields(rng, size, pixel_mm, lesion.blotch_mm, 3)[:, :h, :w].astype(np.float32)
    blotch_l = 0.5 * (1.0 + np.tanh(fields[0]))  # in (0, 1), mean ~1/2
    u = (dx * math.cos(lesion.gradient_angle) + dy * math.sin(lesion.gradient_angle)) / r_max
    u = np.clip(u, -1.0, 1.0)
    colour = skin_smooth + np.asarray(lesion.delta_lab)
    colour[..., 0] -= lesion.variation[0] * blotch_l + lesion.gradient[0] * 0.5 * (u + 1.0)
    for c in (1, 2):
        colour[..., c] += lesion.variation[c] * fields[c] + lesion.gradient[c] * 0.5 * u
    colour += _noise(rng, colour.shape, lesion.lesion_noise * np.array([1.0, 0.5, 0.5]))
    return _limit_chroma(colour)


def _limit_chroma(lab: np.ndarray) -> np.ndarray:
    """Scale a*, b* down to chroma <= 1.3 L* + 2, inside the sRGB gamut for brown hues, so
    that dark pixels do not change hue when clipped to sRGB."""
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    limit = 1.3 * np.maximum(lab[..., 0], 0.0) + 2.0
    lab[..., 1:] *= np.minimum(1.0, limit / np.maximum(chroma, 1e-6))[..., None]
    return lab


def render_tile(rng: np.random.Generator, size_px: int, fov_mm: float = FOV_MM,
                lesion: LesionParams | None = None) -> Tile:
    """Render a ``size_px`` square tile of ``fov_mm`` with one lesion (random if None).

    The mask is {pixel centre inside the boundary curve}; the lesion is blended into the skin
    with the coverage of ``_coverage`` (anti-aliased; alpha >= 1/2 exactly on the mask).
    """
    lesion = sample_lesion(rng, fov_mm=fov_mm) if lesion is None else lesion
    pixel_mm = fov_mm / size_px
    centre = (fov_mm / 2 + lesion.centre_offset_mm[0], fov_mm / 2 + lesion.centre_offset_mm[1])
    contour = contour_polygon(lesion, centre)
    contour_r = np.hypot(contour[:, 0] - centre[0], contour[:, 1] - centre[1])
    r_max = float(contour_r.max())
    lo = [max(0, int((c - r_max) / pixel_mm) - 2) for c in centre]
    hi = [min(size_px, int(math.ceil((c + r_max) / pixel_mm)) + 2) for c in centre]
    rows, cols = np.arange(lo[1], hi[1]), np.arange(lo[0], hi[0])

    skin_smooth, lab = _skin(rng, lesion, size_px, pixel_mm)
    alpha, dx, dy = _coverage(lesion, contour_r, centre, pixel_mm, rows, cols)
    window = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    colour = _lesion_colour(rng, lesion, skin_smooth[window], dx, dy, r_max, pixel_mm)
    lab[window] += alpha[..., None] * (colour - lab[window])
    mask = np.zeros((size_px, size_px), dtype=bool)
    mask[window] = alpha >= 0.5
    return Tile(rgb=lab_to_rgb(lab, as_uint8=True), mask=mask, contour_mm=contour,
                pixel_mm=pixel_mm, centre_mm=centre, lesion=lesion)


