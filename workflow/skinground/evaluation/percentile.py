"""Fig. 4's measure: percentile rank of a retrieved image's attribute difference.

For a query q, a retrieved train image r and an attribute a, with d = |q - r| (the paper's
squared difference (q - r)^2 ranks identically), count over the N train images v that have a
value for a:

    less = #{v : |v - q| < d}        less_or_equal = #{v : |v - q| <= d}

``less_or_equal`` includes r itself. The percentile is the MID-RANK of r among the OTHER
N - 1 train images, as a percentage:

    percentile = 100 * (less + (less_or_equal - 1)) / (2 * (N - 1))

i.e. the share of other train images strictly closer to q, plus half of those exactly as close.
Why not 100 * (less + less_or_equal) / (2N): that one gives an exact match 50/N, not 0. Ours
gives exactly 0 for an exact match without ties, exactly 100 for the farthest train value
without ties, and averages EXACTLY 50 over a uniformly random retrieved train image (the
mid-ranks 0..N-1 of the N train images average (N - 1) / 2, ties included). Lower is better.
It requires r to be one of the N train values (the retrieved image is in the database);
otherwise ValueError. N < 2 raises (no "other" train image).

Exactness. Everything is computed in float64 (float32 inputs convert exactly); the reference
:func:`brute_force_percentile_ranks` evaluates the definition literally, ``np.abs(v - q) < d``
and ``<= d`` with ``d = np.abs(q - r)`` (IEEE subtraction, round to nearest). The fast
:func:`percentile_ranks` returns IDENTICAL arrays, not approximately equal ones, with no
tolerance: sorting the train values once, the counted values right of q are a prefix of the
sorted v >= q (rounded subtraction is monotone, so fl(v - q) < d holds up to some position
and then never again), and likewise left of q. ``searchsorted(v, q ± d)`` gives each boundary
position up to floating-point rounding of q ± d (r itself sits exactly on one boundary); the
position is then confirmed, or moved, by evaluating the literal predicate at and next to it
(doubling steps, then bisection). Ties are thereby counted exactly. Cost: 4 searchsorted
guesses + a few O(1) checks per item, O(log N) worst case.

Missing values: train values that are null/NaN/±inf are excluded (N counts the others); a query
or retrieved item without a finite value gives NaN (``percentile_ranks``) / null and an
``excluded`` reason (``evaluate``), counted per method x attribute by ``summarize``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from skinground.core.errors import OverlapError
from skinground.core.plan import method_order
from skinground.data.attributes import ID_COLUMN

EVAL_COLUMNS = ("method", "attribute", "query_id", "rank", "retrieved_id", "score",
                "query_value", "retrieved_value", "percentile", "excluded")
SUMMARY_COLUMNS = ("method", "attribute", "n", "median", "q1", "q3", "mean", "excluded")


# ---------------------------------------------------------------- percentile ranks (numpy)
def _train_values(train_values) -> np.ndarray:
    v = np.asarray(train_values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise ValueError(f"need at least 2 train values with a value, got {v.size}")
    return v


def _pair(query_values, retrieved_values) -> tuple[np.ndarray, np.ndarray]:
    """q and r broadcast to r's shape; q may lack r's last axis ([Q] with [Q, k])."""
    q = np.asarray(query_values, dtype=np.float64)
    r = np.asarray(retrieved_values, dtype=np.float64)
    if q.ndim == r.ndim - 1:
        q = q[..., None]
    try:
        q = np.broadcast_to(q, r.shape)
    except ValueError:
        raise ValueError(f"query values {np.shape(query_values)} do not match retrieved "
                         f"values {np.shape(retrieved_values)}") from None
    return q, r


def _percent(less: np.ndarray, less_or_equal: np.ndarray, n: int) -> np.ndarray:
    """The mid-rank percentile among the other n - 1 train values (shared by both paths)."""
    return 100.0 * (less + less_or_equal - 1).astype(np.float64) / (2.0 * (n - 1))


def _first_true(pred, v: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                guess: np.ndarray) -> np.ndarray:
    """Elementwise smallest j in [lo, hi] with ``pred(j, i)``, exactly.

    ``pred(j, i)`` evaluates elements ``i`` at positions ``j`` of the sorted values ``v``; it
    must be monotone (False then True) in j on [lo, hi), depend on ``v[j]`` only (so it is
    constant on a run of equal values; no run crosses lo or hi), and is never asked at hi
    (taken as True). Starts at ``guess``; brackets by doubling steps that also jump whole runs
    of ties, then bisects: O(log distance) steps, one step per run when the data has ties.
    """
    def test(j: np.ndarray, i: np.ndarray) -> np.ndarray:
        out = j >= hi[i]
        ask = ~out
        out[ask] = pred(j[ask], i[ask])
        return out

    def run_start(j):
        return np.searchsorted(v, v[j], "left")

    def run_end(j):
        return np.searchsorted(v, v[j], "right")

    every = np.arange(lo.size)
    top = np.clip(guess, lo, hi)  # invariant after this loop: test(top)
    up = ~test(top, every)
    step = np.ones_like(top)
    while up.any():
        i = np.flatnonzero(up)
        top[i] = np.minimum(np.maximum(top[i] + step[i], run_end(top[i])), hi[i])
        step[i] *= 2
        up[i] = ~test(top[i], i)
    bottom = top - 1  # invariant: bottom < lo, or not test(bottom)
    step = np.ones_like(top)
    down = bottom >= lo
    down[down] = test(bottom[down], every[down])
    while down.any():
        i = np.flatnonzero(down)
        top[i] = run_start(bottom[i])  # bottom's whole run holds
        bottom[i] = np.maximum(top[i] - step[i], lo[i] - 1)
        step[i] *= 2
        still = bottom[i] >= lo[i]
        still[still] = test(bottom[i][still], i[still])
        down[i] = still
    wide = top - bottom > 1
    while wide.any():
        i = np.flatnonzero(wide)
        mid = bottom[i] + (top[i] - bottom[i]) // 2
        t = test(mid, i)
        top[i] = np.where(t, run_start(mid), top[i])
        bottom[i] = np.where(t, bottom[i], run_end(mid) - 1)
        wide[i] = top[i] - bottom[i] > 1
    return top


def _searchsorted(v: np.ndarray, keys: np.ndarray, sides: tuple[str, ...] = ("left",)
                  ) -> list[np.ndarray]:
    """``np.searchsorted(v, keys, side)`` for each side, visiting the keys in sorted order
    (~3x faster: numpy narrows each search with the previous result when keys are sorted)."""
    order = np.argsort(keys)
    sorted_keys = keys[order]
    results = []
    for side in sides:
        out = np.empty(keys.shape, dtype=np.int64)
        out[order] = np.searchsorted(v, sorted_keys, side)
        results.append(out)
    return results


def _counts(v: np.ndarray, q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(less, less_or_equal) = #{|v - q| < d}, #{|v - q| <= d}, d = |q - r|, for sorted
    finite ``v`` containing every r (else ValueError).

    Right of q (v >= q) the counted values are v[j_q : T) with T the first position where
    fl(v - q) >= d (resp. > d); left of q they are v[S : j_q) with S the first position where
    fl(q - v) < d (resp. <= d). Both predicates are monotone along the sorted values (rounded
    subtraction is monotone), so T and S are located exactly by :func:`_first_true`. Guesses:
    on r's side, the ends of r's own run of equal values (r is at distance exactly d); on the
    other side, ``searchsorted(v, q ∓ d)``. They are right in almost every case.
    """
    d = np.abs(q - r)
    n = np.full(q.shape, v.size, dtype=np.int64)
    zero = np.zeros(q.shape, dtype=np.int64)
    last = v.size - 1
    unique_q, inverse = np.unique(q, return_inverse=True)  # q repeats k times per query
    j_q = np.searchsorted(v, unique_q, "left")[inverse.reshape(q.shape)]
    r_first, r_end = _searchsorted(v, r, ("left", "right"))
    _require_members(v[np.minimum(r_first, last)] != r, r)
    r_right = r >= q
    mirror_first, mirror_end = _searchsorted(v, np.where(r_right, q - d, q + d),
                                             ("left", "right"))

    def right(strict):
        def pred(j, i):
            diff = v[np.minimum(j, last)] - q[i]
            return diff > d[i] if strict else diff >= d[i]
        return pred

    def left(strict):
        def pred(j, i):
            diff = q[i] - v[np.minimum(j, last)]
            return diff <= d[i] if strict else diff < d[i]
        return pred

    # "< d": T and S exclude r's run; "<= d": they include it.
    t_lt = _first_true(right(False), v, j_q, n, np.where(r_right, r_first, mirror_first))
    t_le = _first_true(right(True), v, j_q, n, np.where(r_right, r_end, mirror_end))
    s_lt = _first_true(left(False), v, zero, j_q, np.where(r_right, mirror_end, r_end))
    s_le = _first_true(left(True), v, zero, j_q, np.where(r_right, mirror_first, r_first))
    return t_lt - s_lt, t_le - s_le


