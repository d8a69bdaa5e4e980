"""A synthetic dataset in SLICE-3D's exact file format: the workflow's embedded demo.

``generate`` writes ``train-metadata.csv`` (all 55 ``METADATA_COLUMNS``, in order) and
``train-image.hdf5`` (one scalar bytes dataset of JPEG data per ``isic_id``). Each image is a
square tile of 61-239 px covering a 15 mm x 15 mm field of view, showing skin with one
pigmented lesion (``render_tile``). Every lesion measurement in the CSV is computed from the
rendered tile (``measure``): from its mask, its contour and its pixels in CIE L*a*b*.

Coordinates: a point (x, y) is in mm from the tile's top-left corner, x along columns, y along
rows (downward); pixel (i, j) covers [j, j+1) x [i, i+1) times ``pixel_mm``, centre at
((j + 0.5) pixel_mm, (i + 0.5) pixel_mm).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import polars as pl
from PIL import Image

from skinground.attributes import (
    ID_COLUMN,
    METADATA_COLUMNS,
    NUMERIC_COLUMNS,
    PAPER_ATTRIBUTES,
    PATIENT_COLUMN,
    TARGET_COLUMN,
)
from skinground.color import lab_to_rgb, rgb_to_lab
from skinground.io import atomic_path

FOV_MM = 15.0
#: Points sampled on the lesion's boundary curve (``Tile.contour_mm``).
CONTOUR_POINTS = 512
#: Width of the ring of "immediate surrounding skin" used by deltaLB.
RING_MM = 1.0
#: The lesion stays at least this far from the tile's edge (room for the ring and skin).
EDGE_MARGIN_MM = 1.6
#: Lesion area range (mm^2) of the sampler.
AREA_RANGE_MM2 = (1.0, 60.0)
#: Angular sectors of tbp_lv_radial_color_std_max.
SECTORS = 8
#: Scales of the 0-10 indices: 10 * clip(x / scale, 0, 1).
BORDER_SCALE = 0.5  # perimeter excess over the moment-equivalent ellipse's (fraction)
COLOR_SCALE = 6.0  # tbp_lv_color_std_mean (L*a*b* units)
#: deltaLBnorm's floor on the skin's L std (avoids dividing by ~0 on flat skin).
SKIN_STD_FLOOR = 1.0

#: The columns ``measure`` returns, in METADATA_COLUMNS order.
MEASURED_COLUMNS: tuple[str, ...] = tuple(
    c for c in METADATA_COLUMNS
    if c in NUMERIC_COLUMNS and c not in ("tbp_lv_nevi_confidence", "tbp_lv_dnn_lesion_confidence")
)


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


def _sample_colour(rng, skin_lab, malignant: bool) -> dict:
    """Lesion and skin colour fields of LesionParams. The extra L darkening by blotches and by
    the gradient averages at most 0.9 |delta_lab[0]| together, so the lightest lesion pixels
    (skin + delta_lab[0]) stay darker than halfway between mean lesion and mean skin L; skin
    shading and noise are kept small for faint lesions for the same reason. The darkest
    lesion pixel stays at L* >= ~15."""
    skin_l = skin_lab[0]
    depth = min(rng.uniform(5.0, 28.0) + (3.0 if malignant else 0.0), skin_l - 25.0)
    delta = (-depth, rng.uniform(0.0, 10.0), rng.uniform(-3.0, 12.0))
    v_level = min(1.0, rng.uniform() ** 1.2 + (0.2 if malignant else 0.0))
    g_level = min(1.0, rng.uniform() ** 1.3 + (0.25 if malignant else 0.0))
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
                  malignant: bool = False) -> LesionParams:
    """A random lesion: log-uniform area in AREA_RANGE_MM2 (x1.8 if malignant, before fitting
    the tile), aspect ratio 0.5-1, irregularity level u^1.1 (+0.3 if malignant) and colour
    variation / asymmetry levels (higher on average if malignant); ``skin_lab`` defaults to a
    random skin tone."""
    skin_lab = sample_skin_tone(rng) if skin_lab is None else tuple(skin_lab)
    area = math.exp(rng.uniform(*np.log(AREA_RANGE_MM2))) * (1.8 if malignant else 1.0)
    irregularity = min(1.0, rng.uniform() ** 1.1 + (0.3 if malignant else 0.0))
    lesion = LesionParams(
        semi_axes_mm=(1.0, float(rng.uniform(0.5, 1.0))),
        rotation=float(rng.uniform(0.0, np.pi)),
        harmonics=_sample_harmonics(rng, irregularity),
        skin_lab=tuple(float(x) for x in skin_lab),
        **_sample_colour(rng, skin_lab, malignant),
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


# --------------------------------------------------------------------------- measurement


def feret_diameters(points: np.ndarray) -> tuple[float, float]:
    """(max, min) caliper width of a point set: projections on directions every 1 degree, the
    minimum refined to 0.02 degree around the best coarse direction."""
    coarse = np.deg2rad(np.arange(0.0, 180.0, 1.0))
    widths = _widths(points, coarse)
    best = coarse[int(np.argmin(widths))]
    fine = best + np.deg2rad(np.linspace(-1.0, 1.0, 101))
    return float(widths.max()), float(min(widths.min(), _widths(points, fine).min()))


def _widths(points, angles):
    proj = points @ np.stack([np.cos(angles), np.sin(angles)])
    return proj.max(axis=0) - proj.min(axis=0)


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's approximation of an ellipse's perimeter from its semi-axes."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def _moments(mask: np.ndarray):
    """Mask pixel indices, their centroid, and the principal variances / major-axis angle
    (radians, from +x (columns) toward +y (rows)), in pixel units."""
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    sxx, syy = np.mean((xs - cx) ** 2), np.mean((ys - cy) ** 2)
    sxy = np.mean((xs - cx) * (ys - cy))
    half_diff = math.hypot((sxx - syy) / 2.0, sxy)
    lam1, lam2 = (sxx + syy) / 2.0 + half_diff, max((sxx + syy) / 2.0 - half_diff, 0.0)
    angle = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
    return xs, ys, (cx, cy), (lam1, lam2), angle


def mirror_asymmetry(mask, xs, ys, centroid, axis_angle: float) -> float:
    """1 - IoU(mask, mask mirrored about the line through ``centroid`` at ``axis_angle``);
    the mirror image is sampled at the nearest pixel, |mirror| taken as |mask|."""
    vx, vy = math.cos(axis_angle), math.sin(axis_angle)
    dx, dy = xs - centroid[0], ys - centroid[1]
    along = dx * vx + dy * vy
    mx = np.rint(centroid[0] + 2 * along * vx - dx).astype(np.intp)
    my = np.rint(centroid[1] + 2 * along * vy - dy).astype(np.intp)
    h, w = mask.shape
    inside = (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
    hits = int(mask[my[inside], mx[inside]].sum())
    return 1.0 - hits / (2 * xs.size - hits)


def shape_measures(tile: Tile) -> dict[str, float]:
    """Shape attributes from the mask and the contour (see ``measure``)."""
    mask, pix = tile.mask, tile.pixel_mm
    area = float(mask.sum()) * pix**2
    perimeter = polygon_length(tile.contour_mm)
    long_diam, short_diam = feret_diameters(tile.contour_mm)
    xs, ys, centroid, (lam1, lam2), angle = _moments(mask)
    equivalent = ellipse_perimeter(2.0 * math.sqrt(lam1) * pix, 2.0 * math.sqrt(lam2) * pix)
    border_excess = perimeter / equivalent - 1.0
    asym = [mirror_asymmetry(mask, xs, ys, centroid, angle + k * np.pi / 2) for k in (0, 1)]
    return {
        "tbp_lv_areaMM2": area,
        "tbp_lv_perimeterMM": perimeter,
        "tbp_lv_area_perim_ratio": perimeter**2 / area,
        "clin_size_long_diam_mm": long_diam,
        "tbp_lv_minorAxisMM": short_diam,
        "tbp_lv_eccentricity": math.sqrt(1.0 - lam2 / lam1) if lam1 > 0 else 0.0,
        "tbp_lv_norm_border": _index_0_10(_softplus(border_excess, 0.02), BORDER_SCALE),
        "tbp_lv_symm_2axis": float(np.mean(asym)),
        "tbp_lv_symm_2axis_angle": math.degrees(angle) % 180.0,
    }


def _index_0_10(value: float, scale: float) -> float:
    return 10.0 * min(max(value / scale, 0.0), 1.0)


def _softplus(x: float, sharpness: float) -> float:
    """s log(1 + exp(x / s)): ~max(x, 0), but > 0 (no natural zeros among the attributes,
    where SLICE-3D writes 0 for a missing value)."""
    return sharpness * math.log1p(math.exp(min(x / sharpness, 700.0)))


def dilate_square(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary dilation by a (2k+1) x (2k+1) square (Chebyshev distance <= k pixels)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask.copy()
    window = (slice(max(rows[0] - k, 0), rows[-1] + k + 1),
              slice(max(cols[0] - k, 0), cols[-1] + k + 1))
    out = np.zeros_like(mask)
    out[window] = _dilate_square_full(mask[window], k)
    return out


def _dilate_square_full(mask: np.ndarray, k: int) -> np.ndarray:
    out = mask
    for axis in (0, 1):
        padded = np.pad(out.astype(np.int32), [(k, k) if a == axis else (0, 0) for a in (0, 1)])
        csum = np.cumsum(padded, axis=axis)
        csum = np.concatenate([np.zeros_like(csum.take([0], axis=axis)), csum], axis=axis)
        n = out.shape[axis]
        upper = csum.take(np.arange(2 * k + 1, 2 * k + 1 + n), axis=axis)
        lower = csum.take(np.arange(n), axis=axis)
        out = (upper - lower) > 0
    return out


def _hue(a: float, b: float) -> float:
    return math.degrees(math.atan2(b, a))


def radial_color_std_max(lab_in: np.ndarray, xs, ys, centroid, sectors: int = SECTORS) -> float:
    """Colour asymmetry: mean L*a*b* in ``sectors`` equal angular sectors around the centroid
    (empty sectors skipped), std across sectors per channel, the max over channels."""
    phi = np.arctan2(ys - centroid[1], xs - centroid[0]) + np.pi
    sector = np.minimum((phi * sectors / (2 * np.pi)).astype(np.intp), sectors - 1)
    counts = np.bincount(sector, minlength=sectors)
    used = counts > 0
    means = [np.bincount(sector, lab_in[:, c], sectors)[used] / counts[used] for c in range(3)]
    return float(max(np.std(m) for m in means))


def region_stats(lab: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each L*a*b* channel over each boolean region:
    ``regions`` (R, H, W) -> two (R, 3) arrays."""
    weights = regions.reshape(len(regions), -1).astype(np.float64)
    pixels = lab.reshape(-1, 3).astype(np.float64)
    counts = weights.sum(axis=1)[:, None]
    mean = weights @ pixels / counts
    var = weights @ (pixels * pixels) / counts - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def colour_measures(lab: np.ndarray, mask: np.ndarray, pixel_mm: float) -> dict[str, float]:
    """Colour attributes from the L*a*b* pixels and the mask (see ``measure``)."""
    ring = dilate_square(mask, max(1, round(RING_MM / pixel_mm))) & ~mask
    (m_in, m_out, m_ring), (s_in, s_out, _) = region_stats(lab, np.stack([mask, ~mask, ring]))
    delta_lb = math.hypot(m_in[0] - m_ring[0], m_in[2] - m_ring[2])
    color_std_mean = float(s_in.mean())
    ys, xs = np.nonzero(mask)
    centroid = (xs.mean(), ys.mean())
    return {
        "tbp_lv_L": m_in[0], "tbp_lv_A": m_in[1], "tbp_lv_B": m_in[2],
        "tbp_lv_Lext": m_out[0], "tbp_lv_Aext": m_out[1], "tbp_lv_Bext": m_out[2],
        "tbp_lv_C": math.hypot(m_in[1], m_in[2]), "tbp_lv_Cext": math.hypot(m_out[1], m_out[2]),
        "tbp_lv_H": _hue(m_in[1], m_in[2]), "tbp_lv_Hext": _hue(m_out[1], m_out[2]),
        "tbp_lv_deltaL": m_in[0] - m_out[0], "tbp_lv_deltaA": m_in[1] - m_out[1],
        "tbp_lv_deltaB": m_in[2] - m_out[2],
        "tbp_lv_deltaLB": delta_lb,
        "tbp_lv_deltaLBnorm": delta_lb / max(float(s_out[0]), SKIN_STD_FLOOR),
        "tbp_lv_stdL": s_in[0], "tbp_lv_stdLExt": s_out[0],
        "tbp_lv_color_std_mean": color_std_mean,
        "tbp_lv_norm_color": _index_0_10(color_std_mean, COLOR_SCALE),
        "tbp_lv_radial_color_std_max": radial_color_std_max(lab[mask], xs, ys, centroid),
    }


