"""The retrieval methods, and their results as a table.

Database = train images (row i of every database array is train image ``db_ids[i]``),
queries = test images; cosine similarity; top ``k``.

- (a) ``image_text``: per attribute a, :func:`top_k` of the query's h_im,a in the h_im,a
  database.
- (b) ``hierarchical``: :func:`first_stage` (top ``b`` by h_im), then :func:`rerank` those
  ``b`` candidates by cosine(query h_im,a, candidate h_im,a), keep the top ``k``.
- (c) ``image_only`` (tuned h_im), (d) ``image_untuned`` (untuned h_im), (e), (e2), ... one
  method per image encoder, named as it (``monet``: MONET's CLIP image features, ...):
  :func:`top_k` in that space.

Candidates' h_im,a for the re-rank come from a callable ``candidate_ima(train_rows) ->
[len(train_rows), d]``: :func:`stored` looks them up in a stored per-attribute database (the
evaluation path); an on-the-fly callable (forward passes of the model on the candidate images)
gives the same top-k because the forward pass is deterministic. :func:`rerank` calls it once per
batch of queries, with the batch's UNIQUE candidate rows (sorted ascending).

Result tables (:func:`results_frame`), one row per (query, rank): ``method, attribute,
query_id, rank (1..k), retrieved_id, score``. Image-only methods (c, d, e) do not depend on the
attribute: their rows are emitted ONCE with ``attribute = null``, and
:func:`evaluation.percentile.evaluate` applies them to every attribute (16x smaller files).

Every function returns a :class:`TopK` ``(scores, idx)`` — the order of ``faiss`` and
:func:`skinground.retrieval.index.search` — with ``idx`` the database ROW numbers (int64 [Q, k]) and
``scores`` the float32 cosine similarities, descending. Ties: FAISS's order among equal scores
is unspecified (see :mod:`index`); the re-rank sorts stably, so equal re-rank scores
keep the first-stage order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import faiss
import numpy as np
import polars as pl

from skinground.core.errors import OverlapError
from skinground.retrieval.index import build_index, normalize, search
from skinground.retrieval.spaces import as_rows, block_rows

RESULT_SCHEMA = {
    "method": pl.String, "attribute": pl.String, "query_id": pl.String, "rank": pl.Int32,
    "retrieved_id": pl.String, "score": pl.Float32,
}

#: Default re-rank batch: at most this many candidate-vector floats per batch (256 MiB).
BATCH_ELEMENTS = 1 << 26
#: The fused search's database block, as float32 fused vectors (|G| x d wide).
FUSED_BLOCK_BYTES = 512 << 20

CandidateFn = Callable[[np.ndarray], np.ndarray]


class TopK(NamedTuple):
    """Top-k hits: ``scores`` float32 [Q, k] (descending), ``idx`` int64 [Q, k] db rows."""

    scores: np.ndarray
    idx: np.ndarray


def top_k(db, queries, k: int) -> TopK:
    """Methods a, c, d, e: the ``k`` database rows most cosine-similar to each query.

    ``db`` is the database [N, d] (an index is built) or an index from
    :func:`skinground.retrieval.index.build_index` (reuse it across query batches). ``queries``: an
    array or a :class:`skinground.retrieval.spaces.Space` (searched in blocks).
    """

    index = db if hasattr(db, "ntotal") else build_index(db)
    return TopK(*search(index, queries, k))


def first_stage(db_im_index: faiss.Index, q_im, b: int) -> np.ndarray:
    """Method b, step 1: the top ``b`` database rows by h_im, int64 [Q, b'].

    ``b' = min(b, N)``: a database smaller than ``b`` (the demo) re-ranks all of it.
    It does not depend on the attribute: compute it once, re-rank per attribute.
    """

    b = min(int(b), db_im_index.ntotal)
    return search(db_im_index, q_im, b)[1]


def stored(db_ima) -> CandidateFn:
    """``candidate_ima`` for a stored per-attribute database [N, d] (an array, or a
    :class:`skinground.retrieval.spaces.Space`: only the asked rows are read): a row lookup."""
    return as_rows(db_ima).take


def rerank(candidates: np.ndarray, q_ima, candidate_ima: CandidateFn, *,
           k: int, batch_size: int | None = None) -> TopK:
    """Method b, step 2: re-rank each query's candidate rows by cosine of h_im,a; keep ``k``.

    ``candidates`` int [Q, b] (from :func:`first_stage`), ``q_ima`` [Q, d] (an array or a
    :class:`skinground.retrieval.spaces.Space`: read a batch at a time). Queries go in batches of
    ``batch_size``; ``candidate_ima`` is called once per batch with the batch's unique
    candidate rows (sorted), so an on-the-fly model embeds each candidate once per batch.
    ``None`` (default) sizes batches so the batch's candidate vectors stay under
    ``BATCH_ELEMENTS`` floats (paper scale, b=200, d=3584: 93 queries, <= 256 MiB).
    Sorting is stable: equal scores keep the first-stage order. Scores are float32 dot products
    (may differ from FAISS's in the last bits). Returns database rows.
    """

    candidates = np.asarray(candidates, dtype=np.int64)
    queries = as_rows(q_ima)
    if candidates.ndim != 2 or candidates.shape[0] != len(queries):
        raise ValueError(f"candidates {candidates.shape} must be [Q, b] with Q = "
                         f"{len(queries)}")
    n_q, b = candidates.shape
    d = queries.dim
    k = int(k)
    if not 1 <= k <= b:
        raise ValueError(f"k={k} must be in 1..b={b}")
    if batch_size is None:
        batch_size = max(1, BATCH_ELEMENTS // (b * d))
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    scores = np.empty((n_q, k), np.float32)
    idx = np.empty((n_q, k), np.int64)
    for start in range(0, n_q, batch_size):
        stop = min(start + batch_size, n_q)
        q = normalize(queries.rows(start, stop))
        unique, inverse = np.unique(candidates[start:stop], return_inverse=True)
        inverse = inverse.reshape(stop - start, b)
        vecs = np.asarray(candidate_ima(unique), dtype=np.float32)
        if vecs.shape != (unique.size, d):
            raise ValueError(f"candidate_ima returned shape {vecs.shape}, expected "
                             f"{(unique.size, d)}")
        # cosine = (v . q) / |v| for the normalised query: each candidate row's norm once,
        # no normalised copy of the rows (what made a batch 4x slower)
        norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs))
        if not np.isfinite(norms).all():
            bad = int(unique[np.flatnonzero(~np.isfinite(norms))[0]])
            raise ValueError(f"non-finite value in candidate row {bad}")
        norms[norms == 0] = 1.0  # a zero row scores 0
        # Every unique candidate against every query of the batch in one matrix product
        # ([U, c]: a few MB), then each query's own b picked out: much faster than gathering
        # [c, b, d] copies of the rows for c small products.
        products = vecs @ q.T
        sims = products[inverse, np.arange(stop - start)[:, None]] / norms[inverse]  # [c, b]
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores[start:stop] = np.take_along_axis(sims, order, axis=1)
        idx[start:stop] = np.take_along_axis(candidates[start:stop], order, axis=1)
    return TopK(scores, idx)


def hierarchical(db_im_index: faiss.Index, q_im, q_ima, *, b: int,
                 k: int, candidate_ima: CandidateFn, batch_size: int | None = None) -> TopK:
    """Method b: top ``b`` by h_im (:func:`first_stage`), re-ranked by h_im,a (:func:`rerank`).

    ``candidate_ima`` is :func:`stored` (evaluation) or an on-the-fly embedding callable.
    """
    cands = first_stage(db_im_index, q_im, b)
    return rerank(cands, q_ima, candidate_ima, k=k, batch_size=batch_size)


# ---------------------------------------------------------------- multi-attribute baselines


def fused_vectors(spaces: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's per-attribute vectors, L2-normalised, concatenated and scaled by
    1/sqrt(|G|): the inner product of two such rows is the MEAN of the |G| cosine
    similarities, so an exact search over them ranks by the fused score."""
    if not spaces:
        raise ValueError("a fused space needs at least one attribute space")
    return np.concatenate([normalize(s) for s in spaces], axis=1) / np.sqrt(len(spaces))


def fused_top_k(db_spaces: Sequence, q_spaces: Sequence, k: int, *,
                block_bytes: int = FUSED_BLOCK_BYTES) -> TopK:
    """The per-attribute spaces fused: top ``k`` by the mean cosine over the group's
    attributes, exact over the whole database.

    Spaces are arrays or :class:`spaces.Space` objects. The database is searched a
    block of rows at a time (each block's fused vectors in an exact index, the queries in
    blocks too), the top ``k`` kept across blocks (``faiss.ResultHeap``): peak memory is a few
    ``block_bytes`` (a database block's parts, their concatenation and the index's copy, and
    a query block's), whatever the size of the database or of the group. Order among equal
    scores is unspecified.
    """
    db = [as_rows(s) for s in db_spaces]
    qs = [as_rows(s) for s in q_spaces]
    if not db or len(db) != len(qs):
        raise ValueError("a fused search needs the same attribute spaces, at least one, for "
                         "the database and the queries")
    n, n_q = len(db[0]), len(qs[0])
    width = sum(s.dim for s in db)
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..{n} (the database size)")
    heap = faiss.ResultHeap(n_q, k, keep_max=True)
    db_rows = block_rows(width, block_bytes)
    q_rows = block_rows(width, block_bytes)
    for start in range(0, n, db_rows):
        stop = min(start + db_rows, n)
        index = build_index(fused_vectors([s.rows(start, stop) for s in db]), gpu=None)
        kb = min(k, stop - start)
        for q_start in range(0, n_q, q_rows):
            q_stop = min(q_start + q_rows, n_q)
            scores, idx = search(index, fused_vectors([s.rows(q_start, q_stop) for s in qs]),
                                 kb)
            heap.add_result_subset(np.arange(q_start, q_stop), scores, idx + start)
        del index
    heap.finalize()
    return TopK(heap.D, heap.I)


def reciprocal_rank_fusion(lists: Sequence[np.ndarray], k: int, k0: float = 60.0) -> TopK:
    """Reciprocal-rank fusion of per-attribute top lists (int [Q, L] database rows, best
    first): score(r) = sum over the lists holding r of 1 / (k0 + rank), rank 1-based; the top
    ``k`` by score (ties: the smaller first rank across lists, then the row). Rows in no list
    cannot be returned: a query whose lists hold fewer than ``k`` distinct rows raises."""
    lists = [np.asarray(x, dtype=np.int64) for x in lists]
    if not lists:
        raise ValueError("reciprocal-rank fusion needs at least one list")
    n_q = lists[0].shape[0]
    scores = np.empty((n_q, k), np.float32)
    idx = np.empty((n_q, k), np.int64)
    for q in range(n_q):
        fused: dict[int, float] = {}
        best: dict[int, int] = {}
        for top in lists:
            for rank, row in enumerate(top[q].tolist(), start=1):
                fused[row] = fused.get(row, 0.0) + 1.0 / (k0 + rank)
                best[row] = min(best.get(row, rank), rank)
        if len(fused) < k:
            raise ValueError(f"query {q}: the lists hold {len(fused)} rows, fewer than k={k}")
        order = sorted(fused, key=lambda r: (-fused[r], best[r], r))[:k]
        idx[q] = order
        scores[q] = [fused[r] for r in order]
    return TopK(scores, idx)


def check_disjoint(query_ids: Sequence[str], db_ids: Sequence[str]) -> None:
    """Raise :class:`OverlapError` if a query id is a database id (or ids repeat)."""
    query_ids, db_ids = list(query_ids), list(db_ids)
    for name, ids in (("query", query_ids), ("database", db_ids)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate {name} ids")
    overlap = sorted(set(query_ids).intersection(db_ids))
    if overlap:
        raise OverlapError(
            f"{len(overlap)} query id(s) are also in the database (train set), e.g. "
            f"{overlap[:5]}: queries must be test images, never train images")


def results_frame(method: str, attribute: str | None, query_ids: Sequence[str],
                  db_ids: Sequence[str], idx: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """One row per (query, rank) with ``RESULT_SCHEMA``'s columns, ranks 1..k.

    ``idx`` / ``scores`` are [Q, k] database rows / similarities (a :class:`TopK`);
    ``attribute`` is None for the image-only methods. Raises :class:`OverlapError` when query
    and database ids overlap, ValueError on a shape mismatch or an out-of-range row.
    """
    query_ids, db_ids = list(query_ids), list(db_ids)
    check_disjoint(query_ids, db_ids)
    idx = np.asarray(idx)
    scores = np.asarray(scores, dtype=np.float32)
    if idx.ndim != 2 or idx.shape[0] != len(query_ids) or scores.shape != idx.shape:
        raise ValueError(f"idx {idx.shape} and scores {scores.shape} must both be "
                         f"[{len(query_ids)}, k]")
    if idx.size and (idx.min() < 0 or idx.max() >= len(db_ids)):
        raise ValueError(f"retrieved row out of range 0..{len(db_ids) - 1}")
    n_q, k = idx.shape
    return pl.DataFrame({
        "method": [method] * (n_q * k),
        "attribute": [attribute] * (n_q * k),
        "query_id": pl.Series(query_ids, dtype=pl.String).gather(np.repeat(np.arange(n_q), k)),
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n_q),
        "retrieved_id": pl.Series(db_ids, dtype=pl.String).gather(idx.reshape(-1)),
        "score": scores.reshape(-1),
    }, schema=RESULT_SCHEMA)