def percentile_ranks(train_values, query_values, retrieved_values) -> np.ndarray:
    """Mid-rank percentile (module doc) of each retrieved value's |q - r|, in O(log N) each.

    ``train_values`` [N] (missing = NaN/±inf, excluded), ``query_values`` of r's shape or of
    r's shape without its last axis ([Q] with ``retrieved_values`` [Q, k]). Returns float64 of
    r's shape, NaN where q or r is missing. Identical to :func:`brute_force_percentile_ranks`.
    Raises ValueError if a retrieved value is not a train value.
    """
    return PercentileRanker(train_values)(query_values, retrieved_values)


class PercentileRanker:
    """:func:`percentile_ranks` with the train values sorted once (reuse across calls)."""

    def __init__(self, train_values) -> None:
        self.values = np.sort(_train_values(train_values))

    @property
    def n(self) -> int:
        return int(self.values.size)

    def __call__(self, query_values, retrieved_values) -> np.ndarray:
        q, r = _pair(query_values, retrieved_values)
        out = np.full(r.shape, np.nan)
        valid = np.isfinite(q) & np.isfinite(r)
        with np.errstate(over="ignore"):  # |v - q| may overflow to inf, as in the brute force
            less, less_or_equal = _counts(self.values, q[valid], r[valid])
        out[valid] = _percent(less, less_or_equal, self.n)
        return out


