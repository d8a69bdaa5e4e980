"""The five retrieval methods, and their results as a table.

Database = train images (row i of every database array is train image ``db_ids[i]``),
queries = test images; cosine similarity; top ``k``.

- (a) ``image_text``: per attribute a, :func:`top_k` of the query's h_im,a in the h_im,a
  database.
- (b) ``hierarchical``: :func:`first_stage` (top ``b`` by h_im), then :func:`rerank` those
  ``b`` candidates by cosine(query h_im,a, candidate h_im,a), keep the top ``k``.
- (c) ``image_only`` (tuned h_im), (d) ``image_untuned`` (untuned h_im), (e) ``monet`` (CLIP
  image features): :func:`top_k` in that space.

Candidates' h_im,a for the re-rank come from a callable ``candidate_ima(train_rows) ->
[len(train_rows), d]``: :func:`stored` looks them up in a stored per-attribute database (the
evaluation path); an on-the-fly callable (forward passes of the model on the candidate images)
gives the same top-k because the forward pass is deterministic. :func:`rerank` calls it once per
batch of queries, with the batch's UNIQUE candidate rows (sorted ascending).

Result tables (:func:`results_frame`), one row per (query, rank): ``method, attribute,
query_id, rank (1..k), retrieved_id, score``. Image-only methods (c, d, e) do not depend on the
attribute: their rows are emitted ONCE with ``attribute = null``, and
:func:`skinground.evaluate.evaluate` applies them to every attribute (16x smaller files).

Every function returns a :class:`TopK` ``(scores, idx)`` — the order of ``faiss`` and
:func:`skinground.index.search` — with ``idx`` the database ROW numbers (int64 [Q, k]) and
``scores`` the float32 cosine similarities, descending. Ties: FAISS's order among equal scores
is unspecified (see :mod:`skinground.index`); the re-rank sorts stably, so equal re-rank scores
keep the first-stage order.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import polars as pl

from skinground.errors import OverlapError
from skinground.index import build_index, load_index, normalize, search
from skinground.io import atomic_path, glob_escape
from skinground.outputs import IMAGE_SPACE
from skinground.plan import group_space
from skinground.shards import ShardError
from skinground.spaces import Space, as_rows, block_rows, read_ids

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
    :func:`skinground.index.build_index` (reuse it across query batches). ``queries``: an
    array or a :class:`skinground.spaces.Space` (searched in blocks).
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
    :class:`skinground.spaces.Space`: only the asked rows are read): a row lookup."""
    return as_rows(db_ima).take


