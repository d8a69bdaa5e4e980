"""The retrieval methods ((a)-(d), and an image encoder's (e)): shapes, disjoint
query/database ids, hierarchical re-ranking."""

import numpy as np
import polars as pl
import pytest

from skinground.core.errors import OverlapError
from skinground.core.plan import methods
from skinground.retrieval.index import build_index
from skinground.retrieval.search import (
    TopK,
    first_stage,
    hierarchical,
    rerank,
    results_frame,
    stored,
    top_k,
)

N, Q, D, K = 300, 40, 12, 5
#: The paper's five: (a)-(d) and MONET's (e).
METHODS = methods({"model": {"encoders": {"monet": {"title": "MONET"}}}})
IMAGE_ONLY_METHODS = [name for name, m in METHODS.items() if not m.per_attribute]


def seeded_embedding(rows, seed=0):
    """Recomputes an image's h_im,a from its row number: what an on-the-fly model does."""
    return np.stack([np.random.default_rng([seed, int(i)]).normal(size=D) for i in rows]
                    ).astype(np.float32)


@pytest.fixture(scope="module")
def spaces():
    rng = np.random.default_rng(7)
    return {
        "db_im": rng.normal(size=(N, D)).astype(np.float32),
        "q_im": rng.normal(size=(Q, D)).astype(np.float32),
        "db_ima": seeded_embedding(range(N)),
        "q_ima": rng.normal(size=(Q, D)).astype(np.float32),
        "db_ids": [f"ISIC_{i:07d}" for i in range(N)],
        "q_ids": [f"ISIC_{9_000_000 + i:07d}" for i in range(Q)],
    }


def check_top_k(hits, k=K, n_q=Q):
    assert isinstance(hits, TopK)
    assert hits.idx.shape == hits.scores.shape == (n_q, k)
    assert hits.idx.dtype == np.int64 and hits.scores.dtype == np.float32
    assert ((hits.idx >= 0) & (hits.idx < N)).all()
    assert (np.diff(hits.scores, axis=1) <= 0).all()  # descending
    assert all(len(set(row)) == k for row in hits.idx.tolist())  # no duplicates


def test_every_method_shape_and_ranks(spaces):
    s = spaces
    hits = {
        "image_text": top_k(s["db_ima"], s["q_ima"], K),
        "hierarchical": hierarchical(build_index(s["db_im"]), s["q_im"], s["q_ima"], b=50, k=K,
                                     candidate_ima=stored(s["db_ima"])),
        "image_only": top_k(s["db_im"], s["q_im"], K),
        "image_untuned": top_k(build_index(s["db_im"][:, ::-1]), s["q_im"][:, ::-1], K),
        "monet": top_k(s["db_im"] ** 2, s["q_im"] ** 2, K),
    }
    assert set(hits) == set(METHODS)
    frames = []
    for method, h in hits.items():
        check_top_k(h)
        attribute = None if method in IMAGE_ONLY_METHODS else "tbp_lv_areaMM2"
        frames.append(results_frame(method, attribute, s["q_ids"], s["db_ids"], h.idx, h.scores))
    table = pl.concat(frames)
    assert table.height == len(METHODS) * Q * K
    assert table.columns == ["method", "attribute", "query_id", "rank", "retrieved_id", "score"]
    ranks = table.group_by("method", "query_id").agg(pl.col("rank").sort())["rank"].to_list()
    assert all(r == list(range(1, K + 1)) for r in ranks)
    assert table.filter(pl.col("attribute").is_null())["method"].unique().sort().to_list() == \
        sorted(IMAGE_ONLY_METHODS)
    assert not set(table["retrieved_id"]) & set(s["q_ids"])
    first = table.filter((pl.col("method") == "image_only") & (pl.col("rank") == 1)).row(0,
                                                                                         named=True)
    assert first["query_id"] == s["q_ids"][0]
    assert first["retrieved_id"] == s["db_ids"][hits["image_only"].idx[0, 0]]


