"""The supervised linear probe: ridge regression from an image-level embedding space to each
attribute, the baseline that generating an answer must beat.

For every attribute a, on the train images with a value: ridge regression with an intercept,
the solution scikit-learn's ``Ridge(alpha)`` computes,

    w = (X_c^T X_c + α I)^-1 X_c^T y_c,   b = mean(y) - mean(X) · w   (X_c, y_c: centred),

α chosen from ``probe.alphas`` (relative: each is multiplied by the mean eigenvalue of
X_c^T X_c, so the grid means the same for any space) by the lowest mean squared error over
the folds of scikit-learn's ``GroupKFold`` on the train patients (a patient's images in one
fold: the CV GridSearchCV(Ridge, GroupKFold, "neg_mean_squared_error") does, tested equal).
R² on the test images, with a bootstrap interval over test patients.

How, at paper scale (282,564 x 3,584): the space is held once, as stored (float16, 2 GB), and
read a block at a time in float64; per fold the Gram matrix X^T X and X^T y come from sums over
the fold's rows (the train part of a fold is the total minus the fold; a target's rows without a
value are subtracted), and one eigendecomposition per (fold, attribute) gives every α at once.
Never a d x d inverse per α, never a copy of X per fold (``skinground.cost.memory.probe_peak``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

#: Rows per block of the sums (float64 copies of the block: 8192 x 3584 x 8 = 235 MB).
BLOCK_ROWS = 8192


def _gram(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """X^T X over the ``rows`` (a mask) of ``x``, in float64, a block at a time."""
    g = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = x[start:start + BLOCK_ROWS][rows[start:start + BLOCK_ROWS]].astype(np.float64)
        g += block.T @ block
    return g


def _xt(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """X^T M in float64 (M: (n, k)), a block at a time."""
    out = np.zeros((x.shape[1], m.shape[1]))
    for start in range(0, x.shape[0], BLOCK_ROWS):
        out += x[start:start + BLOCK_ROWS].astype(np.float64).T @ m[start:start + BLOCK_ROWS]
    return out


def _predict(x: np.ndarray, rows: np.ndarray, w: np.ndarray, b) -> np.ndarray:
    """X w + b over the ``rows`` (a mask) of ``x``, a block at a time: (rows, w's columns)."""
    parts = [x[start:start + BLOCK_ROWS][rows[start:start + BLOCK_ROWS]].astype(np.float64)
             @ w + b for start in range(0, x.shape[0], BLOCK_ROWS)]
    return np.concatenate(parts) if parts else np.empty((0, *np.shape(w)[1:]))


class Design:
    """A space's train rows ``x`` (n, d), the targets ``y`` (n, T; NaN = no value) and each
    row's fold (-1: none). Holds X^T X of every fold, and X^T of the fold masks and targets;
    the sums of "every row but fold f with a value for t" are totals less parts, the Gram
    matrix less that of t's rows without a value (few: computed when asked)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, fold: np.ndarray):
        self.x, self.y, self.fold = x, np.asarray(y, dtype=np.float64), np.asarray(fold)
        self.have = np.isfinite(self.y)
        self.folds = int(self.fold.max()) + 1 if self.fold.size else 0
        parts = [self.fold == f for f in range(self.folds)] or [np.ones(len(x), bool)]
        self.part_gram = [_gram(x, p) for p in parts]
        y0 = np.where(self.have, self.y, 0.0)
        columns = [np.column_stack([self.have & p[:, None], y0 * p[:, None]]) for p in parts]
        # per part: X^T have (d, T) and X^T y (d, T)
        self.part_xt = np.split(_xt(x, np.hstack(columns)), len(parts), axis=1)
        self.part_n = [(self.have & p[:, None]).sum(axis=0) for p in parts]
        self.part_y = [(y0 * p[:, None]).sum(axis=0) for p in parts]

    def solver(self, t: int, leave_out: int | None = None) -> Solver:
        """The ridge solver of target ``t`` on every row with a value, but fold
        ``leave_out``."""
        keep = [f for f in range(len(self.part_gram)) if f != leave_out]
        gram = sum(self.part_gram[f] for f in keep)
        outside = np.ones(len(self.x), bool) if leave_out is None else self.fold != leave_out
        missing = ~self.have[:, t] & outside
        if missing.any():
            gram = gram - _gram(self.x, missing)
        n_targets = self.y.shape[1]
        sx = sum(self.part_xt[f][:, t] for f in keep)
        sxy = sum(self.part_xt[f][:, n_targets + t] for f in keep)
        n = float(sum(self.part_n[f][t] for f in keep))
        sy = float(sum(self.part_y[f][t] for f in keep))
        return Solver.of(n, sx, gram, sxy, sy)


@dataclass(frozen=True)
class Solver:
    """Ridge of one target from its sums: the eigendecomposition of X_c^T X_c, then the
    weights for any α in O(d²)."""

    mean_x: np.ndarray
    mean_y: float
    values: np.ndarray
    vectors: np.ndarray
    projected: np.ndarray  # Vᵀ X_cᵀ y_c

    @classmethod
    def of(cls, n: float, sx: np.ndarray, gram: np.ndarray, sxy: np.ndarray,
           sy: float) -> Solver:
        """From n, Σx, Σx xᵀ, Σx y and Σy over the rows."""
        if n < 2:
            raise ValueError(f"ridge needs at least 2 rows with a value, got {int(n)}")
        mean_x, mean_y = sx / n, sy / n
        centred = gram - n * np.outer(mean_x, mean_x)
        cross = sxy - n * mean_x * mean_y
        values, vectors = np.linalg.eigh((centred + centred.T) / 2)
        return cls(mean_x, float(mean_y), np.maximum(values, 0.0), vectors, vectors.T @ cross)

    @property
    def scale(self) -> float:
        """The mean eigenvalue of X_c^T X_c: what a relative α is multiplied by."""
        return float(self.values.mean())

    def weights(self, alphas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(w (d, len(alphas)), b (len(alphas),)) for each absolute α."""
        a = np.asarray(alphas, dtype=np.float64)
        w = self.vectors @ (self.projected[:, None] / (self.values[:, None] + a[None, :]))
        return w, self.mean_y - self.mean_x @ w


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an intercept of one target (``y`` finite): (w, b)."""
    design = Design(x, np.asarray(y, dtype=np.float64)[:, None], np.zeros(len(x), int))
    w, b = design.solver(0).weights([alpha])
    return w[:, 0], float(b[0])


def folds(groups: Sequence[str], n_folds: int) -> np.ndarray:
    """Each row's fold: scikit-learn's ``GroupKFold`` over ``groups`` (the patients)."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(set(groups.tolist()))
    if n_groups < n_folds:
        raise ValueError(f"{n_folds} cross-validation folds need at least {n_folds} train "
                         f"patients, there are {n_groups}")
    fold = np.empty(groups.size, dtype=np.int64)
    for f, (_, held) in enumerate(GroupKFold(n_splits=n_folds).split(groups, groups=groups)):
        fold[held] = f
    return fold


@dataclass(frozen=True)
class Fit:
    """A probe of one target: the chosen relative and absolute α, the CV mean squared error
    per α, and the weights fitted on all train rows."""

    alpha_relative: float
    alpha: float
    cv_mse: np.ndarray
    w: np.ndarray
    b: float

    def predict(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The probe's values for the ``rows`` (a mask; all) of ``x``."""
        rows = np.ones(len(x), bool) if rows is None else rows
        return _predict(x, rows, self.w, self.b)


def fit_probes(x: np.ndarray, y: np.ndarray, patients: Sequence[str],
               alphas: Sequence[float], n_folds: int) -> list[Fit]:
    """One :class:`Fit` per column of ``y`` (n, targets; NaN = no value), α chosen by
    grouped cross-validation (module doc)."""
    y = np.asarray(y, dtype=np.float64)
    fold = folds(patients, n_folds)
    design = Design(x, y, fold)
    fits = []
    for t in range(y.shape[1]):
        full = design.solver(t)
        absolute = np.asarray(alphas, dtype=np.float64) * full.scale
        mse = np.zeros(absolute.size)
        for f in range(n_folds):
            held = (fold == f) & design.have[:, t]
            w, b = design.solver(t, leave_out=f).weights(absolute)
            residual = _predict(x, held, w, b) - y[held, t][:, None]
            mse += (residual ** 2).mean(axis=0) / n_folds
        best = int(np.argmin(mse))
        w, b = full.weights([absolute[best]])
        fits.append(Fit(float(alphas[best]), float(absolute[best]), mse, w[:, 0], float(b[0])))
    return fits


def probe_rows(model: str, attributes: Sequence[str], fits: Sequence[Fit],
               test_x: np.ndarray, test_y: np.ndarray, codes: np.ndarray, boot,
               confidence: float, n_train: Mapping[str, int]) -> list[dict]:
    """The probe's table rows: per attribute the test R² of the fitted probe and its
    bootstrap interval (``boot``: ``stats.Bootstrap``; ``codes``: each test row's patient)."""
    from skinground.evaluation import stats
    from skinground.evaluation.metrics import r2_score

    rows = []
    for t, (attribute, fit) in enumerate(zip(attributes, fits, strict=True)):
        have = np.isfinite(test_y[:, t])
        pred = fit.predict(test_x, have)
        reps = stats.bootstrap_r2(boot, codes[have], test_y[have, t], pred)
        lo, hi = stats.interval(reps, confidence)
        rows.append({"model": model, "attribute": attribute, "n_train": n_train[attribute],
                     "n_test": int(have.sum()), "alpha_relative": fit.alpha_relative,
                     "alpha": fit.alpha, "r2": r2_score(test_y[have, t], pred),
                     "r2_lo": lo, "r2_hi": hi})
    return rows


#: The generated answers' row label in the comparison table.
ANSWERS = "answers"


def beside_answers(r2: pl.DataFrame, probes: Sequence[pl.DataFrame],
                   labels: Mapping[str, str]) -> pl.DataFrame:
    """One table: the generated answers' R² (``r2.csv``'s tuned r2_filled and its interval,
    source "answers") and every probe's (source "probe", space = the model probed), rows
    in the attributes' order."""
    answers = (r2.filter(pl.col("model") == "tuned")
               .select(source=pl.lit(ANSWERS), space=pl.lit("tuned"), attribute="attribute",
                       n_test="n", r2="r2_filled", r2_lo="r2_filled_lo", r2_hi="r2_filled_hi",
                       alpha_relative=pl.lit(None, pl.Float64)))
    parts = [answers] + [p.select(source=pl.lit("probe"), space="model",
                                  attribute="attribute", n_test="n_test", r2="r2",
                                  r2_lo="r2_lo", r2_hi="r2_hi",
                                  alpha_relative="alpha_relative") for p in probes]
    order = {a: i for i, a in enumerate(labels)}
    table = pl.concat(parts, how="vertical_relaxed")
    return (table.with_columns(label=pl.col("attribute").replace_strict(labels,
                                                                        return_dtype=pl.String),
                               _a=pl.col("attribute").replace_strict(order))
            .sort("_a", maintain_order=True).drop("_a")
            .select("attribute", "label", "source", "space", "n_test", "r2", "r2_lo", "r2_hi",
                    "alpha_relative"))