def rerank(candidates: np.ndarray, q_ima, candidate_ima: CandidateFn, *,
           k: int, batch_size: int | None = None) -> TopK:
    """Method b, step 2: re-rank each query's candidate rows by cosine of h_im,a; keep ``k``.

    ``candidates`` int [Q, b] (from :func:`first_stage`), ``q_ima`` [Q, d] (an array or a
    :class:`skinground.spaces.Space`: read a batch at a time). Queries go in batches of
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

    Spaces are arrays or :class:`skinground.spaces.Space` objects. The database is searched a
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


class JobSpaces:
    """What one retrieval job reads, opened one space at a time.

    ``spaces`` (``{"index": [...], "read": [...]}``, as the rules pass them) names the spaces
    of the index / train / test paths, in their order. Opening reads only ids: it checks that
    every read space of a split has the same ids and that no test image is in the database.
    :meth:`index` loads a space's FAISS index (N x d x 4 bytes; the caller drops it before the
    next), :meth:`db` / :meth:`queries` open a stored space (:class:`~skinground.spaces.Space`,
    read a block or a set of rows at a time).
    """

    def __init__(self, spaces: Mapping[str, Sequence[str]], index_paths: Sequence,
                 train_paths: Sequence, test_paths: Sequence):
        self.index_paths = dict(zip(spaces["index"], map(Path, index_paths), strict=True))
        self.train_paths = dict(zip(spaces["read"], map(Path, train_paths), strict=True))
        self.test_paths = dict(zip(spaces["read"], map(Path, test_paths), strict=True))
        self.db_ids = _aligned_ids(self.train_paths.values())
        self.query_ids = _aligned_ids(self.test_paths.values())
        check_disjoint(self.query_ids, self.db_ids)

    def index(self, space: str) -> faiss.Index:
        return load_index(self.index_paths[space])

    def db(self, space: str) -> Space:
        return Space(self.train_paths[space])

    def queries(self, space: str) -> Space:
        return Space(self.test_paths[space])


def _aligned_ids(paths: Iterable[Path]) -> list[str]:
    ids = None
    for path in paths:
        these = read_ids(path)
        if ids is not None and these != ids:
            raise ShardError(f"{path}: ids differ from the other spaces of its split")
        ids = these
    if ids is None:
        raise ValueError("a retrieval job reads at least one space")
    return ids


def method_hits(search_kind: str, job: JobSpaces, attributes: Sequence[str], *, k: int,
                b: int | None = None) -> Iterator[tuple[str | None, TopK]]:
    """The hits of one method (``plan.Method.search``), an attribute at a time: ``(attribute,
    TopK)``, attribute None for an image-only method (its one list serves them all).

    One space at a time: a space's index is dropped before the next is loaded. Peak host
    memory (N train, Q test images, width d, 4-byte floats): "image"/"attribute": ``N d 4``
    (one index) + ``QUERY_BLOCK_BYTES`` (a query block) + ``Q k 12`` (the hits);
    "hierarchical": the first stage ``N d 4`` + ``Q b 8`` (the candidates), then per attribute
    ``Q b 8`` + one re-rank batch (``BATCH_ELEMENTS`` x 6 bytes).
    """
    if search_kind == "image":
        yield None, top_k(job.index(IMAGE_SPACE), job.queries(IMAGE_SPACE), k)
    elif search_kind == "attribute":
        for attribute in attributes:
            yield attribute, top_k(job.index(attribute), job.queries(attribute), k)
    elif search_kind == "hierarchical":
        candidates = first_stage(job.index(IMAGE_SPACE), job.queries(IMAGE_SPACE), b)
        for attribute in attributes:
            yield attribute, rerank(candidates, job.queries(attribute),
                                    stored(job.db(attribute)), k=k)
    else:
        raise ValueError(f"unknown search {search_kind!r}")


def group_method_hits(search_kind: str, job: JobSpaces, groups: Mapping[str, Sequence[str]], *,
                      k: int, b: int | None = None, rrf_k: float | None = None,
                      ) -> Iterator[tuple[str, TopK]]:
    """The hits of one group method (``plan.GroupMethod.search``) per group: ``(group space,
    TopK)``. ``groups``: group name -> its attributes.

    Peak host memory as :func:`method_hits` for "composed" (one index) and
    "composed_hierarchical" (the first stage, then re-ranks); "fused": two blocks of
    ``FUSED_BLOCK_BYTES`` (:func:`fused_top_k`); "rrf": one index (``N d 4``) + the group's
    top-b lists (``|G| Q b 8``).
    """
    if search_kind == "composed_hierarchical":
        candidates = first_stage(job.index(IMAGE_SPACE), job.queries(IMAGE_SPACE), b)
    for group, attributes in groups.items():
        space = group_space(group)
        if search_kind == "composed":
            yield space, top_k(job.index(space), job.queries(space), k)
        elif search_kind == "composed_hierarchical":
            yield space, rerank(candidates, job.queries(space), stored(job.db(space)), k=k)
        elif search_kind == "fused":
            yield space, fused_top_k([job.db(a) for a in attributes],
                                     [job.queries(a) for a in attributes], k)
        elif search_kind == "rrf":
            lists = []
            for a in attributes:
                index = job.index(a)
                lists.append(search(index, job.queries(a), min(b, index.ntotal))[1])
                del index
            yield space, reciprocal_rank_fusion(lists, k, rrf_k)
        else:
            raise ValueError(f"unknown group search {search_kind!r}")


def write_results(path, method: str, hits: Iterable[tuple[str | None, TopK]],
                  query_ids: Sequence[str], db_ids: Sequence[str]) -> int:
    """Write the hits (``(attribute, TopK)`` pairs, as :func:`method_hits` yields them) as one
    :func:`results_frame` table, atomically; returns its rows.

    Each attribute's rows go to a part file as soon as they exist, and the parts are joined
    by a streaming copy: the job never holds more than one attribute's rows.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob_escape(out.name)}.parts.*"):  # a killed job's
        shutil.rmtree(stale, ignore_errors=True)
    parts_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.parts.", dir=out.parent))
    rows = 0
    try:
        parts = []
        for i, (attribute, top) in enumerate(hits):
            frame = results_frame(method, attribute, query_ids, db_ids, top.idx, top.scores)
            parts.append(parts_dir / f"{i:05d}.parquet")
            frame.write_parquet(parts[-1])
            rows += frame.height
            del frame
        with atomic_path(out) as tmp:
            if parts:
                pl.scan_parquet(parts).sink_parquet(tmp)
            else:
                pl.DataFrame(schema=RESULT_SCHEMA).write_parquet(tmp)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return rows
