"""Patient-level split: disjoint, deterministic, stratified."""

import polars as pl
import pytest

from skinground.split import SplitError, split_patients, summarize


def manifest(n_patients=50, per_patient=7, malignant_every=5, seed_shift=0) -> pl.DataFrame:
    rows = []
    for p in range(n_patients):
        for j in range(per_patient + p % 4):
            rows.append({"isic_id": f"ISIC_{p:04d}{j:03d}", "patient_id": f"IP_{p:07d}",
                         "target": int(p % malignant_every == 0 and j == 0)})
    return pl.DataFrame(rows)


def test_no_patient_in_both_sets():
    out = split_patients(manifest(), test_fraction=0.23, seed=1, stratify_by_target=True)
    train = set(out.filter(pl.col("split") == "train")["patient_id"])
    test = set(out.filter(pl.col("split") == "test")["patient_id"])
    assert train and test and not train & test
    assert len(train) + len(test) == 50
    assert out.height == manifest().height


def test_deterministic_and_independent_of_row_order():
    m = manifest()
    a = split_patients(m, test_fraction=0.23, seed=3, stratify_by_target=True)
    b = split_patients(m.sample(fraction=1.0, shuffle=True, seed=9), test_fraction=0.23, seed=3,
                       stratify_by_target=True)
    assert a.equals(b)
    c = split_patients(m, test_fraction=0.23, seed=4, stratify_by_target=True)
    assert not a.equals(c)


def test_test_fraction_of_patients():
    out = split_patients(manifest(n_patients=100), test_fraction=0.2303, seed=0,
                         stratify_by_target=False)
    s = summarize(out)
    assert s["test"]["patients"] == 23 and s["train"]["patients"] == 77


def test_stratified_split_puts_malignant_patients_in_both_sets():
    for seed in range(5):
        s = summarize(split_patients(manifest(), test_fraction=0.3, seed=seed,
                                     stratify_by_target=True))
        assert s["train"]["malignant_patients"] == 7  # 10 malignant patients, 3 to test
        assert s["test"]["malignant_patients"] == 3


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_bad_fraction_is_an_error(fraction):
    with pytest.raises(SplitError, match="test_fraction"):
        split_patients(manifest(n_patients=5), test_fraction=fraction, seed=0,
                       stratify_by_target=False)