def measure(tile: Tile) -> dict[str, float]:
    """The lesion's SLICE-3D measurements (``MEASURED_COLUMNS``), from the rendered tile.

    Shape (mask: the lesion's pixels; contour: ``tile.contour_mm``; mm, mm^2):
      tbp_lv_areaMM2           mask pixel count x pixel area.
      tbp_lv_perimeterMM       length of the contour polygon.
      tbp_lv_area_perim_ratio  perimeter^2 / areaMM2 ("border jaggedness"; 4 pi for a disc).
      clin_size_long_diam_mm   max Feret (caliper) diameter of the contour.
      tbp_lv_minorAxisMM       min Feret diameter (smallest caliper width) of the contour.
      tbp_lv_eccentricity      sqrt(1 - lam2 / lam1), lam1 >= lam2 the eigenvalues of the mask
                               pixels' coordinate covariance (0 for a disc).
      tbp_lv_norm_border       0-10 border irregularity: min(10, 10 softplus(q) / BORDER_SCALE),
                               q = perimeter / P_ell - 1, P_ell the (Ramanujan) perimeter of the
                               moment-equivalent ellipse (semi-axes 2 sqrt(lam1), 2 sqrt(lam2)),
                               softplus(q) = 0.02 log(1 + exp(q / 0.02)) (~max(q, 0), > 0).
      tbp_lv_symm_2axis        0-1 asymmetry: mean over the two principal axes (through the
                               centroid) of 1 - IoU(mask, mask mirrored about the axis)
                               (0 for a shape with two mirror axes: disc, ellipse).
      tbp_lv_symm_2axis_angle  angle of the major principal axis, degrees in [0, 180), from +x
                               (columns) toward +y (rows, downward).
    Colour (pixels in CIE L*a*b*, D65; inside = mask, outside = the rest of the tile):
      tbp_lv_L/A/B, _Lext/Aext/Bext  mean L*, a*, b* inside / outside.
      tbp_lv_C, _Cext          chroma sqrt(A^2 + B^2) of those means.
      tbp_lv_H, _Hext          hue angle atan2(B, A) of those means, degrees.
      tbp_lv_deltaL/A/B        inside minus outside mean.
      tbp_lv_deltaLB           sqrt(dL^2 + dB^2), d = inside mean minus the mean of the ring of
                               skin within RING_MM (Chebyshev distance) of the mask.
      tbp_lv_deltaLBnorm       deltaLB / max(stdLExt, SKIN_STD_FLOOR): contrast in units of the
                               skin's L variation.
      tbp_lv_stdL, _stdLExt    std of L* inside / outside.
      tbp_lv_color_std_mean    mean over L*, a*, b* of the std inside.
      tbp_lv_norm_color        0-10 colour variation: 10 * clip(color_std_mean / COLOR_SCALE, 0, 1).
      tbp_lv_radial_color_std_max  colour asymmetry: mean L*a*b* per each of 8 angular sectors
                               around the mask centroid, std across sectors per channel, max.
    """
    if not tile.mask.any() or tile.mask.all():
        raise ValueError("the lesion mask must be neither empty nor the whole tile")
    lab = rgb_to_lab(tile.rgb, dtype=np.float32)
    values = {**shape_measures(tile), **colour_measures(lab, tile.mask, tile.pixel_mm)}
    return {c: float(values[c]) for c in MEASURED_COLUMNS}


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Baseline JPEG bytes of a uint8 RGB tile (4:4:4, no chroma subsampling: small lesions
    keep their colour)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


