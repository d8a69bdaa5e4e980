"""Training tuples D_tr: for each train image I, W attributes sampled uniformly at random
without replacement, giving rows (I, a, Q(a), y_a(I)).

An image with fewer than W available (non-missing) attributes contributes all it has, so
|D_tr| = Σ_I min(W, |A_available(I)|); with no missing values |D_tr| = |I_tr| × W
(paper: 282,564 × 5 = 1,412,820).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from skinground.core.errors import InputError
from skinground.data.answers import format_answer
from skinground.data.attributes import ID_COLUMN


class TupleError(InputError):
    pass


def resolve_w(w: int | str, n_attributes: int) -> int:
    """``tuples.W``: an integer in [1, |A|], or ``"all"``."""
    if w == "all":
        return n_attributes
    if not isinstance(w, int) or not 1 <= w <= n_attributes:
        raise TupleError(f"tuples.W must be 'all' or an integer in [1, {n_attributes}], got {w!r}")
    return w


def sample_tuples(
    train: pl.DataFrame, attributes: Mapping[str, Mapping], *, w: int | str, seed: int
) -> pl.DataFrame:
    """Sample the tuples for the ``train`` images (manifest rows; null = missing value).

    ``attributes`` maps each attribute column to its ``question`` and ``decimals``.
    Images are taken in ``isic_id`` order and one seeded generator draws a random key per
    (image, attribute); the W smallest keys among the available attributes are the sample,
    which is uniform without replacement and byte-for-byte reproducible.
    """
    names = list(attributes)
    w = resolve_w(w, len(names))
    train = train.sort(ID_COLUMN)
    values = train.select(names).to_numpy().astype(np.float64)  # null -> nan
    available = np.isfinite(values)
    keys = np.random.default_rng(seed).random(values.shape)
    keys[~available] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")[:, :w]
    chosen = np.take_along_axis(available, order, axis=1)
    rows, cols = np.nonzero(chosen)
    attr_idx = order[rows, cols]
    ids = train[ID_COLUMN].to_numpy()[rows]
    answers = [
        format_answer(values[r, a], attributes[names[a]]["decimals"])
        for r, a in zip(rows.tolist(), attr_idx.tolist(), strict=True)
    ]
    return pl.DataFrame(
        {
            ID_COLUMN: ids,
            "attribute": [names[a] for a in attr_idx.tolist()],
            "question": [attributes[names[a]]["question"] for a in attr_idx.tolist()],
            "answer": answers,
        },
        schema={ID_COLUMN: pl.String, "attribute": pl.String, "question": pl.String,
                "answer": pl.String},
    )


def summarize(tuples: pl.DataFrame, n_images: int, w: int) -> dict:
    """Counts for the tuple stage's JSON summary."""
    per_image = tuples.group_by(ID_COLUMN).len()
    return {
        "tuples": tuples.height,
        "images": n_images,
        "W": w,
        "images_with_fewer_than_W": int(n_images - (per_image["len"] == w).sum()),
        "per_attribute": dict(
            tuples.group_by("attribute").len().sort("attribute").iter_rows()
        ),
    }
