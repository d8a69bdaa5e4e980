"""The ridge probe against the closed form and against scikit-learn's plain path."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold

from skinground.evaluation import probe, stats


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, d = 240, 12
    x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 3, d) + rng.normal(size=d)).astype(
        np.float32)
    w = rng.normal(size=(d, 2))
    y = x.astype(np.float64) @ w + rng.normal(0, 2.0, size=(n, 2)) + [5.0, -3.0]
    y[rng.choice(n, 17, replace=False), 1] = np.nan  # the second target misses some values
    patients = np.array([f"P{i:02d}" for i in rng.integers(0, 30, n)])
    return x, y, patients


def test_ridge_is_the_closed_form_and_sklearns(data):
    x, y, _ = data
    alpha = 7.5
    w, b = probe.ridge(x, y[:, 0], alpha)
    x64 = x.astype(np.float64)
    xc, yc = x64 - x64.mean(axis=0), y[:, 0] - y[:, 0].mean()
    closed = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    np.testing.assert_allclose(w, closed, rtol=1e-9, atol=1e-12)
    assert b == pytest.approx(y[:, 0].mean() - x64.mean(axis=0) @ closed, rel=1e-9)
    ref = Ridge(alpha=alpha).fit(x64, y[:, 0])
    np.testing.assert_allclose(w, ref.coef_, rtol=1e-7)
    assert b == pytest.approx(ref.intercept_, rel=1e-7)


def test_cross_validation_is_gridsearchcv_over_patient_folds(data, monkeypatch):
    x, y, patients = data
    monkeypatch.setattr(probe, "BLOCK_ROWS", 50)  # several blocks: the same sums
    alphas = [1e-3, 1e-1, 1.0, 10.0]
    fits = probe.fit_probes(x, y, patients, alphas, n_folds=5)
    x64 = x.astype(np.float64)
    # target 0 has every value: exactly scikit-learn's GridSearchCV with these alphas
    absolute = np.asarray(alphas) * fits[0].alpha / fits[0].alpha_relative
    search = GridSearchCV(Ridge(), {"alpha": absolute.tolist()}, cv=GroupKFold(5),
                          scoring="neg_mean_squared_error").fit(x64, y[:, 0], groups=patients)
    np.testing.assert_allclose(fits[0].cv_mse, -search.cv_results_["mean_test_score"],
                               rtol=1e-8)
    assert fits[0].alpha == pytest.approx(search.best_params_["alpha"])
    np.testing.assert_allclose(fits[0].predict(x), search.best_estimator_.predict(x64),
                               rtol=1e-7)
    # target 1 misses values: per fold, Ridge on the rows with a value outside the fold
    fold = probe.folds(patients, 5)
    have = np.isfinite(y[:, 1])
    absolute = np.asarray(alphas) * fits[1].alpha / fits[1].alpha_relative
    mse = np.zeros(len(alphas))
    for i, a in enumerate(absolute):
        for f in range(5):
            train, held = have & (fold != f), have & (fold == f)
            pred = Ridge(alpha=a).fit(x64[train], y[train, 1]).predict(x64[held])
            mse[i] += np.mean((pred - y[held, 1]) ** 2) / 5
    np.testing.assert_allclose(fits[1].cv_mse, mse, rtol=1e-8)
    # the relative grid: the mean eigenvalue of the centred Gram of the rows with a value
    xc = x64[have] - x64[have].mean(axis=0)
    assert fits[1].alpha / fits[1].alpha_relative == pytest.approx(
        np.trace(xc.T @ xc) / x.shape[1], rel=1e-9)


def test_too_few_patients_for_the_folds_is_an_error(data):
    x, y, _ = data
    with pytest.raises(ValueError, match="5 cross-validation folds need at least 5 train "
                                         "patients, there are 3"):
        probe.fit_probes(x, y, np.array(["a", "b", "c"] * 80), [1.0], 5)


def test_the_probe_table_scores_the_test_rows(data):
    x, y, patients = data
    fits = probe.fit_probes(x[:180], y[:180], patients[:180], [0.01, 1.0], 4)
    boot = stats.Bootstrap.draw(patients[180:], 200, seed=0)
    rows = probe.probe_rows("tuned", ["a0", "a1"], fits, x[180:], y[180:],
                            boot.codes(patients[180:]), boot, 0.95, {"a0": 180, "a1": 170})
    for t, row in enumerate(rows):
        have = np.isfinite(y[180:, t])
        pred = fits[t].predict(x[180:])[have]
        truth = y[180:, t][have]
        expected = 1 - np.sum((truth - pred) ** 2) / np.sum((truth - truth.mean()) ** 2)
        assert row["r2"] == pytest.approx(expected, rel=1e-9)
        assert row["n_test"] == have.sum() and row["r2_lo"] <= row["r2"] <= row["r2_hi"]
    assert rows[0]["r2"] > 0.5  # a linear target: the probe reads it