# --------------------------------------------------------------------------- the cohort

SITES: dict[str | None, tuple[float, tuple[tuple[str, str], ...]]] = {
    # anatom_site_general: (probability, its (tbp_lv_location, tbp_lv_location_simple) values)
    "posterior torso": (0.32, (("Torso Back Top Third", "Torso Back"),
                               ("Torso Back Middle Third", "Torso Back"),
                               ("Torso Back Bottom Third", "Torso Back"))),
    "lower extremity": (0.26, (("Left Leg - Upper", "Left Leg"), ("Left Leg - Lower", "Left Leg"),
                               ("Right Leg - Upper", "Right Leg"),
                               ("Right Leg - Lower", "Right Leg"))),
    "anterior torso": (0.20, (("Torso Front Top Half", "Torso Front"),
                              ("Torso Front Bottom Half", "Torso Front"))),
    "upper extremity": (0.16, (("Left Arm - Upper", "Left Arm"), ("Left Arm - Lower", "Left Arm"),
                               ("Right Arm - Upper", "Right Arm"),
                               ("Right Arm - Lower", "Right Arm"))),
    "head/neck": (0.04, (("Head & Neck", "Head & Neck"),)),
    None: (0.02, (("Unknown", "Unknown"),)),
}
#: tbp_lv_y range (mm, feet at 0) per tbp_lv_location_simple.
BODY_HEIGHT_MM = {"Torso Back": (1050, 1450), "Torso Front": (1000, 1400),
                  "Left Leg": (50, 900), "Right Leg": (50, 900), "Left Arm": (950, 1400),
                  "Right Arm": (950, 1400), "Head & Neck": (1450, 1700), "Unknown": (0, 1700)}
