"""The group criterion of multi-attribute retrieval: for each image a group method retrieved,
the max and the mean over the group's attributes of the percentile ranks that
:func:`skinground.evaluation.percentile.evaluate` computes per attribute (lower is better)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from skinground.core.plan import group_method_order, group_space
from skinground.evaluation.percentile import evaluate

GROUP_EVAL_COLUMNS = ("method", "group", "query_id", "rank", "retrieved_id", "max", "mean",
                      "excluded")
GROUP_SUMMARY_COLUMNS = ("group", "method", "criterion", "n", "median", "q1", "q3", "mean",
                         "excluded")


def evaluate_groups(results: pl.DataFrame, truth: pl.DataFrame, train_ids: Sequence[str],
                    groups: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    """The group criterion of every retrieved image: the max and the mean, over the group's
    attributes, of the percentile ranks :func:`evaluate` computes per attribute.

    ``results``: rows of group methods (``attribute`` = the group's space,
    ``plan.group_space(g)``) and of image-only methods (``attribute`` null: every group).
    ``groups``: group -> its attributes. A retrieved image for which the query or it lacks
    a group attribute's value gets null criteria and ``excluded`` = True.
    """
    parts = []
    for group, attributes in groups.items():
        rows = results.filter(pl.col("attribute").is_null()
                              | (pl.col("attribute") == group_space(group)))
        if rows.height == 0:
            continue
        per_attribute = evaluate(rows.with_columns(attribute=pl.lit(None, pl.String)), truth,
                                 train_ids, list(attributes))
        p = pl.col("percentile")
        agg = (per_attribute.group_by("method", "query_id", "rank", "retrieved_id")
               .agg(max=p.max(), mean=p.mean(), excluded=p.null_count() > 0)
               .with_columns(group=pl.lit(group, pl.String),
                             max=pl.when(pl.col("excluded")).then(None).otherwise("max"),
                             mean=pl.when(pl.col("excluded")).then(None).otherwise("mean")))
        parts.append(agg.select(GROUP_EVAL_COLUMNS))
    if not parts:
        return pl.DataFrame(schema={"method": pl.String, "group": pl.String,
                                    "query_id": pl.String, "rank": pl.Int32,
                                    "retrieved_id": pl.String, "max": pl.Float64,
                                    "mean": pl.Float64, "excluded": pl.Boolean})
    order = {g: i for i, g in enumerate(groups)}
    table = pl.concat(parts)
    return (table.with_columns(_g=pl.col("group").replace_strict(order),
                               _m=pl.col("method").replace_strict(
                                   {m: i for i, m in enumerate(
                                       group_method_order(table["method"].unique()))}))
            .sort("_g", "_m", "query_id", "rank").drop("_g", "_m"))


def criteria_long(table: pl.DataFrame) -> pl.DataFrame:
    """:func:`evaluate_groups`' table with one row per criterion: method, group, criterion
    ("max" / "mean"), query_id, rank, value (the shape the intervals and tests read)."""
    return table.unpivot(on=["max", "mean"], index=["method", "group", "query_id", "rank"],
                         variable_name="criterion", value_name="value")


def summarize_groups(table: pl.DataFrame) -> pl.DataFrame:
    """Per group x method x criterion (max, mean): n, median, q1, q3, mean, excluded."""
    parts = []
    for criterion in ("max", "mean"):
        c = pl.col(criterion)
        parts.append(table.group_by("group", "method", maintain_order=True).agg(
            criterion=pl.lit(criterion), n=c.count().cast(pl.Int64), median=c.median(),
            q1=c.quantile(0.25, interpolation="linear"),
            q3=c.quantile(0.75, interpolation="linear"), mean=c.mean(),
            excluded=pl.col("excluded").sum().cast(pl.Int64)))
    out = pl.concat(parts).select(GROUP_SUMMARY_COLUMNS)
    groups = list(dict.fromkeys(table["group"].to_list()))
    methods = group_method_order(table["method"].unique())
    return (out.with_columns(_g=pl.col("group").replace_strict(
                                 {g: i for i, g in enumerate(groups)}),
                             _m=pl.col("method").replace_strict(
                                 {m: i for i, m in enumerate(methods)}))
            .sort("_g", "_m", "criterion").drop("_g", "_m"))


def random_hits(query_ids: Sequence[str], train_ids: Sequence[str], k: int,
                seed: int = 0) -> pl.DataFrame:
    """The reference of the group criterion: ``k`` train images drawn at random (seeded,
    without replacement) for each query, as results rows of method "random"."""
    rng = np.random.default_rng(seed)
    queries, train = sorted(set(query_ids)), list(train_ids)
    picks = [rng.choice(len(train), size=k, replace=False) for _ in queries]
    return pl.DataFrame({
        "method": "random", "attribute": None,
        "query_id": [q for q in queries for _ in range(k)],
        "rank": [r + 1 for _ in queries for r in range(k)],
        "retrieved_id": [train[i] for p in picks for i in p],
        "score": 0.0,
    }, schema={"method": pl.String, "attribute": pl.String, "query_id": pl.String,
               "rank": pl.Int32, "retrieved_id": pl.String, "score": pl.Float32})
