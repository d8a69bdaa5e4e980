"""The bootstrap over patients against a brute-force resample; Wilcoxon and Holm against
scipy and the definition."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from skinground.evaluation import stats


@pytest.fixture
def sample():
    """12 patients with 1-6 items each, ties and a missing value included."""
    rng = np.random.default_rng(3)
    patients = [f"P{i:02d}" for i in range(12)]
    sizes = rng.integers(1, 7, size=len(patients))
    owner = np.repeat(patients, sizes)
    x = np.round(rng.normal(10, 4, owner.size), 1)  # rounded: ties
    y = x + np.round(rng.normal(0, 3, owner.size), 1)
    x[5] = np.nan
    return owner.tolist(), x, y


def resampled(boot, codes, *columns):
    """Replicate b written out: each item of patient p repeated counts[b, p] times."""
    for row in boot.counts:
        reps = row[codes]
        yield [np.repeat(c, reps) for c in columns]


def brute_r2(t, p):
    keep = np.isfinite(t) & np.isfinite(p)
    t, p = t[keep], p[keep]
    if t.size < 2 or np.all(t == t[0]):
        return np.nan
    return 1 - np.sum((t - p) ** 2) / np.sum((t - t.mean()) ** 2)


def test_draws_resample_every_patient_set_with_replacement():
    boot = stats.Bootstrap.draw(["b", "a", "c", "a"], replicates=500, seed=1)
    assert boot.patients == ("a", "b", "c")
    assert boot.counts.shape == (500, 3)
    assert (boot.counts.sum(axis=1) == 3).all()
    assert (boot.counts == 0).any() and (boot.counts >= 2).any()  # with replacement
    again = stats.Bootstrap.draw(["a", "b", "c"], replicates=500, seed=1)
    assert np.array_equal(boot.counts, again.counts)
    with pytest.raises(KeyError, match="'z' is not one of"):
        boot.codes(["a", "z"])


def test_median_equals_the_median_of_the_resample(sample, monkeypatch):
    owner, x, _ = sample
    boot = stats.Bootstrap.draw(owner, replicates=300, seed=0)
    codes = boot.codes(owner)
    brute = [np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan
             for (v,) in resampled(boot, codes, x)]
    assert np.array_equal(stats.bootstrap_median(boot, codes, x), np.array(brute),
                          equal_nan=True)
    monkeypatch.setattr(stats, "BLOCK_CELLS", 7)  # many replicate blocks: the same
    assert np.array_equal(stats.bootstrap_median(boot, codes, x), np.array(brute),
                          equal_nan=True)
    for size in (1, 2, 5, 7):  # bins of a few items, the last one short: the same
        monkeypatch.setattr(stats, "MEDIAN_BIN", size)
        assert np.array_equal(stats.bootstrap_median(boot, codes, x), np.array(brute),
                              equal_nan=True), size


@pytest.mark.parametrize(("patients", "items", "bin_size", "cells"), [
    (40, 20_000, 512, 1 << 22),  # the default bins
    (40, 20_000, 64, 1 << 22),
    (300, 5_003, 512, 1_000),  # many patients: bins grow to keep patients x bins small
])
def test_the_binned_median_equals_counting_every_item(monkeypatch, patients, items,
                                                      bin_size, cells):
    """The fast median (bins of sorted items) against the plain one that counts every item
    (bench/reference.py), on many ties, heavy-tailed patients and a replicate without
    items: the same values, bit for bit."""
    from reference import cumsum_bootstrap_median

    rng = np.random.default_rng(items)
    owner = rng.zipf(1.6, items) % patients
    x = np.round(rng.normal(50, 20, items))  # whole numbers: many ties
    x[rng.random(items) < 0.01] = np.nan
    names = [f"P{i:03d}" for i in owner]
    boot = stats.Bootstrap.draw(names, replicates=400, seed=1)
    counts = boot.counts.copy()
    present = np.unique(boot.codes(names))
    counts[0] = 0
    counts[0, np.setdiff1d(np.arange(len(boot.patients)), present)[:1]] = 1  # drew none
    boot = stats.Bootstrap(boot.patients, counts)
    codes = boot.codes(names)
    monkeypatch.setattr(stats, "MEDIAN_BIN", bin_size)
    monkeypatch.setattr(stats, "MEDIAN_CELLS", cells)
    fast = stats.bootstrap_median(boot, codes, x)
    assert np.array_equal(fast, cumsum_bootstrap_median(boot, codes, x), equal_nan=True)
    assert np.isnan(fast[0]) and np.isfinite(fast[1:]).all()


def test_a_replicate_without_items_is_nan_and_left_out_of_the_interval():
    boot = stats.Bootstrap("ab", np.array([[2, 0], [0, 2], [1, 1]], dtype=np.int32))
    codes = boot.codes(["a", "a"])  # patient b has no item
    med = stats.bootstrap_median(boot, codes, [1.0, 3.0])
    assert med[0] == 2.0 and np.isnan(med[1]) and med[2] == 2.0
    assert stats.interval(med, 0.95) == (2.0, 2.0)
    assert all(np.isnan(stats.interval([np.nan], 0.95)))


def test_mean_r2_and_spearman_equal_the_resample(sample):
    owner, x, y = sample
    boot = stats.Bootstrap.draw(owner, replicates=200, seed=5)
    codes = boot.codes(owner)
    flags = (np.abs(y - x) > 2).astype(float)
    mean, r2, rho = [], [], []
    for xs, ys, fs in resampled(boot, codes, x, y, flags):
        mean.append(fs.mean())
        r2.append(brute_r2(xs, ys))
        keep = np.isfinite(xs) & np.isfinite(ys)
        rho.append(scipy_stats.spearmanr(xs[keep], ys[keep]).statistic)
    np.testing.assert_allclose(stats.bootstrap_mean(boot, codes, flags), mean, rtol=1e-12)
    np.testing.assert_allclose(stats.bootstrap_r2(boot, codes, x, y), r2, rtol=1e-9)
    np.testing.assert_allclose(stats.bootstrap_spearman(boot, codes, x, y), rho, rtol=1e-9)


def test_interval_is_the_percentile_bootstrap():
    reps = np.arange(1001, dtype=float)
    assert stats.interval(reps, 0.95) == pytest.approx((25.0, 975.0))
    assert stats.interval(reps, 0.5) == pytest.approx((250.0, 750.0))


def test_holm_against_the_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), each at least the one before
    expected = np.array([0.03, 0.06, 0.06, np.nan, 0.02])
    np.testing.assert_allclose(stats.holm(p), expected, rtol=1e-12)
    assert stats.holm([0.6, 0.7])[1] == 1.0  # capped at 1
    assert np.isnan(stats.holm([np.nan])).all()


def test_wilcoxon_against_scipy_on_a_fixed_example():
    x = np.array([12.0, 30.5, 8.0, 44.0, 27.0, 9.5, 16.0, 35.0, np.nan, 22.0, 5.0, 40.0])
    y = np.array([20.0, 31.0, 15.0, 50.0, 26.0, 21.0, 16.0, 47.0, 10.0, 29.0, 12.0, 39.0])
    test = stats.wilcoxon(x, y, alternative="less")
    keep = np.isfinite(x)
    ref = scipy_stats.wilcoxon(x[keep], y[keep], zero_method="wilcox", alternative="less")
    assert test.n == 11 and test.median_difference == np.median(x[keep] - y[keep])
    assert test.statistic == ref.statistic and test.pvalue == ref.pvalue
    assert test.pvalue < 0.05  # x is mostly lower
    assert stats.wilcoxon(y, x, alternative="less").pvalue > 0.5
    assert np.isnan(stats.wilcoxon([1.0, 2.0], [1.0, 2.0]).pvalue)  # no difference
