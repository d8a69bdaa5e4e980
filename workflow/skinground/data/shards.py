"""Sharded outputs: which images a shard holds, what an embedding shard stores, and merging
the prediction shards (the merged embedding spaces: ``skinground.retrieval.spaces``).

The ids of a split are sorted and cut into ``n`` contiguous shards (one job each, so a cluster
runs them in parallel and a failed shard reruns alone); merging the shards in order gives the
sorted ids again. A shard file (``.npz``, uncompressed) holds ``ids`` and one float16 array per
embedding space: ``im`` (h_im, or MONET's image features) and, for the tuned model, one array
per attribute a (h_im,a), so a merge of one space reads only that member
(``skinground.retrieval.spaces.merge_space``). A prediction shard
(parquet) holds one row per (image, attribute): ``model`` + ``PREDICTION_SCHEMA``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from skinground.core.errors import InputError
from skinground.core.io import atomic_path
from skinground.core.tables import read_parquet
from skinground.data.attributes import ID_COLUMN

PREDICTION_SCHEMA = {ID_COLUMN: pl.String, "attribute": pl.String, "answer": pl.String,
                     "value": pl.Float64}


class ShardError(InputError):
    """A shard file is unreadable or inconsistent with the others (the message names it)."""


def shard_ids(ids: Sequence[str], n_shards: int, shard: int) -> list[str]:
    """The ``shard``-th of ``n_shards`` contiguous chunks of the sorted ``ids``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in [0, {n_shards})")
    chunks = np.array_split(np.array(sorted(ids), dtype=object), n_shards)
    return [str(i) for i in chunks[shard]]


def write_shard(path: str | os.PathLike, ids: Sequence[str],
                spaces: Mapping[str, np.ndarray], record: Mapping | None = None) -> None:
    """Write ``ids``, the float16 array of each space (rows aligned with ``ids``) and the
    record of what made them (``skinground.core.provenance``; None: none applies)."""
    from skinground.core import provenance

    for name, arr in spaces.items():
        if arr.shape[0] != len(ids):
            raise ValueError(f"space {name}: {arr.shape[0]} rows for {len(ids)} ids")
        if name in ("ids", provenance.NPZ_MEMBER):
            raise ValueError(f"{name!r} is not a space's name")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(list(ids), dtype=str),
                 **{provenance.NPZ_MEMBER: np.array(provenance.encode(record))},
                 **{name: np.asarray(arr, dtype=np.float16) for name, arr in spaces.items()})


def merge_predictions(paths: Sequence[str | os.PathLike]) -> pl.DataFrame:
    """The prediction shards concatenated in order; raises ``ShardError`` naming a shard
    that is not a predictions file or repeats an image of an earlier shard."""
    parts, seen = [], set()
    for path in paths:
        try:
            frame = read_parquet(path)
        except InputError as err:
            raise ShardError(f"not a readable predictions shard: {err}") from None
        missing = [c for c in ("model", *PREDICTION_SCHEMA) if c not in frame.columns]
        if missing:
            raise ShardError(f"{path}: not a predictions shard (no column {missing[0]})")
        ids = set(frame[ID_COLUMN].unique().to_list())
        if ids & seen:
            raise ShardError(f"{path} repeats image(s) of an earlier shard, e.g. "
                             f"{sorted(ids & seen)[0]}")
        seen |= ids
        parts.append(frame)
    return pl.concat(parts)
