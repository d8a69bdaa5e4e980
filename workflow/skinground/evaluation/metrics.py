"""Fig. 2's numbers: R² per (model, attribute) of the answers read back (``answers``).

Unparsable answers are never silently dropped: ``r2_table`` counts them and reports R² both
on the parsed answers only and with each unparsable answer replaced by the train mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from skinground.core.tables import read_parquet
from skinground.data.answers import parse_group_answer, parse_number_lenient
from skinground.data.attributes import GROUP_ATTRIBUTE_PREFIX, ID_COLUMN

TABLE_COLUMNS = ("model", "attribute", "n", "n_unparsable", "r2_parsed", "r2_filled")


def r2_score(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Coefficient of determination, ``1 - SS_res / SS_tot`` (may be negative).

    NaN when there are fewer than 2 values or the true values have zero variance
    (scikit-learn returns 1.0 or 0.0 there; an R² without variance is undefined, so this
    reports NaN rather than a number that looks like a result).
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length: {t.shape} {p.shape}")
    if t.size < 2:
        return math.nan
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return math.nan
    ss_res = float(np.sum((t - p) ** 2))
    return 1.0 - ss_res / ss_tot


def truth_long(truth: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """Ground truth in long form (isic_id, attribute, truth) from a wide frame (the
    manifest: isic_id + one column per attribute), without missing values (null or NaN)."""
    absent = [a for a in attributes if a not in truth.columns]
    if absent:
        raise ValueError(f"ground truth lacks attribute column(s): {absent}")
    return (
        truth.select(pl.col(ID_COLUMN), *[pl.col(a).cast(pl.Float64) for a in attributes])
        .unpivot(index=ID_COLUMN, variable_name="attribute", value_name="truth")
        .filter(pl.col("truth").is_not_null() & pl.col("truth").is_not_nan())
    )


def r2_table(predictions: pl.DataFrame, truth: pl.DataFrame,
             train_means: Mapping[str, float]) -> pl.DataFrame:
    """R² per (model, attribute) of the predictions against the ground truth.

    ``predictions``: columns model, isic_id, attribute, value (null = unparsable answer).
    ``truth``: the manifest (isic_id + one column per attribute; null/NaN = missing).
    ``train_means``: the train-set mean of each attribute; its order orders the rows.

    Columns: model, attribute, n (test pairs with a ground-truth value; pairs whose truth is
    missing are excluded), n_unparsable (of those n), r2_parsed (R² on the parsed answers
    only), r2_filled (R² on all n, each unparsable answer replaced by the train mean).
    """
    need = {"model", ID_COLUMN, "attribute", "value"}
    if missing := need - set(predictions.columns):
        raise ValueError(f"predictions lack column(s): {sorted(missing)}")
    attrs = list(train_means)
    unknown = sorted(set(predictions["attribute"].unique().to_list()) - set(attrs))
    if unknown:
        raise ValueError(f"no train mean for attribute(s): {unknown}")
    dup = predictions.group_by("model", ID_COLUMN, "attribute").len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"{dup.height} duplicated (model, isic_id, attribute) predictions")
    absent = set(predictions[ID_COLUMN].unique().to_list()) - set(truth[ID_COLUMN].to_list())
    if absent:
        raise ValueError(f"predictions for image(s) not in the ground truth: {sorted(absent)[:5]}")

    pairs = predictions.select("model", ID_COLUMN, "attribute", pl.col("value").cast(pl.Float64))
    joined = pairs.join(truth_long(truth, attrs), on=[ID_COLUMN, "attribute"], how="inner")
    asked = set(pairs.select("model", "attribute").unique().iter_rows())
    rows = []
    for model in sorted({m for m, _ in asked}):
        for attr in (a for a in attrs if (model, a) in asked):
            sub = joined.filter((pl.col("model") == model) & (pl.col("attribute") == attr))
            y = sub["truth"].to_numpy()
            v = sub["value"].to_numpy(allow_copy=True).astype(np.float64)  # null -> NaN
            parsed = ~np.isnan(v)
            filled = np.where(parsed, v, float(train_means[attr]))
            rows.append({
                "model": model, "attribute": attr, "n": int(sub.height),
                "n_unparsable": int((~parsed).sum()),
                "r2_parsed": r2_score(y[parsed], v[parsed]),
                "r2_filled": r2_score(y, filled),
            })
    schema = {"model": pl.String, "attribute": pl.String, "n": pl.Int64,
              "n_unparsable": pl.Int64, "r2_parsed": pl.Float64, "r2_filled": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def lenient_r2_table(predictions: pl.DataFrame, truth: pl.DataFrame,
                     train_means: Mapping[str, float]) -> pl.DataFrame:
    """:func:`r2_table` twice: on the predictions' strict ``value`` (columns as r2_table's,
    ``_strict``), and on the ``answer`` re-read with :func:`parse_number_lenient`
    (``_lenient``); plus model, attribute, n."""
    lenient = predictions.with_columns(
        pl.col("answer").map_elements(parse_number_lenient, return_dtype=pl.Float64)
        .alias("value"))
    keys = ["model", "attribute", "n"]
    strict_t, lenient_t = (r2_table(p, truth, train_means) for p in (predictions, lenient))
    rename = {c: f"{c}_{{}}" for c in strict_t.columns if c not in keys}
    return strict_t.rename({c: f.format("strict") for c, f in rename.items()}).join(
        lenient_t.rename({c: f.format("lenient") for c, f in rename.items()}), on=keys,
        how="left", maintain_order="left")

def train_means(manifest: pl.DataFrame, train_ids: Sequence[str],
                attributes: Sequence[str]) -> dict[str, float]:
    """The mean of each attribute over the train images (missing values left out)."""
    train = manifest.filter(pl.col(ID_COLUMN).is_in(list(train_ids)))
    means = {}
    for a in attributes:
        col = train[a].cast(pl.Float64).fill_nan(None).drop_nulls()
        if col.len() == 0:
            raise ValueError(f"attribute {a} has no train value: no mean to fill with")
        means[a] = float(col.mean())
    return means


# ---------------------------------------------------------------- group answers


def group_value_rows(predictions: pl.DataFrame, groups: Mapping[str, Mapping]) -> pl.DataFrame:
    """The group answers among ``predictions`` (``attribute`` = ``group:<name>``) as one row
    per (model, group, isic_id, member attribute) with the parsed ``value`` (null: missing)."""
    rows = []
    tagged = predictions.filter(pl.col("attribute").str.starts_with(GROUP_ATTRIBUTE_PREFIX))
    for row in tagged.iter_rows(named=True):
        group = row["attribute"][len(GROUP_ATTRIBUTE_PREFIX):]
        members = groups[group]["attributes"]
        for a, v in zip(members, parse_group_answer(row["answer"], len(members)), strict=True):
            rows.append({"model": row["model"], "group": group, ID_COLUMN: row[ID_COLUMN],
                         "attribute": a, "value": v})
    return pl.DataFrame(rows, schema={"model": pl.String, "group": pl.String,
                                      ID_COLUMN: pl.String, "attribute": pl.String,
                                      "value": pl.Float64})


def group_r2(predictions: pl.DataFrame, truth: pl.DataFrame, train_means: Mapping[str, float],
             groups: Mapping[str, Mapping]) -> pl.DataFrame:
    """R² of each member attribute read from the group answers (``metrics.r2_table``'s
    columns, after ``group``); empty when no group question was asked."""
    values = group_value_rows(predictions, groups)
    parts = []
    for group, spec in groups.items():
        sub = values.filter(pl.col("group") == group).drop("group")
        if sub.height:
            means = {a: train_means[a] for a in spec["attributes"]}
            parts.append(r2_table(sub, truth, means).select(
                pl.lit(group).alias("group"), pl.all()))
    schema = {"group": pl.String, "model": pl.String, "attribute": pl.String, "n": pl.Int64,
              "n_unparsable": pl.Int64, "r2_parsed": pl.Float64, "r2_filled": pl.Float64}
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def with_labels(table: pl.DataFrame, attributes: Mapping[str, Mapping]) -> pl.DataFrame:
    """An R² table with each attribute's short ``label`` (config ``attributes``) after it."""
    labels = {col: spec["label"] for col, spec in attributes.items()}
    return table.with_columns(
        pl.col("attribute").replace_strict(labels, return_dtype=pl.String).alias("label")
    ).select("model", "attribute", "label", pl.exclude("model", "attribute", "label"))


