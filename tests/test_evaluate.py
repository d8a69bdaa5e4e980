"""Fig. 4's percentile ranks: O(log N) == brute force exactly; missing values; summaries."""

import numpy as np
import polars as pl
import pytest

from skinground.core.tables import markdown_table
from skinground.evaluation.percentile import (
    EVAL_COLUMNS,
    SUMMARY_COLUMNS,
    PercentileRanker,
    evaluate,
    percentile_ranks,
    summarize,
)
from skinground.retrieval.search import OverlapError

from reference import brute_force_percentile_ranks


def both(train, q, r):
    fast = percentile_ranks(train, q, r)
    slow = brute_force_percentile_ranks(train, q, r)
    assert np.array_equal(fast, slow, equal_nan=True), np.flatnonzero(fast != slow)
    return fast


def with_missing(rng, x, fraction=0.1):
    x = x.copy()
    x[rng.random(x.shape) < fraction] = np.nan
    return x


def test_exact_on_random_floats():
    rng = np.random.default_rng(0)
    for n in (2, 3, 50, 2_000):
        train = with_missing(rng, rng.lognormal(1.0, 1.0, size=n) - 3.0)
        if np.isfinite(train).sum() < 2:
            continue
        pool = train[np.isfinite(train)]
        q = with_missing(rng, rng.lognormal(1.0, 1.0, size=60) - 3.0)
        r = with_missing(rng, rng.choice(pool, size=(60, 5)))
        out = both(train, q, r)
        assert np.array_equal(np.isnan(out), np.isnan(q)[:, None] | np.isnan(r))
        assert np.nanmin(out) >= 0 and np.nanmax(out) <= 100


def test_exact_on_integer_values_with_many_ties():
    rng = np.random.default_rng(1)
    train = with_missing(rng, rng.integers(0, 8, size=3_000).astype(float))
    pool = train[np.isfinite(train)]
    q = np.concatenate([rng.integers(-2, 10, size=150), rng.integers(0, 8, size=50) + 0.5])
    r = rng.choice(pool, size=(200, 5))
    out = both(train, q.astype(float), r)
    # Exact ties with the retrieved item are split in half: an exact match is not 0 here.
    assert np.isfinite(out).all()


def test_exact_with_float_rounding_traps():
    """Values where q ± d does not reproduce the boundary, ±0, and wide magnitudes."""
    rng = np.random.default_rng(2)
    base = np.array([0.1, 0.2, 0.3, 0.7, 1.1, 1e-12, -0.0, 0.0, 1e8, -3e7, 1e16, 5e-324])
    train = np.concatenate([base, base + 1e-9, np.nextafter(base, np.inf), 1.0 - base])
    q = rng.choice(np.concatenate([base, base * 3, -base, [0.6, 1.2, 2.2]]), size=300)
    r = rng.choice(train, size=(300, 4))
    both(train, q, r)
    # Decimal data rounded to 0.1 (not exact in binary): q ± d misses the tied runs.
    train = np.round(rng.lognormal(1.0, 1.0, size=3_000), 1)
    both(train, np.round(rng.lognormal(1.0, 1.0, size=200), 1), rng.choice(train, (200, 5)))
    # The classic one: 0.1 + 0.2 != 0.3, |0.3 - 0.1| != 0.2.
    both(np.array([0.1, 0.2, 0.3, 0.5, 0.4]), np.array([0.1, 0.2, 0.3]),
         np.array([[0.3, 0.5], [0.4, 0.1], [0.1, 0.5]]))


def test_hand_checked_values():
    train = np.array([0.0, 1.0, 2.0, 3.0, 5.0, np.nan])  # N = 5 (the NaN is excluded)
    # q = 1.2, |v - q| = 1.2, .2, .8, 1.8, 3.8: r = 2 (d = .8) has 1 closer, 0 ties -> 1/4.
    out = both(train, np.array([1.2]), np.array([[2.0, 1.0, 5.0]]))
    np.testing.assert_array_equal(out, [[25.0, 0.0, 100.0]])
    # q = 1.5: r = 1 and r = 2 tie (d = .5): 0 closer, 1 other tie -> 0.5 / 4.
    np.testing.assert_array_equal(both(train, [1.5], [[1.0, 2.0]]), [[12.5, 12.5]])


def test_exact_match_without_ties_is_zero():
    train = np.array([3.0, 1.0, 7.5, 2.25, 10.0])
    np.testing.assert_array_equal(both(train, train[:4], train[:4]), np.zeros(4))


def test_errors():
    with pytest.raises(ValueError, match="not train values"):
        percentile_ranks([1.0, 2.0, 3.0], [1.0], [[2.5]])
    with pytest.raises(ValueError, match="not train values"):
        brute_force_percentile_ranks([1.0, 2.0, 3.0], [1.0], [[2.5]])
    with pytest.raises(ValueError, match="at least 2"):
        percentile_ranks([1.0, np.nan], [1.0], [[1.0]])