def _require_members(missing: np.ndarray, r: np.ndarray) -> None:
    """Raise unless every retrieved value is a train value (``missing`` marks the others)."""
    if missing.any():
        raise ValueError(f"{int(missing.sum())} retrieved value(s) are not train values, e.g. "
                         f"{r[missing][:3].tolist()}: retrieved images must be train images")




# ---------------------------------------------------------------- tables (polars)
def evaluate(results: pl.DataFrame, truth: pl.DataFrame, train_ids: Sequence[str],
             attributes: Sequence[str]) -> pl.DataFrame:
    """Percentile of every retrieved item (one row per method, attribute, query, rank).

    ``results``: :func:`skinground.retrieval.search.results_frame` rows (null attribute = all
    ``attributes``). ``truth``: ``isic_id`` + one column per attribute (null/NaN = missing),
    covering every train and query id. ``train_ids``: the database (N per attribute = those
    with a value). Returns ``EVAL_COLUMNS``; ``percentile`` is null where excluded, with
    ``excluded`` = "query" (query has no value) or "retrieved" (retrieved item has none).
    Raises on a query id in the train set, a retrieved id outside it, or ids missing in truth.
    """
    attributes = list(attributes)
    absent = [a for a in attributes if a not in truth.columns]
    if absent or ID_COLUMN not in truth.columns:
        raise ValueError(f"truth lacks columns {[ID_COLUMN, *absent]}")
    if truth[ID_COLUMN].n_unique() != truth.height:
        raise ValueError("duplicate ids in truth")
    train = pl.Series(ID_COLUMN, list(train_ids), dtype=pl.String)
    if train.n_unique() != train.len():
        raise ValueError("duplicate train ids")
    known = truth[ID_COLUMN]
    _require_subset(train, known, "train ids missing from truth")
    rows = results.filter(pl.col("attribute").is_null() | pl.col("attribute").is_in(attributes))
    overlap = rows.filter(pl.col("query_id").is_in(train.implode()))["query_id"].unique()
    if overlap.len():
        raise OverlapError(f"{overlap.len()} query id(s) are train images, e.g. "
                           f"{overlap.head(5).to_list()}")
    _require_subset(rows["retrieved_id"].unique(), train, "retrieved ids not in the train set")
    _require_subset(rows["query_id"].unique(), known, "query ids missing from truth")

    values = truth.select(ID_COLUMN, *[pl.col(a).cast(pl.Float64) for a in attributes])
    train_values = values.filter(pl.col(ID_COLUMN).is_in(train.implode()))
    generic = rows.filter(pl.col("attribute").is_null())
    parts = []
    for a in attributes:  # one attribute at a time: image-only rows are repeated per attribute
        sub = pl.concat([rows.filter(pl.col("attribute") == a),
                         generic.with_columns(attribute=pl.lit(a, pl.String))])
        if sub.height == 0:
            continue
        col = values.select(ID_COLUMN, a)
        sub = (sub.join(col.rename({ID_COLUMN: "query_id", a: "query_value"}),
                        on="query_id", how="left")
                  .join(col.rename({ID_COLUMN: "retrieved_id", a: "retrieved_value"}),
                        on="retrieved_id", how="left"))
        p = percentile_ranks(train_values[a].to_numpy(), sub["query_value"].to_numpy(),
                             sub["retrieved_value"].to_numpy())
        q_ok = pl.col("query_value").is_not_null() & pl.col("query_value").is_finite()
        r_ok = pl.col("retrieved_value").is_not_null() & pl.col("retrieved_value").is_finite()
        sub = sub.with_columns(
            percentile=pl.Series(p, dtype=pl.Float64).fill_nan(None),
            excluded=pl.when(~q_ok).then(pl.lit("query"))
                     .when(~r_ok).then(pl.lit("retrieved")).otherwise(pl.lit(None, pl.String)),
        )
        parts.append(sub)
    if not parts:
        return pl.DataFrame(schema={**results.schema, "query_value": pl.Float64,
                                    "retrieved_value": pl.Float64, "percentile": pl.Float64,
                                    "excluded": pl.String}).select(EVAL_COLUMNS)
    table = pl.concat(parts).select(EVAL_COLUMNS)
    return _ordered(table, attributes).sort("_a", "_m", "query_id", "rank").drop("_a", "_m")