ATTRIBUTIONS = (
    ("skinground synthetic demo, site A", "CC-0"),
    ("skinground synthetic demo, site B", "CC-BY"),
    ("skinground synthetic demo, site C", "CC-BY-NC"),
)
MALIGNANT_DIAGNOSES = (
    "Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma Invasive"
    "::Superficial spreading melanoma",
    "Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma in situ"
    "::Melanoma in situ, Superficial spreading",
    "Malignant::Malignant adnexal epithelial proliferations - Follicular::Basal cell carcinoma"
    "::Basal cell carcinoma, Nodular",
    "Malignant::Malignant adnexal epithelial proliferations - Follicular::Basal cell carcinoma"
    "::Basal cell carcinoma, Superficial",
    "Malignant::Malignant epidermal proliferations::Squamous cell carcinoma in situ",
)
DETAILED_BENIGN = (
    "Benign::Benign melanocytic proliferations::Nevus",
    "Benign::Benign melanocytic proliferations::Nevus::Nevus, Junctional",
    "Benign::Benign epidermal proliferations::Seborrheic keratosis",
    "Indeterminate::Indeterminate melanocytic proliferations::Atypical melanocytic neoplasm",
)
MITOTIC_INDEX = ("<1/mm^2", "0/mm^2", "1/mm^2", "2/mm^2", "3/mm^2")
_IMAGE_STREAM, _MISSING_STREAM = 1, 2


