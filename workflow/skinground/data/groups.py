"""Multi-attribute retrieval (beyond the paper): groups G of attributes asked about in one
question Q(G) (``retrieve.groups``).

- The answer to Q(G) is the group's values in order, each with its attribute's decimals,
  joined by "; " (``answers.group_answer``; ``answers.parse_group_answer`` reads one back).
- ``tuples.group_share`` of the training tuples ask a group's question (:func:`add_group_tuples`).
- The group criterion of a retrieved image is ``skinground.evaluation.group_criterion``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from skinground.data.answers import group_answer
from skinground.data.attributes import GROUP_ATTRIBUTE_PREFIX, ID_COLUMN


def add_group_tuples(tuples: pl.DataFrame, train: pl.DataFrame,
                     groups: Mapping[str, Mapping], attributes: Mapping[str, Mapping], *,
                     share: float, seed: int) -> pl.DataFrame:
    """Replace ``share`` of ``tuples`` (seeded, uniformly) by a group question about the same
    image: a group drawn among those whose attributes the image all has; a tuple whose image
    has no complete group stays. The number of tuples does not change."""
    if share <= 0 or not groups or tuples.height == 0:
        return tuples
    rng = np.random.default_rng([seed, 1])
    values = {row[ID_COLUMN]: row for row in train.iter_rows(named=True)}
    names = list(groups)
    picked = rng.choice(tuples.height, size=round(share * tuples.height), replace=False)
    draws = rng.integers(0, 1 << 31, size=picked.size)
    rows = tuples.to_dicts()
    for i, draw in zip(picked.tolist(), draws.tolist(), strict=True):
        v = values[rows[i][ID_COLUMN]]
        complete = [g for g in names if all(_finite(v[a]) for a in groups[g]["attributes"])]
        if not complete:
            continue
        g = complete[draw % len(complete)]
        members = groups[g]["attributes"]
        rows[i] = {ID_COLUMN: rows[i][ID_COLUMN], "attribute": GROUP_ATTRIBUTE_PREFIX + g,
                   "question": groups[g]["question"],
                   "answer": group_answer([v[a] for a in members],
                                          [attributes[a]["decimals"] for a in members])}
    return pl.DataFrame(rows, schema=tuples.schema)


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)
