"""Fig. 3's claim, measured (the verdict's ``far_off`` expectations): the paper shows image-only
retrieval returning some images far off in area ("the area of the first query is significantly
lower than that of the fourth retrieved image") where image + text for area does not.

A retrieved image is *far off* when its value differs from the query's by more than the train
set's interquartile range of the attribute (a spread every attribute has, in its own unit). Two
scopes:

- Fig. 3's own queries (``grids.fig3_queries``: the figure's draw): the far-off images of each
  method, counted (a handful of queries: no test);
- every test query: each method's share of far-off images with its bootstrap interval (test
  patients resampled, the run's replicates), and the evaluation's paired test that the second
  method's per-query shares are lower (Wilcoxon signed-rank per test patient or query,
  one-sided; ``significance.claim_tests``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from skinground.data.attributes import ID_COLUMN, PATIENT_COLUMN
from skinground.evaluation import grids, significance, stats


def train_iqr(manifest: pl.DataFrame, train_ids: Sequence[str], attribute: str) -> float:
    """The interquartile range (numpy's linear quantiles) of ``attribute`` over the train
    images that have a finite value."""
    values = (manifest.filter(pl.col(ID_COLUMN).is_in(list(train_ids)))[attribute]
              .cast(pl.Float64).to_numpy())
    values = values[np.isfinite(values)]
    if values.size < 2:
        raise ValueError(f"{attribute}: fewer than 2 train values for an interquartile range")
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def far_rows(table: pl.DataFrame | pl.LazyFrame, attribute: str, methods: Sequence[str],
             iqr: float) -> pl.DataFrame:
    """The evaluation's rows (``evaluation.percentile.EVAL_COLUMNS``; a LazyFrame reads only
    these) of ``methods`` on ``attribute`` with a value for query and retrieved image, and
    ``far``: 1.0 where they differ by more than ``iqr``, else 0.0."""
    return (table.lazy()
            .filter((pl.col("attribute") == attribute) & pl.col("method").is_in(list(methods))
                    & pl.col("excluded").is_null())
            .select("method", "attribute", "query_id", "query_value", "retrieved_value")
            .with_columns(far=((pl.col("retrieved_value") - pl.col("query_value")).abs() > iqr)
                          .cast(pl.Float64))
            .collect())


@dataclass(frozen=True)
class Share:
    """A method's far-off images: how many of how many retrieved, the share and its interval."""

    far: int
    retrieved: int
    lo: float
    hi: float

    @property
    def share(self) -> float:
        return self.far / self.retrieved if self.retrieved else float("nan")


def figure_counts(rows: pl.DataFrame, queries: Sequence[str],
                  methods: Sequence[str]) -> dict[str, Share]:
    """Per method, its far-off images among its hits for Fig. 3's ``queries`` (no interval)."""
    picked = rows.filter(pl.col("query_id").is_in(list(queries)))
    out = {}
    for m in methods:
        far = picked.filter(pl.col("method") == m)["far"]
        out[m] = Share(int(far.sum()), far.len(), float("nan"), float("nan"))
    return out


def shares(rows: pl.DataFrame, methods: Sequence[str], boot: stats.Bootstrap,
           manifest: pl.DataFrame, confidence: float) -> dict[str, Share]:
    """Per method, its far-off images among all its hits, with the share's bootstrap interval
    (the query's patient resampled)."""
    out = {}
    for m in methods:
        part = rows.filter(pl.col("method") == m)
        codes = significance.patient_codes(boot, manifest, part["query_id"])
        lo, hi = stats.interval(stats.bootstrap_mean(boot, codes, part["far"].to_numpy()),
                                confidence)
        out[m] = Share(int(part["far"].sum()), part.height, lo, hi)
    return out


def test(rows: pl.DataFrame, fewer: str, more: str, manifest: pl.DataFrame, *, alpha: float,
         unit: str) -> dict:
    """The paired test that ``fewer``'s per-query shares of far-off images are lower than
    ``more``'s (``significance.claim_tests``, one cell, paired per ``unit``): its row."""
    claim = significance.Claim(fewer, more, "better",
                               f"{fewer} retrieves fewer far-off images than {more}")
    patients = (manifest.select(ID_COLUMN, PATIENT_COLUMN)
                if unit == "patient" else None)
    queries = significance.per_query(rows, ["attribute"], "far")
    tests = significance.claim_tests(queries, [claim], ["attribute"], "far", alpha,
                                     patients=patients)
    return tests.row(0, named=True)


@dataclass(frozen=True)
class FarOff:
    """One expectation's measures: the train IQR, Fig. 3's queries, the far-off counts on them
    and the shares on all test queries per method, and the paired test's row."""

    iqr: float
    queries: Sequence[str]
    figure: Mapping[str, Share]
    shares: Mapping[str, Share]
    test: Mapping[str, object]


def measure(table: pl.DataFrame | pl.LazyFrame, hits: pl.LazyFrame, manifest: pl.DataFrame,
            train_ids: Sequence[str], boot: stats.Bootstrap, *, attribute: str, method: str,
            than: str, k: int, queries: int, seed: int, confidence: float, alpha: float,
            unit: str) -> FarOff:
    """Far-off images of ``method`` (expected to retrieve some) and ``than`` (expected not
    to) on ``attribute``: ``table``, the evaluation's rows (``evaluate/percentiles.parquet``,
    best scanned: only the attribute's rows of the two methods are read);
    ``hits``, the retrievals Fig. 3 draws its ``queries`` from with ``seed``."""
    iqr = train_iqr(manifest, train_ids, attribute)
    rows = far_rows(table, attribute, (method, than), iqr)
    picked = grids.fig3_queries(hits, manifest, attribute, k, queries, seed)
    return FarOff(iqr, picked, figure_counts(rows, picked, (method, than)),
                  shares(rows, (method, than), boot, manifest, confidence),
                  test(rows, than, method, manifest, alpha=alpha, unit=unit))