def read_answers(predictions, manifest, train_ids_file, attributes: Mapping[str, Mapping],
                 ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """What an R² table is made of: the predictions and the manifest (parquet paths) and each
    attribute's train mean (``train_ids_file``: the train split's ids)."""
    from skinground.core.io import read_lines

    manifest = read_parquet(manifest)
    means = train_means(manifest, read_lines(train_ids_file), list(attributes))
    return read_parquet(predictions), manifest, means


# ---------------------------------------------------------------- intervals, robust metrics

#: An answer is off by an order of magnitude when it and the truth differ by this factor or
#: more in absolute value (:func:`magnitude_errors`).
MAGNITUDE_FACTOR = 10.0


def magnitude_errors(y_true, y_pred, resolution: float) -> np.ndarray:
    """Whether each answer is off by an order of magnitude or more: the larger of |ŷ| and
    |y| is at least ``MAGNITUDE_FACTOR`` times the smaller, the smaller floored at
    ``resolution`` (the answer's last decimal, 10^-decimals: a true 0 is not infinitely far
    from 0.01). "120.77" for 10.3 is; "22.0" for 26.3 is not. Float 0/1."""
    t = np.abs(np.asarray(y_true, dtype=np.float64))
    p = np.abs(np.asarray(y_pred, dtype=np.float64))
    small = np.maximum(np.minimum(t, p), resolution)
    return (np.maximum(t, p) >= MAGNITUDE_FACTOR * small).astype(np.float64)


#: The metrics :func:`with_intervals` adds, each with ``_lo`` / ``_hi``: (column, what).
ROBUST_METRICS = ("spearman", "median_abs_error", "magnitude_share")


def with_intervals(table: pl.DataFrame, predictions: pl.DataFrame, truth: pl.DataFrame,
                   train_means: Mapping[str, float], boot, codes_of, confidence: float,
                   decimals: Mapping[str, int]) -> pl.DataFrame:
    """``r2_table``'s rows with a bootstrap interval (over test patients) for r2_parsed and
    r2_filled, and the metrics one wrong digit cannot wreck, each with its interval:
    Spearman's ρ, the median absolute error and the share of answers off by an order of
    magnitude (:func:`magnitude_errors`), all on the parsed answers.

    ``boot``: ``stats.Bootstrap``; ``codes_of(ids)``: the patient index of each image id;
    ``decimals``: each attribute's answer decimals."""
    from skinground.evaluation import stats

    pairs = (predictions.select("model", ID_COLUMN, "attribute",
                                pl.col("value").cast(pl.Float64))
             .join(truth_long(truth, list(train_means)), on=[ID_COLUMN, "attribute"],
                   how="inner"))
    rows = []
    for row in table.iter_rows(named=True):
        sub = pairs.filter((pl.col("model") == row["model"])
                           & (pl.col("attribute") == row["attribute"]))
        y = sub["truth"].to_numpy()
        v = sub["value"].to_numpy(allow_copy=True).astype(np.float64)
        codes = codes_of(sub[ID_COLUMN])
        parsed = np.isfinite(v)
        filled = np.where(parsed, v, float(train_means[row["attribute"]]))
        error = np.where(parsed, np.abs(v - y), np.nan)
        wrong = np.where(parsed, magnitude_errors(y, v, 10.0 ** -decimals[row["attribute"]]),
                         np.nan)
        values = {
            "r2_parsed": (row["r2_parsed"], stats.bootstrap_r2(boot, codes, y, v)),
            "r2_filled": (row["r2_filled"], stats.bootstrap_r2(boot, codes, y, filled)),
            "spearman": (_spearman(y[parsed], v[parsed]),
                         stats.bootstrap_spearman(boot, codes, y, v)),
            "median_abs_error": (float(np.median(error[parsed])) if parsed.any() else math.nan,
                                 stats.bootstrap_median(boot, codes, error)),
            "magnitude_share": (float(np.nanmean(wrong)) if parsed.any() else math.nan,
                                stats.bootstrap_mean(boot, codes, wrong)),
        }
        out = {k: row[k] for k in ("model", "attribute", "n", "n_unparsable")}
        for name, (value, reps) in values.items():
            lo, hi = stats.interval(reps, confidence)
            out.update({name: value, f"{name}_lo": lo, f"{name}_hi": hi})
        rows.append(out)
    schema = {"model": pl.String, "attribute": pl.String, "n": pl.Int64,
              "n_unparsable": pl.Int64}
    for name in ("r2_parsed", "r2_filled", *ROBUST_METRICS):
        schema.update({name: pl.Float64, f"{name}_lo": pl.Float64, f"{name}_hi": pl.Float64})
    return pl.DataFrame(rows, schema=schema)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ (NaN: fewer than 2 pairs or a constant side)."""
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)
