"""The retrieval methods over a job's stored spaces: one function per method kind, and the
tables the rules' scripts dispatch through (``plan.Method.search``,
``plan.GroupMethod.search``).

A kind's function takes the job's spaces (:class:`JobSpaces`: one space loaded at a time, a
space's index dropped before the next) and yields its hits an attribute (or group) at a time,
``(name, TopK)``, which :func:`write_results` streams to the job's output. The arithmetic of
each method is :mod:`skinground.retrieval.search`'s, which ``skinground query`` calls too.

Peak host memory (N train, Q test images, width d, 4-byte floats): one index ``N d 4`` + a
query block (``index.QUERY_BLOCK_BYTES``) + the hits ``Q k 12``; the hierarchical kinds: the
first stage, then ``Q b 8`` (the candidates) + one re-rank batch (``BATCH_ELEMENTS`` x 6
bytes); "fused": two blocks of ``FUSED_BLOCK_BYTES`` (:func:`search.fused_top_k`); "rrf":
one index + the group's top-b lists (``|G| Q b 8``). ``skinground.cost.memory`` has the formulas.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import faiss
import polars as pl

from skinground.core.errors import InputError
from skinground.core.io import atomic_path, glob_escape
from skinground.core.outputs import IMAGE_SPACE
from skinground.core.plan import group_space
from skinground.data.shards import ShardError
from skinground.retrieval.index import load_index, search
from skinground.retrieval.search import (
    RESULT_SCHEMA,
    TopK,
    check_disjoint,
    first_stage,
    fused_top_k,
    reciprocal_rank_fusion,
    rerank,
    results_frame,
    stored,
    top_k,
)
from skinground.retrieval.spaces import Space, read_ids

Hits = Iterator[tuple[str | None, TopK]]


class JobSpaces:
    """What one retrieval job reads, opened one space at a time.

    ``spaces`` (``{"index": [...], "read": [...]}``, as the rules pass them) names the spaces
    of the index / train / test paths, in their order. Opening reads only ids: it checks that
    every read space of a split has the same ids and that no test image is in the database.
    :meth:`index` loads a space's FAISS index (N x d x 4 bytes; the caller drops it before the
    next), :meth:`db` / :meth:`queries` open a stored space (:class:`spaces.Space`,
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

    def check_k(self, k: int) -> None:
        """``retrieve.k`` hits per query need at least ``k`` train images in the database."""
        if k > len(self.db_ids):
            raise InputError(f"retrieve.k = {k} is more than the {len(self.db_ids)} train "
                             "images of the database: lower retrieve.k")

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


# ---------------------------------------------------------------- the paper's methods


def image_hits(job: JobSpaces, attributes: Sequence[str], *, k: int, **_) -> Hits:
    """(c), (d), (e): top ``k`` in the image-only space, one list for every attribute
    (yielded with attribute None)."""
    yield None, top_k(job.index(IMAGE_SPACE), job.queries(IMAGE_SPACE), k)


def attribute_hits(job: JobSpaces, attributes: Sequence[str], *, k: int, **_) -> Hits:
    """(a): per attribute, top ``k`` of the query's h_im,a in the h_im,a database."""
    for attribute in attributes:
        yield attribute, top_k(job.index(attribute), job.queries(attribute), k)


def hierarchical_hits(job: JobSpaces, attributes: Sequence[str], *, k: int, b: int,
                      **_) -> Hits:
    """(b): top ``b`` by h_im once, then per attribute those re-ranked by h_im,a (the
    candidates' rows read from the stored space), top ``k``."""
    candidates = first_stage(job.index(IMAGE_SPACE), job.queries(IMAGE_SPACE), b)
    for attribute in attributes:
        yield attribute, rerank(candidates, job.queries(attribute), stored(job.db(attribute)),
                                k=k)


#: ``plan.Method.search`` -> its function.
SEARCHES: dict[str, Callable[..., Hits]] = {
    "image": image_hits, "attribute": attribute_hits, "hierarchical": hierarchical_hits,
}


def method_hits(search_kind: str, job: JobSpaces, attributes: Sequence[str], *, k: int,
                b: int | None = None) -> Hits:
    """The hits of one method (``plan.Method.search``), an attribute at a time: ``(attribute,
    TopK)``, attribute None for an image-only method (its one list serves them all)."""
    if search_kind not in SEARCHES:
        raise ValueError(f"unknown search {search_kind!r}; known: {', '.join(SEARCHES)}")
    job.check_k(k)
    return SEARCHES[search_kind](job, attributes, k=k, b=b)


# ---------------------------------------------------------------- group methods


def composed_hits(job: JobSpaces, groups: Mapping[str, Sequence[str]], *, k: int,
                  **_) -> Hits:
    """(f): per group, top ``k`` of the query's h_im,G in the h_im,G database: method (a)'s
    search over the group spaces."""
    return attribute_hits(job, [group_space(g) for g in groups], k=k)


def composed_hierarchical_hits(job: JobSpaces, groups: Mapping[str, Sequence[str]], *, k: int,
                               b: int, **_) -> Hits:
    """(f'): top ``b`` by h_im once, then per group re-ranked by h_im,G, top ``k``: method
    (b)'s search over the group spaces."""
    return hierarchical_hits(job, [group_space(g) for g in groups], k=k, b=b)


def fused_hits(job: JobSpaces, groups: Mapping[str, Sequence[str]], *, k: int, **_) -> Hits:
    """(g): per group, top ``k`` by the mean over its attributes of the h_im,a cosines,
    exact over the whole database."""
    for group, attributes in groups.items():
        yield group_space(group), fused_top_k([job.db(a) for a in attributes],
                                              [job.queries(a) for a in attributes], k)


def rrf_hits(job: JobSpaces, groups: Mapping[str, Sequence[str]], *, k: int, b: int,
             rrf_k: float, **_) -> Hits:
    """(h): per group, reciprocal-rank fusion of its attributes' top-``b`` lists."""
    for group, attributes in groups.items():
        lists = []
        for a in attributes:
            index = job.index(a)
            lists.append(search(index, job.queries(a), min(b, index.ntotal))[1])
            del index
        yield group_space(group), reciprocal_rank_fusion(lists, k, rrf_k)


#: ``plan.GroupMethod.search`` -> its function ("image" reuses method (c)'s hits: no job).
GROUP_SEARCHES: dict[str, Callable[..., Hits]] = {
    "composed": composed_hits, "composed_hierarchical": composed_hierarchical_hits,
    "fused": fused_hits, "rrf": rrf_hits,
}


def group_method_hits(search_kind: str, job: JobSpaces, groups: Mapping[str, Sequence[str]], *,
                      k: int, b: int | None = None, rrf_k: float | None = None) -> Hits:
    """The hits of one group method (``plan.GroupMethod.search``) per group: ``(group space,
    TopK)``. ``groups``: group name -> its attributes."""
    if search_kind not in GROUP_SEARCHES:
        raise ValueError(f"unknown group search {search_kind!r}; known: "
                         f"{', '.join(GROUP_SEARCHES)}")
    job.check_k(k)
    return GROUP_SEARCHES[search_kind](job, groups, k=k, b=b, rrf_k=rrf_k)


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