def test_random_retrieval_averages_fifty():
    rng = np.random.default_rng(3)
    train = rng.normal(size=50_000)
    q = rng.normal(size=2_000)
    r = rng.choice(train, size=(2_000, 5))
    out = PercentileRanker(train)(q, r)
    assert abs(out.mean() - 50) < 1.0
    # Exactly 50 when averaged over every train image as the retrieved one.
    ranker = PercentileRanker(train[:1000])
    assert ranker(np.full(1000, 0.3), train[:1000]).mean() == pytest.approx(50, abs=1e-9)
    ties = np.repeat([1.0, 2.0, 4.0], [300, 500, 200])
    assert PercentileRanker(ties)(np.full(1000, 1.7), ties).mean() == pytest.approx(50)


# ---------------------------------------------------------------- tables
A, B = "tbp_lv_areaMM2", "tbp_lv_deltaB"
TRAIN = ["T0", "T1", "T2", "T3", "T4", "T5"]


def truth_frame():
    return pl.DataFrame({
        "isic_id": TRAIN + ["Q0", "Q1"],
        A: [0.0, 1.0, 2.0, 3.0, 5.0, None, 1.2, None],   # T5 and Q1 miss A
        B: [10.0, 20.0, 30.0, 40.0, None, 60.0, 31.0, 59.0],  # T4 misses B
    })


def results():
    rows = []
    for method, attribute in (("image_only", None), ("image_text", A)):
        for q, hits in (("Q0", ["T2", "T5"]), ("Q1", ["T1", "T4"])):
            for rank, t in enumerate(hits, start=1):
                rows.append((method, attribute, q, rank, t, 1.0 - rank / 10))
    return pl.DataFrame(rows, schema={"method": pl.String, "attribute": pl.String,
                                      "query_id": pl.String, "rank": pl.Int32,
                                      "retrieved_id": pl.String, "score": pl.Float32},
                        orient="row")


def test_evaluate_applies_image_only_rows_to_every_attribute_and_excludes_missing():
    table = evaluate(results(), truth_frame(), TRAIN, [A, B])
    assert table.columns == list(EVAL_COLUMNS)
    # image_only (null attribute) -> A and B; image_text -> A only: 2*4 + 4 rows.
    assert table.height == 12
    assert table["attribute"].unique(maintain_order=True).to_list() == [A, B]
    got = {(r["method"], r["attribute"], r["query_id"], r["rank"]): (r["percentile"],
                                                                      r["excluded"])
           for r in table.iter_rows(named=True)}
    # A: N = 5 (T5 missing). Q0 = 1.2: T2 -> 25; T5 has no value; Q1 has no value.
    assert got[("image_only", A, "Q0", 1)] == (25.0, None)
    assert got[("image_only", A, "Q0", 2)] == (None, "retrieved")
    assert got[("image_only", A, "Q1", 1)] == (None, "query")
    assert got[("image_text", A, "Q0", 1)] == (25.0, None)
    # B: N = 5 (T4 missing). Q0 = 31: T2 (d=1) closest -> 0; T5 (d=29) farthest -> 100.
    assert got[("image_only", B, "Q0", 1)] == (0.0, None)
    assert got[("image_only", B, "Q0", 2)] == (100.0, None)
    # Q1 = 59: T1 (d=39) has T5 (1), T3 (19), T2 (29) closer -> 3/4; T4 has no B.
    assert got[("image_only", B, "Q1", 1)] == (75.0, None)
    assert got[("image_only", B, "Q1", 2)] == (None, "retrieved")
    summary = summarize(table)
    assert summary.columns == list(SUMMARY_COLUMNS)
    row = summary.filter((pl.col("method") == "image_only") & (pl.col("attribute") == A)).row(
        0, named=True)
    assert (row["n"], row["excluded"], row["median"]) == (1, 3, 25.0)


def test_evaluate_rejects_bad_ids():
    with pytest.raises(OverlapError):
        evaluate(results(), truth_frame(), TRAIN + ["Q0"], [A])
    with pytest.raises(ValueError, match="not in the train set"):
        evaluate(results(), truth_frame(), TRAIN[:4], [A])
    with pytest.raises(ValueError, match="missing from truth"):
        evaluate(results(), truth_frame().filter(pl.col("isic_id") != "Q1"), TRAIN, [A])
    with pytest.raises(ValueError, match="truth lacks"):
        evaluate(results(), truth_frame(), TRAIN, ["tbp_lv_B"])


def test_summary_median_and_iqr_by_hand():
    values = [10.0, 20.0, 30.0, 40.0, None, 100.0]  # linear quantiles of 10, 20, 30, 40, 100
    table = pl.DataFrame({
        "method": ["monet"] * 6 + ["image_text"] * 2,
        "attribute": [A] * 6 + [A] * 2,
        "percentile": values + [5.0, 7.0],
    })
    s = summarize(table)
    assert s["method"].to_list() == ["image_text", "monet"]  # METHODS order
    monet = s.row(1, named=True)
    assert monet == {"method": "monet", "attribute": A, "n": 5, "median": 30.0, "q1": 20.0,
                     "q3": 40.0, "mean": 40.0, "excluded": 1}
    it = s.row(0, named=True)
    assert (it["median"], it["q1"], it["q3"]) == (6.0, 5.5, 6.5)
    md = markdown_table(s, digits=1)
    assert md.splitlines()[0] == "| " + " | ".join(SUMMARY_COLUMNS) + " |"
    assert f"| monet | {A} | 5 | 30.0 | 20.0 | 40.0 | 40.0 | 1 |" in md
