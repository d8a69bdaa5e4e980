"""Patient-level split: disjoint, deterministic, stratified."""

import numpy as np
import polars as pl
import pytest

from skinground.data.split import SplitError, check_disjoint, split_patients, summarize
from skinground.data.tuples import sample_tuples

from reference import paper_shaped_cohort

#: Every patient (split.patient_fraction 1: the paper's run).
WHOLE = {"patient_fraction": 1.0}


def manifest(n_patients=50, per_patient=7, malignant_every=5, seed_shift=0) -> pl.DataFrame:
    rows = []
    for p in range(n_patients):
        for j in range(per_patient + p % 4):
            rows.append({"isic_id": f"ISIC_{p:04d}{j:03d}", "patient_id": f"IP_{p:07d}",
                         "target": int(p % malignant_every == 0 and j == 0)})
    return pl.DataFrame(rows)


def test_no_patient_in_both_sets():
    out = split_patients(manifest(), **WHOLE, test_fraction=0.23, seed=1, stratify_by_target=True)
    train = set(out.filter(pl.col("split") == "train")["patient_id"])
    test = set(out.filter(pl.col("split") == "test")["patient_id"])
    assert train and test and not train & test
    assert len(train) + len(test) == 50
    assert out.height == manifest().height


def test_deterministic_and_independent_of_row_order():
    m = manifest()
    a = split_patients(m, **WHOLE, test_fraction=0.23, seed=3, stratify_by_target=True)
    b = split_patients(m.sample(fraction=1.0, shuffle=True, seed=9), **WHOLE, test_fraction=0.23,
                       seed=3, stratify_by_target=True)
    assert a.equals(b)
    c = split_patients(m, **WHOLE, test_fraction=0.23, seed=4, stratify_by_target=True)
    assert not a.equals(c)


def test_test_fraction_of_patients():
    out = split_patients(manifest(n_patients=100), **WHOLE, test_fraction=0.2303, seed=0,
                         stratify_by_target=False)
    s = summarize(out)
    assert s["test"]["patients"] == 23 and s["train"]["patients"] == 77


def test_stratified_split_puts_malignant_patients_in_both_sets():
    for seed in range(5):
        s = summarize(split_patients(manifest(), **WHOLE, test_fraction=0.3, seed=seed,
                                     stratify_by_target=True))
        assert s["train"]["malignant_patients"] == 7  # 10 malignant patients, 3 to test
        assert s["test"]["malignant_patients"] == 3


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_bad_fraction_is_an_error(fraction):
    with pytest.raises(SplitError, match="test_fraction"):
        split_patients(manifest(n_patients=5), **WHOLE, test_fraction=fraction, seed=0,
                       stratify_by_target=False)


def test_paper_counts_on_a_paper_shaped_cohort(repo_config):
    """config.yaml's split on SLICE-3D's shape (401,059 images of 1,042 patients, heavy-tailed
    images per patient): the paper's 240 test patients holding 118,495 ± 0.5% images, and
    the training tuples within 0.5% of the paper's 1,412,820."""
    cfg = repo_config["split"]
    cohort = paper_shaped_cohort(seed=0)
    assert cohort.height == 401_059 and cohort["patient_id"].n_unique() == 1042
    plain = summarize(split_patients(cohort, **WHOLE, test_fraction=cfg["test_fraction"],
                                     seed=cfg["seed"],
                                     stratify_by_target=cfg["stratify_by_target"]))
    # Patients alone miss the paper's images by far (why the image target exists).
    assert abs(plain["test"]["images"] - 118_495) > 0.05 * 118_495
    out = split_patients(cohort, **cfg)
    s = summarize(out)
    assert s["test"]["patients"] == 240 and s["train"]["patients"] == 802
    assert abs(s["test"]["images"] - 118_495) <= 0.005 * 118_495
    assert s["test"]["malignant_patients"] > 0 and s["train"]["malignant_patients"] > 0
    check_disjoint(out)
    # Stratified: each stratum keeps its share of patients.
    plain_m = plain["test"]["malignant_patients"]
    assert s["test"]["malignant_patients"] == pytest.approx(plain_m, abs=plain_m * 0.5)
    assert split_patients(cohort, **cfg).equals(out)  # deterministic
    train = out.filter(pl.col("split") == "train")
    rng = np.random.default_rng(0)
    values = rng.normal(10, 3, size=(train.height, 16))
    values[rng.random(values.shape) < 0.01] = np.nan  # 1% missing cells
    names = [f"a{i}" for i in range(16)]
    frame = train.select("isic_id").with_columns(
        [pl.Series(n, values[:, i]).fill_nan(None) for i, n in enumerate(names)])
    rows = sample_tuples(frame, {n: {"question": f"{n}?", "decimals": 2} for n in names},
                         w=repo_config["tuples"]["W"], seed=0)
    assert abs(rows.height - 1_412_820) <= 0.005 * 1_412_820


