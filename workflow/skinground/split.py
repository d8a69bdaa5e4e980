"""Patient-level train/test split: no patient has images in both sets.

The paper splits SLICE-3D's 1,042 patients into 802 train and 240 test patients
(``test_fraction`` ≈ 0.2303). Optionally the split is stratified by ``target``: patients
with at least one malignant lesion and patients with none are split separately, each with
the same test fraction, so both sets get malignant cases.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from skinground.attributes import ID_COLUMN, PATIENT_COLUMN, TARGET_COLUMN
from skinground.errors import InputError


class SplitError(InputError):
    pass


def split_patients(
    manifest: pl.DataFrame, *, test_fraction: float, seed: int, stratify_by_target: bool
) -> pl.DataFrame:
    """Assign each image to ``train`` or ``test`` by its patient.

    Deterministic for a given manifest content, fraction and seed: patients are sorted by id
    before the seeded shuffle, so the order of rows in the CSV does not matter. Returns
    ``isic_id, patient_id, target, split`` sorted by ``isic_id``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"split.test_fraction must be in (0, 1), got {test_fraction}")
    patients = (
        manifest.group_by(PATIENT_COLUMN)
        .agg(pl.col(TARGET_COLUMN).max().alias("malignant"))
        .sort(PATIENT_COLUMN)
    )
    if patients.height < 2:
        raise SplitError(f"need at least 2 patients to split, found {patients.height}")
    groups = [True, False] if stratify_by_target else [None]
    rng = np.random.default_rng(seed)
    test: list[str] = []
    for malignant in groups:
        group = patients if malignant is None else patients.filter(
            pl.col("malignant") == int(malignant)
        )
        ids = group[PATIENT_COLUMN].to_numpy()
        n_test = int(round(test_fraction * len(ids)))
        test.extend(ids[rng.permutation(len(ids))[:n_test]].tolist())
    if not test or len(test) == patients.height:
        raise SplitError(
            f"split.test_fraction={test_fraction} leaves an empty set for "
            f"{patients.height} patients"
        )
    assigned = manifest.select(ID_COLUMN, PATIENT_COLUMN, TARGET_COLUMN).with_columns(
        pl.when(pl.col(PATIENT_COLUMN).is_in(test)).then(pl.lit("test"))
        .otherwise(pl.lit("train")).alias("split")
    ).sort(ID_COLUMN)
    check_disjoint(assigned)
    return assigned


def check_disjoint(assigned: pl.DataFrame) -> None:
    """Raise if any patient has images in more than one split."""
    shared = (
        assigned.group_by(PATIENT_COLUMN).agg(pl.col("split").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
    )
    if shared.height:
        raise SplitError(f"patients in both sets: {shared[PATIENT_COLUMN].to_list()[:5]}")


def summarize(assigned: pl.DataFrame) -> dict:
    """Patients, images and malignant counts per split (the split's JSON summary)."""
    out = {}
    for name in ("train", "test"):
        part = assigned.filter(pl.col("split") == name)
        out[name] = {
            "patients": part[PATIENT_COLUMN].n_unique(),
            "images": part.height,
            "malignant_images": int(part[TARGET_COLUMN].sum()),
            "malignant_patients": part.filter(pl.col(TARGET_COLUMN) == 1)[PATIENT_COLUMN]
            .n_unique(),
        }
    out["test_fraction_of_patients"] = out["test"]["patients"] / (
        out["train"]["patients"] + out["test"]["patients"]
    )
    return out