@dataclass(frozen=True)
class Patient:
    """Per-patient metadata and skin tone."""

    patient_id: str
    age_approx: float | None
    sex: str | None
    skin_lab: tuple[float, float, float]
    attribution: str
    license: str


def _distinct_ids(rng, prefix: str, n: int) -> list[str]:
    """``n`` distinct ids ``prefix`` + 7 digits, sorted."""
    return [f"{prefix}{k:07d}" for k in np.sort(rng.choice(10**7, size=n, replace=False))]


def _sample_patients(rng, n: int) -> list[Patient]:
    patients = []
    for pid in _distinct_ids(rng, "IP_", n):
        age = float(rng.integers(6, 18) * 5) if rng.uniform() > 0.02 else None
        sex = str(rng.choice(["male", "female"])) if rng.uniform() > 0.02 else None
        attribution, license_ = ATTRIBUTIONS[int(rng.integers(len(ATTRIBUTIONS)))]
        patients.append(Patient(pid, age, sex, sample_skin_tone(rng), attribution, license_))
    return patients


def _images_per_patient(rng, n_patients: int, n_images: int) -> np.ndarray:
    """Uneven counts, each >= 1: 1 + multinomial with log-normal(0, 1.2) patient weights."""
    weights = rng.lognormal(0.0, 1.2, n_patients)
    return 1 + rng.multinomial(n_images - n_patients, weights / weights.sum())