def _ordered(table: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """``table`` with sort keys _a (attribute order) and _m (the paper's method order, then by
    name)."""
    methods = method_order(table["method"].unique().to_list())
    return table.with_columns(
        _a=pl.col("attribute").replace_strict(list(attributes), range(len(attributes)),
                                              default=len(attributes)),
        _m=pl.col("method").replace_strict(methods, range(len(methods))),
    )


def _require_subset(ids: pl.Series, allowed: pl.Series, what: str) -> None:
    extra = ids.filter(~ids.is_in(allowed.implode()))
    if extra.len():
        raise ValueError(f"{what}: {extra.len()}, e.g. {extra.head(5).to_list()}")


def summarize(table: pl.DataFrame) -> pl.DataFrame:
    """Per method x attribute: n (evaluated items), median, q1, q3 (linear interpolation, as
    numpy's default), mean of the percentile, and excluded (items without a percentile).

    Rows in the table's attribute order, methods in the paper's order then by name.
    """
    attributes = list(dict.fromkeys(table["attribute"].to_list()))
    p = pl.col("percentile")
    out = table.group_by("method", "attribute").agg(
        n=p.count().cast(pl.Int64),
        median=p.median(),
        q1=p.quantile(0.25, interpolation="linear"),
        q3=p.quantile(0.75, interpolation="linear"),
        mean=p.mean(),
        excluded=p.null_count().cast(pl.Int64),
    )
    return _ordered(out, attributes).sort("_a", "_m").drop("_a", "_m").select(SUMMARY_COLUMNS)
