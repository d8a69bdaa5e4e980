"""Confidence intervals and paired tests: the bootstrap over test patients, the Wilcoxon
signed-rank test and Holm's correction.

The bootstrap resamples *patients*, not images: a patient's images (and their queries) are
correlated, and the test set was drawn by patient. A replicate is a vector of counts ``w``
over the P test patients (P draws with replacement: ``w`` sums to P); an item of patient p
then counts ``w[p]`` times. Every statistic here is computed from those counts directly —
no resampled copy of the data is built — and equals the statistic of the resampled data
written out item by item (``tests/test_stats.py`` checks each against that brute force):

- :func:`bootstrap_median`: exactly numpy's median of the repeated items (even count: the
  mean of the two middle ones), by one sort and the cumulative counts of bins of items;
- :func:`bootstrap_mean` (a share, when the values are 0/1): per-patient sums;
- :func:`bootstrap_r2`: ``1 - SS_res / SS_tot`` from per-patient sums of y, y² and the
  squared errors (y centred first, for precision);
- :func:`bootstrap_spearman`: Pearson's r of the weighted mid-ranks (ties share their mean
  rank, as scipy's ``spearmanr``).

The interval is the percentile bootstrap: the (1 - c)/2 and (1 + c)/2 quantiles of the
replicates (replicates whose statistic is undefined, e.g. no item drawn, are left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: At most this many (replicate x item) cells are held at once; replicates go in blocks.
BLOCK_CELLS = 1 << 24
#: :func:`bootstrap_median`'s bins: at least this many sorted items each, and at most
#: ``MEDIAN_CELLS`` (patient x bin) counts.
MEDIAN_BIN = 512
MEDIAN_CELLS = 1 << 22


@dataclass(frozen=True)
class Bootstrap:
    """The replicates' patient counts: ``counts[b, p]`` = how often replicate b drew test
    patient p (``patients[p]``). One object serves every statistic of a table, so that all
    of them are resampled with the same draws."""

    patients: tuple[str, ...]
    counts: np.ndarray  # (B, P) int32

    @classmethod
    def draw(cls, patients: Sequence[str], replicates: int, seed: int) -> Bootstrap:
        """``replicates`` resamples of the (distinct, sorted) ``patients`` with replacement."""
        names = tuple(sorted(set(patients)))
        if not names:
            raise ValueError("the bootstrap needs at least one patient")
        if replicates < 1:
            raise ValueError(f"replicates must be at least 1, not {replicates}")
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(names), size=(replicates, len(names)))
        counts = np.zeros((replicates, len(names)), dtype=np.int32)
        np.add.at(counts, (np.arange(replicates)[:, None], draws), 1)
        return cls(names, counts)

    @property
    def replicates(self) -> int:
        return int(self.counts.shape[0])

    def codes(self, patients: Sequence[str]) -> np.ndarray:
        """Each item's patient as an index into :attr:`patients` (KeyError: unknown)."""
        index = {p: i for i, p in enumerate(self.patients)}
        try:
            return np.fromiter((index[p] for p in patients), dtype=np.int64,
                               count=len(patients))
        except KeyError as err:
            raise KeyError(f"patient {err.args[0]!r} is not one of the bootstrap's "
                           f"{len(self.patients)} patients") from None

    def blocks(self, n_items: int):
        """Slices of the replicates such that a block x ``n_items`` stays within
        ``BLOCK_CELLS``."""
        step = max(1, BLOCK_CELLS // max(n_items, 1))
        for start in range(0, self.replicates, step):
            yield slice(start, min(start + step, self.replicates))

    def per_patient(self, codes: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
        """The replicates' totals of each column: ``counts @ (the column summed per
        patient)``, shape (B,) each."""
        p = len(self.patients)
        return [self.counts @ np.bincount(codes, weights=c, minlength=p) for c in columns]


def _values(codes, values) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(codes, dtype=np.int64)
    if v.shape != c.shape or v.ndim != 1:
        raise ValueError(f"values {v.shape} and patient codes {c.shape} must be 1-D of equal "
                         "length")
    keep = np.isfinite(v)
    return c[keep], v[keep]


def bootstrap_median(boot: Bootstrap, codes, values) -> np.ndarray:
    """The median of every replicate (NaN where it drew no item); non-finite values are
    left out.

    The items are sorted once and cut into bins of ``MEDIAN_BIN`` consecutive items; a
    replicate's count of items in each bin is one matrix product (its patient counts times
    each patient's items per bin), which finds the bin holding each middle position, and
    only that bin's items are counted one by one. The same positions as counting every item
    (the plain reference that counts every item, checked equal in
    ``tests/test_stats.py``), in O(B (n / bin + bin)) after the sort instead of O(B n)."""
    codes, values = _values(codes, values)
    order = np.argsort(values, kind="stable")
    v, g = values[order], codes[order]
    out = np.full(boot.replicates, np.nan)
    n = v.size
    if n == 0:
        return out
    patients = len(boot.patients)
    # bins small enough to count one by one, few enough that patients x bins stays small
    size = max(MEDIAN_BIN, -(-n * patients // MEDIAN_CELLS))
    bins = -(-n // size)
    per_bin = np.bincount(g * bins + np.arange(n) // size,
                          minlength=patients * bins).reshape(patients, bins)
    owner = np.full(bins * size, -1)  # each sorted item's patient; -1 pads the last bin
    owner[:n] = g
    within = np.arange(size)
    for block in boot.blocks(bins + size):
        w = boot.counts[block]
        cum = np.cumsum(w.astype(np.float64) @ per_bin, axis=1)  # exact: whole numbers
        total = cum[:, -1].astype(np.int64)
        rows = np.arange(w.shape[0])
        middle = []
        for position in ((total - 1) // 2, total // 2):  # in the repeated, sorted items
            j = np.minimum((cum <= position[:, None]).sum(axis=1), bins - 1)
            before = np.where(j > 0, cum[rows, np.maximum(j - 1, 0)], 0.0)
            item_owner = owner[j[:, None] * size + within]
            weight = np.where(item_owner >= 0, w[rows[:, None], np.maximum(item_owner, 0)], 0)
            k = (np.cumsum(weight, axis=1) <= (position - before)[:, None]).sum(axis=1)
            middle.append(v[np.minimum(j * size + k, n - 1)])
        out[block] = np.where(total > 0, (middle[0] + middle[1]) / 2, np.nan)
    return out


def bootstrap_mean(boot: Bootstrap, codes, values) -> np.ndarray:
    """The mean of every replicate (a share when the values are 0/1); NaN where none was
    drawn."""
    codes, values = _values(codes, values)
    sums, n = boot.per_patient(codes, values, np.ones_like(values))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.where(n > 0, n, 1), np.nan)


def bootstrap_r2(boot: Bootstrap, codes, y_true, y_pred) -> np.ndarray:
    """R² = 1 - SS_res / SS_tot of every replicate (NaN: fewer than 2 items or no
    variance). Pairs where either value is non-finite are left out."""
    c = np.asarray(codes, dtype=np.int64)
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(p)
    c, t, p = c[keep], t[keep], p[keep]
    if t.size == 0:
        return np.full(boot.replicates, np.nan)
    t0 = t - t.mean()  # centred: SS_tot from sums of squares without cancellation
    n, s, ss, res = boot.per_patient(c, np.ones_like(t), t0, t0 * t0, (t - p) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ss_tot = ss - s * s / np.where(n > 0, n, 1)
        r2 = 1.0 - res / ss_tot
    defined = (n >= 2) & (ss_tot > 1e-12 * np.maximum(ss, 1e-300))
    return np.where(defined, r2, np.nan)


def _weighted_midranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based) of ``values`` (sorted ascending, 1-D) in a sample that holds each
    item ``weights[b, i]`` times: ties share the mean of their ranks. Shape of ``weights``."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    tied = np.add.reduceat(weights, starts, axis=1)  # (B, groups)
    before = np.cumsum(tied, axis=1) - tied
    rank = before + (tied + 1) / 2.0
    group = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, values.size]))
    return rank[:, group]


def bootstrap_spearman(boot: Bootstrap, codes, x, y) -> np.ndarray:
    """Spearman's ρ of every replicate: Pearson's r of the mid-ranks of the repeated items
    (NaN: fewer than 2 items or no variance). Pairs with a non-finite value are left out."""
    c = np.asarray(codes, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    c, x, y = c[keep], x[keep], y[keep]
    out = np.full(boot.replicates, np.nan)
    if x.size < 2:
        return out
    ox, oy = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    for block in boot.blocks(x.size):
        w = boot.counts[block][:, c].astype(np.float64)  # (b, n), items in original order
        rx = np.empty_like(w)
        ry = np.empty_like(w)
        rx[:, ox] = _weighted_midranks(x[ox], w[:, ox])
        ry[:, oy] = _weighted_midranks(y[oy], w[:, oy])
        n = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mx = (w * rx).sum(axis=1) / n
            my = (w * ry).sum(axis=1) / n
            dx, dy = rx - mx[:, None], ry - my[:, None]
            cov = (w * dx * dy).sum(axis=1)
            vx, vy = (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1)
            rho = cov / np.sqrt(vx * vy)
        out[block] = np.where((n >= 2) & (vx > 0) & (vy > 0), rho, np.nan)
    return out


def interval(replicates, confidence: float) -> tuple[float, float]:
    """The percentile-bootstrap interval of ``replicates`` (undefined ones left out); NaN
    when none is defined."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(r, [tail, 100.0 - tail])
    return float(lo), float(hi)


# ---------------------------------------------------------------- paired tests


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error) of ``pvalues``; NaN stays NaN
    and is not counted in the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass(frozen=True)
class PairedTest:
    """A Wilcoxon signed-rank test of x against y on paired items: n pairs, the median of
    x - y, and the p-value of the alternative x < y ("less") or x != y ("two-sided")."""

    n: int
    median_difference: float
    statistic: float
    pvalue: float


def wilcoxon(x, y, alternative: str = "less") -> PairedTest:
    """scipy's Wilcoxon signed-rank test of the pairs (x_i, y_i) with both values finite
    (zero differences dropped, Wilcoxon's convention); NaN p-value below 2 non-zero
    differences."""
    from scipy.stats import wilcoxon as scipy_wilcoxon

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    med = float(np.median(d)) if d.size else float("nan")
    if np.count_nonzero(d) < 2:
        return PairedTest(int(d.size), med, float("nan"), float("nan"))
    result = scipy_wilcoxon(d, zero_method="wilcox", alternative=alternative)
    return PairedTest(int(d.size), med, float(result.statistic), float(result.pvalue))