def _malignant_images(rng, patient_of: np.ndarray, n_patients: int, fraction: float):
    """Boolean per image: round(fraction * n) malignant (at least min(3, n) unless fraction is
    0), one in each of min(3, n_patients) distinct patients, the rest anywhere."""
    n = patient_of.size
    n_mal = 0 if fraction == 0 else min(n, max(round(fraction * n), 3))
    malignant = np.zeros(n, dtype=bool)
    spread = min(3, n_patients, n_mal)
    for p in rng.choice(n_patients, size=spread, replace=False):
        malignant[rng.choice(np.flatnonzero(patient_of == p))] = True
    rest = np.flatnonzero(~malignant)
    malignant[rng.choice(rest, size=n_mal - spread, replace=False)] = True
    return malignant


def tile_size(rng, min_px: int = 61, max_px: int = 239) -> int:
    """Tile side in px: log-normal around 130 (sigma 0.35), clipped to [min_px, max_px]."""
    return int(np.clip(round(rng.lognormal(math.log(130.0), 0.35)), min_px, max_px))


def _site_columns(rng) -> dict:
    sites = list(SITES)
    probs = np.array([SITES[s][0] for s in sites])
    site = sites[int(rng.choice(len(sites), p=probs / probs.sum()))]
    locations = SITES[site][1]
    location, simple = locations[int(rng.integers(len(locations)))]
    side = -1.0 if simple.startswith("Left") else 1.0 if simple.startswith("Right") else 0.0
    x = side * rng.uniform(80, 330) if side else rng.uniform(-150, 150)
    z = rng.uniform(-120, 120) + (-80 if "Back" in simple else 80 if "Front" in simple else 0)
    return {"anatom_site_general": site, "tbp_lv_location": location,
            "tbp_lv_location_simple": simple, "tbp_lv_x": round(float(x), 4),
            "tbp_lv_y": round(float(rng.uniform(*BODY_HEIGHT_MM[simple])), 4),
            "tbp_lv_z": round(float(z), 4)}


def _diagnosis_columns(rng, malignant: bool) -> dict:
    """iddx_full and its '::' levels iddx_1..5, lesion_id, mel_mitotic_index, mel_thick_mm."""
    detailed = malignant or rng.uniform() < 0.04
    if malignant:
        full = MALIGNANT_DIAGNOSES[int(rng.integers(len(MALIGNANT_DIAGNOSES)))]
    elif detailed:
        full = DETAILED_BENIGN[int(rng.integers(len(DETAILED_BENIGN)))]
    else:
        full = "Benign"
    levels = full.split("::") + [None] * 5
    invasive = "Melanoma Invasive" in full
    return {
        "iddx_full": full, **{f"iddx_{i + 1}": levels[i] for i in range(5)},
        "lesion_id": f"IL_{int(rng.integers(10**7)):07d}" if detailed else None,
        "mel_mitotic_index": str(rng.choice(MITOTIC_INDEX)) if invasive else None,
        "mel_thick_mm": round(float(rng.uniform(0.2, 1.6)), 2) if invasive else None,
    }


