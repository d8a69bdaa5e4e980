"""The lesion's SLICE-3D measurements, computed from a rendered tile (:func:`measure`): shape
from its mask and contour, colour from its pixels in CIE L*a*b*."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from skinground.data.attributes import METADATA_COLUMNS, NUMERIC_COLUMNS
from skinground.demo.color import rgb_to_lab
from skinground.demo.lesions import Tile, polygon_length

#: Width of the ring of "immediate surrounding skin" used by deltaLB.
RING_MM = 1.0
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


