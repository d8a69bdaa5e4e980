"""Exact cosine-similarity search over embeddings with FAISS.

Cosine similarity = inner product of L2-normalised vectors, so the index is an
``IndexFlatIP`` over normalised float32 rows: exhaustive, exact up to float32 rounding (no
quantisation, no training). It moves to the GPU(s) when the installed faiss has GPU support
and a GPU is visible (faiss-gpu on the cluster), and stays on the CPU otherwise (faiss-cpu).

Zero vectors: :func:`normalize` leaves an all-zero row at zero (it has no direction), so it
scores exactly 0 against every vector; a zero query therefore ranks the database in an
unspecified order. Non-finite values (NaN, ±inf) raise: they mean a broken embedding.

Ties: FAISS does not specify the order of database rows with EQUAL scores. On the CPU a flat
index keeps the top k in a heap and sorts it by score only (the query-count threshold that
switches to the BLAS path, 20, changes the visiting order); the GPU k-select differs again.
Equal scores may also come out in a different order between CPU and GPU builds. Callers
must not rely on tie order; tests use data without exact (or near-float32) ties.
"""

from __future__ import annotations

import logging
import os

import faiss
import numpy as np

from skinground.core.errors import InputError
from skinground.core.io import atomic_path
from skinground.retrieval.spaces import REBUILD, as_rows, block_rows, blocks

log = logging.getLogger(__name__)

#: Float32 rows normalised / added per chunk (at d = 3,584: 18,724 rows); normalising one
#: takes ~3.5x this in temporaries (the stored block, its float32 copy, the result).
CHUNK_BYTES = 256 << 20
#: Normalised float32 queries searched at once (at d = 3,584: 18,724 queries).
QUERY_BLOCK_BYTES = 256 << 20


def normalize(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 [n, d] with L2-normalised rows (a new C-contiguous array).

    All-zero rows stay zero. Raises ValueError on a non-2-D input or non-finite values.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array [n, d], got shape {x.shape}")
    out = np.empty(x.shape, dtype=np.float32)
    step = block_rows(max(1, x.shape[1]), CHUNK_BYTES)
    for start in range(0, x.shape[0], step):
        block = np.asarray(x[start:start + step], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(f"non-finite value in embedding row {bad}")
        # Norms in float64: no overflow/underflow of the squares for extreme float32 values.
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))[:, None]
        norms[norms == 0] = 1.0  # a zero row divided by 1 stays zero
        np.divide(block, norms, out=out[start:start + step])
    return out


def gpu_available() -> bool:
    """True when this faiss build has GPU support and at least one GPU is visible."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_device(index: faiss.Index, *, gpu: bool | None = None) -> faiss.Index:
    """``index`` on all visible GPUs when ``gpu`` (None = when available), else unchanged."""
    if gpu is None:
        gpu = gpu_available()
    if gpu:
        if not gpu_available():
            raise RuntimeError("gpu=True but faiss has no GPU support or sees no GPU")
        log.info("moving the index to %d GPU(s)", faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)
    return index


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU (or multi-GPU replica) index; on faiss-cpu, ``index`` as is."""
    if hasattr(faiss, "StandardGpuResources"):  # a copy of a CPU index, harmless
        return faiss.index_gpu_to_cpu(index)
    return index


def build_index(vectors, *, gpu: bool | None = None) -> faiss.Index:
    """An exact cosine index over the rows of ``vectors`` [n, d] (row i has id i): an array,
    or a :class:`spaces.Space` read in chunks.

    ``IndexFlatIP`` over the normalised float32 rows, added in chunks; on the GPU(s) when
    ``gpu`` is True, or None (default) and :func:`gpu_available`. Peak host memory: the index,
    ``n x d x 4`` bytes, twice (FAISS holds the old and the new storage while it grows it:
    measured at scale, docs/cost-and-scale.md), plus one chunk's temporaries (~3.5 x
    ``CHUNK_BYTES``); on a GPU the host copy is freed once the index is there (float32 on the
    GPU too: see :func:`to_device`).
    """
    rows = as_rows(vectors)
    if rows.dim == 0:
        raise ValueError(f"expected a 2-D array [n, d] with d > 0, got shape {rows.shape}")
    index = faiss.IndexFlatIP(rows.dim)
    for _, block in blocks(rows, block_rows(rows.dim, CHUNK_BYTES)):
        index.add(normalize(block))
    return to_device(index, gpu=gpu)


def search(index: faiss.Index, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` database rows for each query by cosine similarity.

    ``queries``: an array [Q, d] or a :class:`spaces.Space`, searched in blocks of
    ``QUERY_BLOCK_BYTES`` of normalised float32 (never one float32 copy of them all).
    Returns ``(scores, idx)``: float32 [Q, k] cosine similarities, descending along each row,
    and int64 [Q, k] database row numbers. Order among equal scores is unspecified (see the
    module doc). Raises ValueError when ``k`` is not in 1..index.ntotal or the query dimension
    does not match.
    """
    rows = as_rows(queries)
    if rows.dim != index.d:
        raise ValueError(f"queries must be [Q, {index.d}], got shape {rows.shape}")
    k = int(k)
    if not 1 <= k <= index.ntotal:
        raise ValueError(f"k={k} must be in 1..{index.ntotal} (the database size)")
    scores = np.empty((len(rows), k), np.float32)
    idx = np.empty((len(rows), k), np.int64)
    for start, block in blocks(rows, block_rows(index.d, QUERY_BLOCK_BYTES)):
        s, i = index.search(normalize(block), k)
        scores[start:start + len(block)] = s
        idx[start:start + len(block)] = i
    if (idx < 0).any():  # cannot happen for a flat index with k <= ntotal; never pass -1 on
        raise RuntimeError("faiss returned fewer than k results")
    return scores, idx


def save_index(index: faiss.Index, path: str | os.PathLike) -> None:
    """Write ``index`` (copied to the CPU first if on a GPU) atomically to ``path``."""
    with atomic_path(path) as tmp:
        faiss.write_index(to_cpu(index), str(tmp))


def load_index(path: str | os.PathLike, *, gpu: bool | None = None) -> faiss.Index:
    """Read an index written by :func:`save_index`; to the GPU(s) as in :func:`build_index`.
    A missing, cut or damaged file raises ``InputError`` in one line naming it and the fix."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:  # FAISS's C++ exception, a multi-line dump
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if ln.startswith("Error")), lines[0] if lines else "")
        raise InputError(f"{path}: not a readable FAISS index ({reason[:160]}); "
                         f"{REBUILD}") from None
    return to_device(index, gpu=gpu)