def test_queries_never_from_the_database(spaces):
    s = spaces
    hits = top_k(s["db_im"], s["q_im"], K)
    leaked = list(s["q_ids"])
    leaked[3] = s["db_ids"][10]
    with pytest.raises(OverlapError, match="ISIC_0000010"):
        results_frame("image_only", None, leaked, s["db_ids"], hits.idx, hits.scores)
    with pytest.raises(ValueError, match="duplicate"):
        results_frame("image_only", None, [s["q_ids"][0]] * Q, s["db_ids"], hits.idx,
                      hits.scores)
    with pytest.raises(ValueError, match="out of range"):
        results_frame("image_only", None, s["q_ids"], s["db_ids"][:5], hits.idx, hits.scores)


@pytest.mark.parametrize("b", [K, 20, N])
def test_hierarchical_stored_equals_on_the_fly(spaces, b):
    s = spaces
    index = build_index(s["db_im"])
    calls = []

    def on_the_fly(rows):
        calls.append(rows.copy())
        return seeded_embedding(rows)

    a = hierarchical(index, s["q_im"], s["q_ima"], b=b, k=K, candidate_ima=stored(s["db_ima"]))
    f = hierarchical(index, s["q_im"], s["q_ima"], b=b, k=K, candidate_ima=on_the_fly,
                     batch_size=16)
    check_top_k(a)
    np.testing.assert_array_equal(a.idx, f.idx)
    np.testing.assert_allclose(a.scores, f.scores, atol=1e-6)
    # One call per batch of queries, each with that batch's unique candidates, sorted.
    cands = first_stage(index, s["q_im"], b)
    assert len(calls) == -(-Q // 16)
    for j, rows in enumerate(calls):
        np.testing.assert_array_equal(rows, np.unique(cands[16 * j:16 * (j + 1)]))
    # Every re-ranked hit is one of the query's b first-stage candidates.
    assert all(set(h) <= set(c) for h, c in zip(a.idx.tolist(), cands.tolist(), strict=True))


def test_hierarchical_on_the_fly_projection(spaces):
    """On-the-fly = a fixed projection of h_im, stored = the same projection precomputed."""
    s = spaces
    proj = np.random.default_rng(3).normal(size=(D, D)).astype(np.float32)
    index = build_index(s["db_im"])
    a = hierarchical(index, s["q_im"], s["q_ima"], b=30, k=K,
                     candidate_ima=stored(s["db_im"] @ proj))
    f = hierarchical(index, s["q_im"], s["q_ima"], b=30, k=K,
                     candidate_ima=lambda rows: s["db_im"][rows] @ proj, batch_size=7)
    np.testing.assert_array_equal(a.idx, f.idx)
    np.testing.assert_allclose(a.scores, f.scores, atol=1e-6)


def test_hierarchical_with_b_equal_n_is_image_text(spaces):
    s = spaces
    h = hierarchical(build_index(s["db_im"]), s["q_im"], s["q_ima"], b=N, k=K,
                     candidate_ima=stored(s["db_ima"]))
    t = top_k(s["db_ima"], s["q_ima"], K)
    np.testing.assert_array_equal(h.idx, t.idx)
    np.testing.assert_allclose(h.scores, t.scores, atol=1e-5)
    # b larger than the database re-ranks all of it (the demo's small train set).
    big = hierarchical(build_index(s["db_im"]), s["q_im"], s["q_ima"], b=10 * N, k=K,
                       candidate_ima=stored(s["db_ima"]))
    np.testing.assert_array_equal(big.idx, t.idx)


def test_rerank_checks_and_stable_ties():
    cands = np.array([[4, 2, 9]])
    vecs = np.zeros((10, 2), np.float32)
    vecs[[4, 2, 9]] = [[1, 0], [0, 1], [1, 0]]  # rows 4 and 9 tie
    hits = rerank(cands, np.array([[1.0, 0.0]]), stored(vecs), k=3)
    np.testing.assert_array_equal(hits.idx, [[4, 9, 2]])  # ties keep first-stage order
    with pytest.raises(ValueError, match="k="):
        rerank(cands, np.array([[1.0, 0.0]]), stored(vecs), k=4)
    with pytest.raises(ValueError, match="candidate_ima returned"):
        rerank(cands, np.array([[1.0, 0.0]]), lambda rows: vecs[rows, :1], k=2)