def test_image_target_moves_few_patients_and_hits_small_targets():
    m = manifest(n_patients=60)
    counts = m.group_by("patient_id").len()
    total = counts["len"].sum()
    out = split_patients(m, **WHOLE, test_fraction=0.25, seed=2, stratify_by_target=True,
                         test_image_fraction=0.28)
    s = summarize(out)
    assert s["test"]["patients"] == 15
    assert s["test"]["images"] == round(0.28 * total)
    with pytest.raises(SplitError, match="test_image_fraction"):
        split_patients(m, **WHOLE, test_fraction=0.25, seed=2, stratify_by_target=True,
                       test_image_fraction=1.0)


def test_a_patient_sample_holds_its_share_of_the_images_and_is_split_the_same_way(repo_config):
    """split.patient_fraction (a pilot run): on SLICE-3D's shape, a seeded sample of the
    patients per stratum that holds that share of the images, whole patients only, then split
    by config.yaml's rules; another seed draws other patients."""
    cohort = paper_shaped_cohort(seed=0)
    cfg = {**repo_config["split"], "patient_fraction": 0.02}
    out = split_patients(cohort, **cfg)
    check_disjoint(out)
    kept = set(out["patient_id"])
    assert len(kept) in range(19, 24)  # 2% of 1,042 patients, rounded per stratum
    # whole patients: every image of a kept patient, none of the others'
    assert out.height == cohort.filter(pl.col("patient_id").is_in(list(kept))).height
    assert abs(out.height - round(0.02 * 401_059)) <= 0.02 * 0.02 * 401_059
    s = summarize(out)
    assert s["train"]["malignant_patients"] > 0 and s["test"]["patients"] >= 1
    assert s["test"]["images"] == pytest.approx(cfg["test_image_fraction"] * out.height,
                                                rel=0.25)
    assert split_patients(cohort, **cfg).equals(out)  # seeded
    other = split_patients(cohort, **{**cfg, "seed": 1})
    assert set(other["patient_id"]) != kept


def test_patient_fraction_one_is_every_patient():
    m = manifest()
    whole = split_patients(m, **WHOLE, test_fraction=0.23, seed=3, stratify_by_target=True)
    assert whole.height == m.height
    half = split_patients(m, patient_fraction=0.5, test_fraction=0.23, seed=3,
                          stratify_by_target=True)
    assert half["patient_id"].n_unique() == 25
    assert summarize(half)["test"]["malignant_patients"] >= 1  # 5 of the 10, stratified


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_bad_patient_fraction_is_an_error(fraction):
    with pytest.raises(SplitError, match="patient_fraction"):
        split_patients(manifest(), patient_fraction=fraction, test_fraction=0.23, seed=0,
                       stratify_by_target=True)


def test_a_sample_too_small_to_split_is_an_error():
    with pytest.raises(SplitError, match=r"patient_fraction=0.01 keeps 1 of the 50 patients"):
        split_patients(manifest(), patient_fraction=0.01, test_fraction=0.23, seed=0,
                       stratify_by_target=False)
