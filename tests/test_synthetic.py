"""The synthetic SLICE-3D demo: file format, attributes that agree with the images,
determinism, missing values, and the colour conversion."""

from __future__ import annotations

import io
import math

import h5py
import numpy as np
import polars as pl
import pytest
from PIL import Image

from skinground.data.attributes import METADATA_COLUMNS, PAPER_ATTRIBUTES
from skinground.demo.color import lab_to_rgb, rgb_to_lab
from skinground.demo.lesions import LesionParams, render_tile
from skinground.demo.measure import measure
from skinground.demo.synthetic import generate

N_IMAGES, N_PATIENTS, SEED = 60, 3, 7


def _generate(directory, **kwargs):
    csv, h5 = directory / "train-metadata.csv", directory / "train-image.hdf5"
    summary = generate(csv, h5, n_patients=N_PATIENTS, n_images=N_IMAGES, **kwargs)
    return csv, h5, summary


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("demo"), seed=SEED)


@pytest.fixture(scope="module")
def frame(demo):
    return pl.read_csv(demo[0], infer_schema_length=None)


@pytest.fixture(scope="module")
def images(demo, frame):
    with h5py.File(demo[1], "r") as f:
        return {i: f[i][()] for i in frame["isic_id"]}


def _blanked(summary) -> set[tuple[str, str]]:
    return {(i, c) for i, c, _ in summary["missing"]["blanked"]}


# --------------------------------------------------------------------------- format


def test_csv_has_the_55_columns_in_order_and_unique_ids(frame, demo):
    assert tuple(frame.columns) == METADATA_COLUMNS
    assert frame.height == N_IMAGES and frame["isic_id"].n_unique() == N_IMAGES
    assert all(len(i) == 12 and i.startswith("ISIC_") and i[5:].isdigit()
               for i in frame["isic_id"])
    assert all(p.startswith("IP_") and len(p) == 10 for p in frame["patient_id"])
    assert frame["patient_id"].n_unique() == N_PATIENTS == demo[2]["patients"]
    assert set(frame["target"]) == {0, 1}
    assert demo[2]["malignant_patients"] >= min(3, N_PATIENTS)
    assert set(frame["image_type"]) == {"TBP tile: close-up"}
    assert set(frame["tbp_tile_type"]) <= {"3D: white", "3D: XP"}
    malignant = frame.filter(pl.col("target") == 1)
    assert all(d.startswith("Malignant::") for d in malignant["iddx_full"])
    assert (malignant["iddx_1"] == "Malignant").all()


def test_every_image_is_a_square_rgb_jpeg_in_range(demo, frame, images):
    with h5py.File(demo[1], "r") as f:
        assert set(f.keys()) == set(frame["isic_id"])
        first = f[frame["isic_id"][0]]
        assert first.shape == () and isinstance(first[()], bytes)
    for data in images.values():
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.mode == "RGB"
        assert img.size[0] == img.size[1] and 61 <= img.size[0] <= 239


def test_attributes_vary_across_tiles(frame):
    for col in PAPER_ATTRIBUTES:
        values = frame[col].drop_nulls().to_numpy()
        values = values[values != 0]
        assert np.unique(values).size > 0.8 * values.size, col
        assert values.std() > 0.05 * (np.abs(values).mean() + 1e-9), col


# --------------------------------------------------------------------------- agreement


def _box3(x: np.ndarray) -> np.ndarray:
    p = np.pad(x, 1, mode="edge")
    return sum(p[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3)) / 9