def _confidences(rng, malignant: bool) -> dict:
    nevi = rng.beta(0.8, 1.5) if malignant else rng.beta(2.0, 0.6)
    return {"tbp_lv_nevi_confidence": round(100.0 * float(nevi), 6),
            "tbp_lv_dnn_lesion_confidence": round(100.0 * (1.0 - float(rng.beta(0.3, 8.0))), 6)}


def make_image(seed: int, index: int, isic_id: str, patient: Patient, malignant: bool, *,
               min_px: int, max_px: int, fov_mm: float, jpeg_quality: int):
    """One image: (metadata row, JPEG bytes), from its own generator (seed, stream, index)."""
    rng = np.random.default_rng([seed, _IMAGE_STREAM, index])
    size = tile_size(rng, min_px, max_px)
    xp = bool(rng.uniform() < 0.3)
    variation = (rng.normal(0.0, 2.0), rng.normal(0.0, 1.0), rng.normal(0.0, 1.5))
    chroma = 1.15 if xp else 1.0  # cross-polarised tiles look more saturated
    skin = (patient.skin_lab[0] + variation[0], chroma * (patient.skin_lab[1] + variation[1]),
            chroma * (patient.skin_lab[2] + variation[2]))
    lesion = sample_lesion(rng, skin_lab=skin, fov_mm=fov_mm, malignant=malignant)
    tile = render_tile(rng, size, fov_mm, lesion)
    row = {
        ID_COLUMN: isic_id, TARGET_COLUMN: int(malignant), PATIENT_COLUMN: patient.patient_id,
        "age_approx": patient.age_approx, "sex": patient.sex,
        "image_type": "TBP tile: close-up", "tbp_tile_type": "3D: XP" if xp else "3D: white",
        "attribution": patient.attribution, "copyright_license": patient.license,
        **{k: round(v, 6) for k, v in measure(tile).items()},
        **_site_columns(rng), **_diagnosis_columns(rng, malignant), **_confidences(rng, malignant),
    }
    return row, encode_jpeg(tile.rgb, jpeg_quality)


