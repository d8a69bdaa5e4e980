"""A clinical sanity check of retrieval: the share of retrieved images whose diagnosis label
(``iddx_1``, ``target``: config ``stats.diagnosis``) agrees with the query's, per method, with
a bootstrap interval over test patients.

An attribute-specific method (a, b) retrieves k images per attribute; its share pools all of
them. The reference is random retrieval: for a query with label c, a random train image
agrees with probability (train images labelled c) / (train images with a label); the
``random`` row is the mean of that over the queries. Pairs where the query or the retrieved
image has no label are left out (counted in ``n`` of the others).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from skinground.data.attributes import ID_COLUMN
from skinground.evaluation import stats
from skinground.evaluation.significance import patient_codes

COLUMNS = {"label": pl.String, "method": pl.String, "n": pl.Int64, "agreement": pl.Float64,
           "agreement_lo": pl.Float64, "agreement_hi": pl.Float64}
RANDOM = "random"


def agreement(results: pl.DataFrame, labels: pl.DataFrame, manifest: pl.DataFrame,
              train_ids: Sequence[str], columns: Sequence[str], boot: stats.Bootstrap,
              confidence: float, order: Sequence[str] = ()) -> pl.DataFrame:
    """Per label column and method (then ``random``): n retrieved images with both labels,
    the share that agree and its interval. ``results``: retrieval hits (method, query_id,
    retrieved_id, ...); ``labels``: isic_id + ``columns`` (text, null = none). The random
    row's n counts the queries with a label."""
    train = pl.Series(ID_COLUMN, list(train_ids), dtype=pl.String)
    rows = []
    for column in columns:
        label = labels.select(ID_COLUMN, pl.col(column).cast(pl.String))
        pairs = (results.select("method", "query_id", "retrieved_id")
                 .join(label.rename({ID_COLUMN: "query_id", column: "q"}), on="query_id",
                       how="left")
                 .join(label.rename({ID_COLUMN: "retrieved_id", column: "r"}),
                       on="retrieved_id", how="left")
                 .drop_nulls(["q", "r"]))
        present = set(pairs["method"].unique().to_list())
        for method in [m for m in order if m in present] + sorted(present - set(order)):
            part = pairs.filter(pl.col("method") == method)
            agree = (part["q"] == part["r"]).cast(pl.Float64).to_numpy()
            rows.append(_row(column, method, agree, patient_codes(boot, manifest,
                                                                  part["query_id"]),
                             boot, confidence))
        rows.append(_random_row(column, label, train, results["query_id"].unique(), boot,
                                manifest, confidence))
    return pl.DataFrame(rows, schema=COLUMNS)


def _row(column: str, method: str, agree: np.ndarray, codes: np.ndarray,
         boot: stats.Bootstrap, confidence: float) -> dict:
    lo, hi = stats.interval(stats.bootstrap_mean(boot, codes, agree), confidence)
    share = float(agree.mean()) if agree.size else float("nan")
    return {"label": column, "method": method, "n": int(agree.size), "agreement": share,
            "agreement_lo": lo, "agreement_hi": hi}


def _random_row(column: str, label: pl.DataFrame, train: pl.Series, queries: pl.Series,
                boot: stats.Bootstrap, manifest: pl.DataFrame, confidence: float) -> dict:
    """The expected share of a random train image: per query, the train share of its label."""
    in_train = label.filter(pl.col(ID_COLUMN).is_in(train.implode())).drop_nulls(column)
    share = (in_train.group_by(column).len()
             .with_columns(p=pl.col("len") / in_train.height).drop("len"))
    per_query = (label.filter(pl.col(ID_COLUMN).is_in(queries.implode()))
                 .drop_nulls(column).join(share, on=column, how="left")
                 .with_columns(pl.col("p").fill_null(0.0)))
    return _row(column, RANDOM, per_query["p"].to_numpy(),
                patient_codes(boot, manifest, per_query[ID_COLUMN]), boot, confidence)
