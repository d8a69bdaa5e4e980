"""A synthetic dataset in SLICE-3D's exact file format: the workflow's embedded demo.

``generate`` writes ``train-metadata.csv`` (all 55 ``METADATA_COLUMNS``, in order) and
``train-image.hdf5`` (one scalar bytes dataset of JPEG data per ``isic_id``). Each image is a
square tile of 61-239 px covering a 15 mm x 15 mm field of view, showing skin with one
pigmented lesion (``render_tile``). Every lesion measurement in the CSV is computed from the
rendered tile (``measure``): from its mask, its contour and its pixels in CIE L*a*b*.

The lesions are :mod:`skinground.demo.lesions`' (parameters, sampling, rendering) and their
measurements :mod:`skinground.demo.measure`'s; this module draws the cohort (patients, images per
patient, sites, diagnoses) and writes the files.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl
from PIL import Image

from skinground.core.io import atomic_path
from skinground.data.attributes import (
    ID_COLUMN,
    METADATA_COLUMNS,
    PAPER_ATTRIBUTES,
    PATIENT_COLUMN,
    TARGET_COLUMN,
)
from skinground.demo.lesions import FOV_MM, render_tile, sample_lesion, sample_skin_tone
from skinground.demo.measure import encode_jpeg, measure

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


#: SLICE-3D's cohort: patients, images and malignant images (ISIC 2024 train set).
SLICE3D_PATIENTS = 1042
SLICE3D_IMAGES = 401_059
SLICE3D_MALIGNANT = 393




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
               min_px: int, max_px: int, fov_mm: float, jpeg_quality: int,
               size_coupling: float = 0.0):
    """One image: (metadata row, JPEG bytes), from its own generator (seed, stream, index)."""
    rng = np.random.default_rng([seed, _IMAGE_STREAM, index])
    size = tile_size(rng, min_px, max_px)
    xp = bool(rng.uniform() < 0.3)
    variation = (rng.normal(0.0, 2.0), rng.normal(0.0, 1.0), rng.normal(0.0, 1.5))
    chroma = 1.15 if xp else 1.0  # cross-polarised tiles look more saturated
    skin = (patient.skin_lab[0] + variation[0], chroma * (patient.skin_lab[1] + variation[1]),
            chroma * (patient.skin_lab[2] + variation[2]))
    lesion = sample_lesion(rng, skin_lab=skin, fov_mm=fov_mm, malignant=malignant,
                           size_coupling=size_coupling)
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
             missing_fraction: float = 0.01, malignant_fraction: float = 0.03,
             size_coupling: float = 0.0) -> dict:
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
                                       fov_mm=fov_mm, jpeg_quality=jpeg_quality,
                                       size_coupling=size_coupling)
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
