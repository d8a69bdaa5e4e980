"""Patient-level train/test split: no patient has images in both sets.

The paper splits SLICE-3D's 1,042 patients into 802 train and 240 test patients
(``test_fraction`` ≈ 0.2303) holding 282,564 and 118,495 images: its test patients hold 29.5%
of the images, not 23%, since total-body photography gives some patients far more lesions
than others. A random choice of 240 patients misses that by tens of thousands of images.

So the split can target both counts at once (``test_image_fraction``, of the images): a seeded
random choice of the patients (per stratum), then patient swaps (a test patient for a train
patient of the same stratum) until the test images reach the target. Each swap moves the
count by at most about one patient's worth of images (the median patient's count, or what is
left of the gap when that is less), so the adjustment spreads over many ordinary patients
rather than a few extreme ones; test patients are visited in a seeded random order. It stops
on the exact count, or when no swap brings it closer. Stratification costs nothing here: the
strata keep their patient counts, and a swap within a stratum can move the images by any
difference of two of its patients' counts.

Optionally the split is stratified by ``target``: patients with at least one malignant lesion
and patients with none are split separately, each with the same test fraction, so both sets
get malignant cases.

A run may use a share of the patients (``patient_fraction`` < 1: a pilot run): a seeded sample
of that share of the patients per stratum (one at least), brought by the same patient swaps to
that share of the images, so a pilot's size, and cost, is what the fraction says even though
a few patients hold thousands of images. The sample is then split as above; the other
patients' images are in neither set.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from skinground.core.errors import InputError
from skinground.data.attributes import ID_COLUMN, PATIENT_COLUMN, TARGET_COLUMN

log = logging.getLogger(__name__)

class SplitError(InputError):
    pass


def split_patients(
    manifest: pl.DataFrame, *, patient_fraction: float, test_fraction: float, seed: int,
    stratify_by_target: bool, test_image_fraction: float | None = None,
) -> pl.DataFrame:
    """Assign each image to ``train`` or ``test`` by its patient.

    With ``patient_fraction`` < 1, only a seeded sample of the patients is split
    (:func:`sample_patients`); the others' images are left out. ``test_fraction`` of the
    patients (per stratum) go to test; with ``test_image_fraction``, patient swaps then bring
    the test images to ``round(test_image_fraction x images)`` (:func:`match_image_count`).
    Deterministic for a given manifest content, fractions and seed: patients are sorted by id
    before the seeded shuffle, so the order of rows in the CSV does not matter. Returns
    ``isic_id, patient_id, target, split`` sorted by ``isic_id``.
    """
    if not 0.0 < patient_fraction <= 1.0:
        raise SplitError(f"split.patient_fraction must be in (0, 1], got {patient_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"split.test_fraction must be in (0, 1), got {test_fraction}")
    if test_image_fraction is not None and not 0.0 < test_image_fraction < 1.0:
        raise SplitError("split.test_image_fraction must be in (0, 1) or null, got "
                         f"{test_image_fraction}")
    patients = (
        manifest.group_by(PATIENT_COLUMN)
        .agg(pl.col(TARGET_COLUMN).max().alias("malignant"), pl.len().alias("images"))
        .sort(PATIENT_COLUMN)
    )
    if patients.height < 2:
        raise SplitError(f"need at least 2 patients to split, found {patients.height}")
    groups = [True, False] if stratify_by_target else [None]
    rng = np.random.default_rng(seed)
    if patient_fraction < 1.0:
        everyone = patients
        patients = sample_patients(patients, patient_fraction, groups, rng)
        if patients.height < 2:
            raise SplitError(f"split.patient_fraction={patient_fraction} keeps "
                             f"{patients.height} of the {everyone.height} patients: at least "
                             "2 are needed to split")
        manifest = manifest.filter(pl.col(PATIENT_COLUMN).is_in(
            patients[PATIENT_COLUMN].to_list()))
        log.info("split.patient_fraction %s: %d of the %d patients, %d of the %d images",
                 patient_fraction, patients.height, everyone.height, manifest.height,
                 int(everyone["images"].sum()))
    in_test = np.zeros(patients.height, dtype=bool)
    stratum = np.zeros(patients.height, dtype=np.int64)
    malignant_flags = patients["malignant"].to_numpy()
    for s, malignant in enumerate(groups):
        members = (np.arange(patients.height) if malignant is None
                   else np.flatnonzero(malignant_flags == int(malignant)))
        stratum[members] = s
        n_test = int(round(test_fraction * len(members)))
        in_test[members[rng.permutation(len(members))[:n_test]]] = True
    if test_image_fraction is not None:
        counts = patients["images"].to_numpy().astype(np.int64)
        target = int(round(test_image_fraction * counts.sum()))
        in_test = match_image_count(in_test, counts, stratum, target, rng)
    test = patients[PATIENT_COLUMN].filter(pl.Series(in_test)).to_list()
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


def target_images(images: int, *, patient_fraction: float, test_fraction: float,
                  test_image_fraction: float | None, **_) -> tuple[int, int]:
    """The train and test images a split (``split``'s keys) of a cohort of ``images`` aims
    at: its sample's ``round(patient_fraction x images)``, of which
    ``round(test_image_fraction x those)`` test, or with that null ``test_fraction``'s share
    (patients are the target then, so that is a mean). What the cost of a run on a sample is
    estimated from (the pilot's: docs/cluster.md)."""
    used = int(round(patient_fraction * images))
    test = int(round((test_fraction if test_image_fraction is None else test_image_fraction)
                     * used))
    return used - test, test


def sample_patients(patients: pl.DataFrame, fraction: float, groups: list,
                    rng: np.random.Generator) -> pl.DataFrame:
    """The rows of ``patients`` (``patient_id, malignant, images``, sorted by id) of a
    seeded sample: ``round(fraction x patients)`` of each stratum of ``groups`` (at least one),
    then swapped within the strata (:func:`match_image_count`) until they hold
    ``round(fraction x images)`` images, or no swap gets closer."""
    flags = patients["malignant"].to_numpy()
    keep = np.zeros(patients.height, dtype=bool)
    stratum = np.zeros(patients.height, dtype=np.int64)
    for s, malignant in enumerate(groups):
        members = (np.arange(patients.height) if malignant is None
                   else np.flatnonzero(flags == int(malignant)))
        if not len(members):
            continue
        stratum[members] = s
        n_keep = max(1, int(round(fraction * len(members))))
        keep[members[rng.permutation(len(members))[:n_keep]]] = True
    counts = patients["images"].to_numpy().astype(np.int64)
    keep = match_image_count(keep, counts, stratum, int(round(fraction * counts.sum())), rng)
    return patients.filter(pl.Series(keep))


def match_image_count(in_test: np.ndarray, counts: np.ndarray, stratum: np.ndarray,
                      target: int, rng: np.random.Generator) -> np.ndarray:
    """Swap patients in the mask ``in_test`` (the test patients, or a sample's) for patients
    outside it of the same stratum until the images of those in it (``counts``) sum to
    ``target``, or no swap gets closer; returns the new mask.

    A pass visits the test patients in a random order; for each, the train patient of its
    stratum whose count best moves the gap by ``step`` (the gap, capped at the median
    patient's count in size) is swapped in when that strictly shrinks the gap. Passes repeat
    until the gap is 0 or a pass swaps nobody.
    """
    in_test = in_test.copy()
    cap = max(1, int(np.median(counts)))
    gap = target - int(counts[in_test].sum())
    while gap:
        swapped = False
        for t in rng.permutation(np.flatnonzero(in_test)):
            if not gap:
                break
            if not in_test[t]:
                continue
            pool = np.flatnonzero(~in_test & (stratum == stratum[t]))
            if not pool.size:
                continue
            step = int(np.clip(gap, -cap, cap))
            change = counts[pool] - counts[t]  # what swapping t for each pool patient moves
            r = pool[int(np.argmin(np.abs(change - step)))]
            moved = int(counts[r] - counts[t])
            if abs(gap - moved) < abs(gap):
                in_test[t], in_test[r] = False, True
                gap -= moved
                swapped = True
        if not swapped:
            break
    return in_test


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
    out["test_fraction_of_images"] = out["test"]["images"] / assigned.height
    return out
