"""Sharded embedding files: which images a shard holds, and the arrays a shard stores.

The ids of a split are sorted and cut into ``n`` contiguous shards (one job each, so a cluster
runs them in parallel and a failed shard reruns alone); merging the shards in order gives the
sorted ids again. A shard file (``.npz``, uncompressed) holds ``ids`` and one float16 array per
embedding space: ``im`` (h_im, or MONET's image features) and, for the tuned model, one array
per attribute a (h_im,a), so a merge of one space reads only that member.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .io import atomic_path

IMAGE_SPACE = "im"


def shard_ids(ids: Sequence[str], n_shards: int, shard: int) -> list[str]:
    """The ``shard``-th of ``n_shards`` contiguous chunks of the sorted ``ids``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in [0, {n_shards})")
    chunks = np.array_split(np.array(sorted(ids), dtype=object), n_shards)
    return [str(i) for i in chunks[shard]]


def write_shard(path: str | os.PathLike, ids: Sequence[str],
                spaces: Mapping[str, np.ndarray]) -> None:
    """Write ``ids`` and the float16 array of each space (rows aligned with ``ids``)."""
    for name, arr in spaces.items():
        if arr.shape[0] != len(ids):
            raise ValueError(f"space {name}: {arr.shape[0]} rows for {len(ids)} ids")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(list(ids), dtype=str),
                 **{name: np.asarray(arr, dtype=np.float16) for name, arr in spaces.items()})


def merge_space(paths: Sequence[str | os.PathLike], space: str) -> tuple[list[str], np.ndarray]:
    """Concatenate one space over the shard files, in order: ``(ids, float16 [N, d])``."""
    ids: list[str] = []
    parts = []
    for p in paths:
        with np.load(p) as shard:
            if space not in shard.files:
                raise ValueError(f"{p} has no embedding space {space!r} "
                                 f"(it has {', '.join(f for f in shard.files if f != 'ids')})")
            ids.extend(shard["ids"].tolist())
            parts.append(shard[space])
    if len(set(ids)) != len(ids):
        raise ValueError(f"shards {paths} share ids")
    return ids, np.concatenate(parts) if parts else np.empty((0, 0), np.float16)


def write_space(path: str | os.PathLike, ids: Sequence[str], vectors: np.ndarray) -> None:
    """A merged space: ``ids`` and ``vectors`` (float16 [N, d])."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(list(ids), dtype=str), vectors=vectors.astype(np.float16))


def read_space(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(ids, float32 vectors)`` of a merged space."""
    with np.load(path) as f:
        return f["ids"].tolist(), f["vectors"].astype(np.float32)