def _reconstruct(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The 4-connected component(s) of ``allowed`` that touch ``seed``."""
    region = seed & allowed
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= allowed
        if (grown == region).all():
            return region
        region = grown


def segment(lab: np.ndarray, threshold: float) -> np.ndarray:
    """Lesion = the dark (3x3-smoothed L < threshold) component at the tile centre, holes
    filled."""
    dark = _box3(lab[..., 0]) < threshold
    n = dark.shape[0]
    seed = np.zeros_like(dark)
    seed[n // 2 - 1:n // 2 + 2, n // 2 - 1:n // 2 + 2] = True
    lesion = _reconstruct(seed, dark)
    border = np.zeros_like(dark)
    border[[0, -1], :] = border[:, [0, -1]] = True
    return ~_reconstruct(border, ~lesion)


def test_attributes_agree_with_the_images(demo, frame, images):
    blanked = _blanked(demo[2])
    area_err, colour_err = [], []
    for row in frame.iter_rows(named=True):
        img = np.asarray(Image.open(io.BytesIO(images[row["isic_id"]])).convert("RGB"))
        lab = rgb_to_lab(img)
        lesion = segment(lab, (row["tbp_lv_L"] + row["tbp_lv_Lext"]) / 2)
        assert lesion.any() and not lesion.all(), row["isic_id"]
        area = lesion.sum() * (15.0 / img.shape[0]) ** 2
        if (row["isic_id"], "tbp_lv_areaMM2") not in blanked:
            rel = abs(area - row["tbp_lv_areaMM2"]) / row["tbp_lv_areaMM2"]
            area_err.append(rel)
            if row["tbp_lv_areaMM2"] > 4.0:
                assert rel < 0.25, (row["isic_id"], area, row["tbp_lv_areaMM2"])
        inside, outside = lab[lesion].mean(axis=0), lab[~lesion].mean(axis=0)
        for col, value in [("tbp_lv_L", inside[0]), ("tbp_lv_A", inside[1]),
                           ("tbp_lv_B", inside[2]), ("tbp_lv_Lext", outside[0]),
                           ("tbp_lv_Aext", outside[1]), ("tbp_lv_Bext", outside[2])]:
            if (row["isic_id"], col) not in blanked:
                colour_err.append(abs(value - row[col]))
                assert abs(value - row[col]) < 4.0, (row["isic_id"], col, value, row[col])
    assert np.median(area_err) < 0.10
    assert np.median(colour_err) < 1.0


def test_derived_colour_columns_are_consistent(frame):
    for row in frame.iter_rows(named=True):
        assert math.isclose(row["tbp_lv_C"], math.hypot(row["tbp_lv_A"] or 0, row["tbp_lv_B"]
                                                        or 0), abs_tol=1e-4) or any(
            row[c] in (None, 0.0) for c in ("tbp_lv_A", "tbp_lv_B"))
        assert math.isclose(row["tbp_lv_Lext"] + row["tbp_lv_deltaL"] or 0.0, row["tbp_lv_L"],
                            abs_tol=1e-4) or row["tbp_lv_deltaL"] in (None, 0.0)


def test_disc_measures_like_a_circle():
    radius = 3.0
    tile = render_tile(np.random.default_rng(0), 200,
                       lesion=LesionParams(semi_axes_mm=(radius, radius)))
    m = measure(tile)
    assert m["tbp_lv_areaMM2"] == pytest.approx(math.pi * radius**2, rel=0.01)
    assert m["tbp_lv_area_perim_ratio"] == pytest.approx(4 * math.pi, rel=0.01)
    assert m["clin_size_long_diam_mm"] == pytest.approx(2 * radius, abs=0.01)
    assert m["tbp_lv_minorAxisMM"] == pytest.approx(2 * radius, abs=0.01)
    assert m["tbp_lv_eccentricity"] < 0.1
    assert m["tbp_lv_symm_2axis"] < 0.03
    assert m["tbp_lv_norm_border"] < 0.5
    assert m["tbp_lv_radial_color_std_max"] < 0.5  # flat lesion colour, no gradient


def test_ellipse_measures_like_an_ellipse():
    a, b = 4.0, 2.0
    tile = render_tile(np.random.default_rng(1), 200,
                       lesion=LesionParams(semi_axes_mm=(a, b), rotation=math.radians(30)))
    m = measure(tile)
    assert m["tbp_lv_areaMM2"] == pytest.approx(math.pi * a * b, rel=0.01)
    assert m["clin_size_long_diam_mm"] == pytest.approx(2 * a, abs=0.02)
    assert m["tbp_lv_minorAxisMM"] == pytest.approx(2 * b, abs=0.02)
    assert m["tbp_lv_eccentricity"] == pytest.approx(math.sqrt(1 - (b / a) ** 2), abs=0.02)
    assert m["tbp_lv_symm_2axis_angle"] == pytest.approx(30.0, abs=1.0)
    assert m["tbp_lv_norm_border"] < 0.5


def test_jagged_coloured_lesion_scores_higher():
    smooth = LesionParams(semi_axes_mm=(3.0, 3.0))
    jagged = LesionParams(semi_axes_mm=(3.0, 3.0),
                          harmonics=((3, 0.15, 0.0), (11, 0.08, 1.0), (17, 0.05, 2.0)),
                          variation=(10.0, 4.0, 5.0), gradient=(10.0, 4.0, 4.0))
    m0, m1 = (measure(render_tile(np.random.default_rng(2), 150, lesion=x))
              for x in (smooth, jagged))
    for col in ("tbp_lv_area_perim_ratio", "tbp_lv_norm_border", "tbp_lv_symm_2axis",
                "tbp_lv_norm_color", "tbp_lv_radial_color_std_max", "tbp_lv_stdL"):
        assert m1[col] > m0[col], col


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path):
    csv, h5, summary = _generate(tmp_path / "again", seed=SEED)
    assert csv.read_bytes() == demo[0].read_bytes()
    assert summary["missing"] == demo[2]["missing"]
    with h5py.File(h5, "r") as a, h5py.File(demo[1], "r") as b:
        assert sorted(a) == sorted(b)
        assert all(a[k][()] == b[k][()] for k in a)
    other, _, _ = _generate(tmp_path / "other", seed=SEED + 1)
    assert other.read_bytes() != demo[0].read_bytes()


def test_failure_leaves_no_outputs(tmp_path, monkeypatch):
    import skinground.demo.synthetic as synthetic

    calls = []

    def failing_encode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return encode(*args, **kwargs)

    encode = synthetic.encode_jpeg
    monkeypatch.setattr(synthetic, "encode_jpeg", failing_encode)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "m.csv", tmp_path / "i.hdf5", n_images=5, n_patients=2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="min_px"):
        generate(tmp_path / "m.csv", tmp_path / "i.hdf5", n_images=4, min_px=100, max_px=90)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- missing values


def test_missing_cells_are_the_recorded_ones(demo, frame):
    summary = demo[2]["missing"]
    cells = N_IMAGES * len(PAPER_ATTRIBUTES)
    assert summary["cells"] == round(0.01 * cells) > 0
    assert abs(summary["null"] - summary["zero"]) <= 1
    blank = 0
    recorded = {(i, c): k for i, c, k in summary["blanked"]}
    for row in frame.iter_rows(named=True):
        for col in PAPER_ATTRIBUTES:
            kind = "null" if row[col] is None else "zero" if row[col] == 0.0 else None
            assert recorded.get((row["isic_id"], col)) == kind, (row["isic_id"], col)
            blank += kind is not None
    assert abs(blank / cells - 0.01) < 0.005


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize(("rgb", "lab"), [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
    ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ((0.5, 0.5, 0.5), (53.3890, 0.0, 0.0)),
])
def test_rgb_to_lab_known_values(rgb, lab):
    assert rgb_to_lab(np.array(rgb)) == pytest.approx(lab, abs=1e-3)
    assert lab_to_rgb(np.array(lab)) == pytest.approx(rgb, abs=1e-4)


def test_uint8_and_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    lab = rgb_to_lab(pixels)
    assert lab.shape == (50, 40, 3)
    assert np.allclose(lab, rgb_to_lab(pixels / 255.0))
    assert np.array_equal(lab_to_rgb(lab, as_uint8=True), pixels)
    assert np.abs(rgb_to_lab(pixels, dtype=np.float32) - lab).max() < 1e-3