def _blank_cells(seed: int, ids: list[str], fraction: float) -> list[tuple[str, str, str]]:
    """round(fraction * cells) (image, PAPER_ATTRIBUTES) cells, sorted, the first half of the
    draw (rounded up) to become null, the rest 0: (isic_id, column, "null" | "zero")."""
    rng = np.random.default_rng([seed, _MISSING_STREAM])
    n_attr = len(PAPER_ATTRIBUTES)
    k = round(fraction * len(ids) * n_attr)
    picks = rng.choice(len(ids) * n_attr, size=k, replace=False)
    kinds = ["null" if i < (k + 1) // 2 else "zero" for i in range(k)]
    cells = [(ids[p // n_attr], PAPER_ATTRIBUTES[p % n_attr], kind)
             for p, kind in zip(picks.tolist(), kinds, strict=True)]
    return sorted(cells)


_STRING_COLUMNS = {"isic_id", "patient_id", "sex", "anatom_site_general", "image_type",
                   "tbp_tile_type", "tbp_lv_location", "tbp_lv_location_simple", "attribution",
                   "copyright_license", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3",
                   "iddx_4", "iddx_5", "mel_mitotic_index"}


def _schema() -> dict[str, pl.DataType]:
    def dtype(col):
        if col in _STRING_COLUMNS:
            return pl.String
        return pl.Int64 if col == TARGET_COLUMN else pl.Float64
    return {c: dtype(c) for c in METADATA_COLUMNS}


def generate(metadata_csv: str | os.PathLike, images_hdf5: str | os.PathLike, *,
             n_patients: int = 40, n_images: int = 1500, seed: int = 0, min_px: int = 61,
             max_px: int = 239, fov_mm: float = FOV_MM, jpeg_quality: int = 90,
             missing_fraction: float = 0.01, malignant_fraction: float = 0.03) -> dict:
    """Write a synthetic SLICE-3D: ``metadata_csv`` (55 columns) and ``images_hdf5``.

    Both outputs appear atomically (a failure leaves neither half-written). The same arguments
    give a byte-identical CSV and identical HDF5 contents. Cohort-level draws use
    ``default_rng(seed)``; image i uses ``default_rng([seed, 1, i])``, the missing-value cells
    ``default_rng([seed, 2])``. Returns a summary, with every blanked cell.
    """
    if n_images < 1 or n_patients < 1:
        raise ValueError("need at least one image and one patient")
    if not 1 <= min_px <= max_px:
        raise ValueError(f"need 1 <= min_px <= max_px, got min_px={min_px}, max_px={max_px}")
    if not (0.0 <= missing_fraction <= 1.0 and 0.0 <= malignant_fraction <= 1.0):
        raise ValueError("missing_fraction and malignant_fraction must be in [0, 1]")
    rng = np.random.default_rng(seed)
    n_patients = min(n_patients, n_images)
    patients = _sample_patients(rng, n_patients)
    counts = _images_per_patient(rng, n_patients, n_images)
    patient_of = rng.permutation(np.repeat(np.arange(n_patients), counts))
    malignant = _malignant_images(rng, patient_of, n_patients, malignant_fraction)
    ids = _distinct_ids(rng, "ISIC_", n_images)
    cells = _blank_cells(seed, ids, missing_fraction)
    blank = {(i, c): kind for i, c, kind in cells}
    rows, sizes = [], []
    with atomic_path(metadata_csv) as tmp_csv, atomic_path(images_hdf5) as tmp_h5:
        with h5py.File(tmp_h5, "w") as h5:
            for index, isic_id in enumerate(ids):
                row, jpeg = make_image(seed, index, isic_id, patients[patient_of[index]],
                                       bool(malignant[index]), min_px=min_px, max_px=max_px,
                                       fov_mm=fov_mm, jpeg_quality=jpeg_quality)
                h5.create_dataset(isic_id, data=np.bytes_(jpeg))
                for col in PAPER_ATTRIBUTES:
                    if (isic_id, col) in blank:
                        row[col] = None if blank[isic_id, col] == "null" else 0.0
                rows.append(row)
                sizes.append(Image.open(io.BytesIO(jpeg)).size[0])
        frame = pl.DataFrame(rows, schema=_schema())
        frame.select(METADATA_COLUMNS).write_csv(tmp_csv)
    return _summary(seed, patients, counts, malignant, patient_of, sizes, cells,
                    missing_fraction, metadata_csv, images_hdf5)


def _summary(seed, patients, counts, malignant, patient_of, sizes, cells, fraction,
             metadata_csv, images_hdf5) -> dict:
    return {
        "seed": seed,
        "metadata_csv": str(Path(metadata_csv)),
        "images_hdf5": str(Path(images_hdf5)),
        "images": int(patient_of.size),
        "patients": len(patients),
        "malignant": int(malignant.sum()),
        "malignant_patients": int(np.unique(patient_of[malignant]).size),
        "images_per_patient": {"min": int(counts.min()), "median": float(np.median(counts)),
                               "max": int(counts.max())},
        "size_px": {"min": int(min(sizes)), "median": float(np.median(sizes)),
                    "max": int(max(sizes))},
        "missing": {"fraction": fraction, "cells": len(cells),
                    "null": sum(k == "null" for *_, k in cells),
                    "zero": sum(k == "zero" for *_, k in cells),
                    "blanked": [list(c) for c in cells]},
    }
