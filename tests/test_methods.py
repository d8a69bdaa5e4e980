"""Each retrieval method kind (``skinground.retrieval.methods``) over a job's stored spaces, as the
rules' scripts run it, against a brute-force top-k: every cosine similarity computed with
numpy, sorted."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from skinground.core import plan
from skinground.core.outputs import IMAGE_SPACE
from skinground.core.plan import (
    GROUP_METHODS,
    QWEN_METHODS,
    group_method_spaces,
    group_space,
    method_spaces,
)
from skinground.data.shards import ShardError
from skinground.retrieval import index as index_mod
from skinground.retrieval import methods, search
from skinground.retrieval.index import build_index

from reference import write_space

N, Q, D, K, B, RRF_K = 150, 23, 16, 5, 40, 60.0
ATTRS = ["tbp_lv_A", "tbp_lv_B", "tbp_lv_areaMM2"]
GROUPS = {"colour": ["tbp_lv_A", "tbp_lv_B"], "size": ["tbp_lv_areaMM2", "tbp_lv_A"]}


def ids(n, offset=0):
    return [f"ISIC_{offset + i:07d}" for i in range(n)]


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    """A retrieval job's inputs as the rules write them (merged float16 spaces, FAISS
    indexes) and the float32 arrays they hold."""
    root = tmp_path_factory.mktemp("job")
    rng = np.random.default_rng(3)
    arrays = {"train": {}, "test": {}}
    for space in (IMAGE_SPACE, *ATTRS, *map(group_space, GROUPS)):
        for split, count, off in (("train", N, 0), ("test", Q, 10_000)):
            x = rng.normal(size=(count, D)).astype(np.float16)
            arrays[split][space] = x.astype(np.float32)
            write_space(root / f"{split}_{space}.npz", ids(count, off), x)
        index_mod.save_index(build_index(arrays["train"][space]), root / f"{space}.faiss")
    return root, arrays


def open_job(root, indexed, read):
    return methods.JobSpaces({"index": indexed, "read": read},
                             [root / f"{s}.faiss" for s in indexed],
                             [root / f"train_{s}.npz" for s in read],
                             [root / f"test_{s}.npz" for s in read])


def cosines(db: np.ndarray, q: np.ndarray) -> np.ndarray:
    """[Q, N] cosine similarity, in float64."""
    db = db / np.linalg.norm(db, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float64) @ db.astype(np.float64).T


def brute_top(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Each row's ``k`` best columns (among ``allowed`` [Q, m] when given), best first."""
    if allowed is not None:
        masked = np.full_like(scores, -np.inf)
        np.put_along_axis(masked, allowed, np.take_along_axis(scores, allowed, 1), 1)
        scores = masked
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def assert_same_hits(got: search.TopK, scores: np.ndarray, want_idx: np.ndarray, atol=1e-5):
    """``got`` holds the brute-force top-k: the same rows with the same scores (in the order
    of the scores; rows of equal score may swap)."""
    assert got.idx.shape == got.scores.shape == want_idx.shape
    want_scores = np.take_along_axis(scores, want_idx, 1)
    np.testing.assert_allclose(got.scores, want_scores, atol=atol)
    np.testing.assert_allclose(np.take_along_axis(scores, got.idx, 1), got.scores, atol=atol)
    assert (np.sort(got.idx, 1) == np.sort(want_idx, 1)).mean() > 0.99  # ties aside


def test_every_kind_has_its_function():
    # (a)-(d) and any image encoder's (e), which searches its image-only space
    encoder = plan.methods({"model": {"encoders": {"monet": {"title": "MONET"}}}})["monet"]
    assert encoder.search == "image" and encoder.letter == "e" and encoder.model == "monet"
    assert {m.search for m in QWEN_METHODS.values()} == set(methods.SEARCHES)
    # "image" reuses method (c)'s hits and "random" is drawn by the evaluation: no job
    assert ({m.search for m in GROUP_METHODS.values()} - {"image", "random"}
            == set(methods.GROUP_SEARCHES))


def test_image_kind_is_the_brute_force_top_k_of_h_im(job_dir):
    root, a = job_dir
    job = open_job(root, *method_spaces("image_only", ATTRS))
    (attribute, got), = methods.image_hits(job, ATTRS, k=K)
    assert attribute is None
    s = cosines(a["train"][IMAGE_SPACE], a["test"][IMAGE_SPACE])
    assert_same_hits(got, s, brute_top(s, K))


def test_attribute_kind_is_the_brute_force_top_k_of_each_h_ima(job_dir):
    root, a = job_dir
    job = open_job(root, *method_spaces("image_text", ATTRS))
    got = dict(methods.attribute_hits(job, ATTRS, k=K))
    assert list(got) == ATTRS
    for x in ATTRS:
        s = cosines(a["train"][x], a["test"][x])
        assert_same_hits(got[x], s, brute_top(s, K))


def test_hierarchical_kind_reranks_the_brute_force_top_b(job_dir):
    root, a = job_dir
    job = open_job(root, *method_spaces("hierarchical", ATTRS))
    got = dict(methods.hierarchical_hits(job, ATTRS, k=K, b=B))
    first = brute_top(cosines(a["train"][IMAGE_SPACE], a["test"][IMAGE_SPACE]), B)
    for x in ATTRS:
        s = cosines(a["train"][x], a["test"][x])
        want = brute_top(s, K, allowed=first)
        assert_same_hits(got[x], s, want)
        assert all(set(g) <= set(f) for g, f in zip(got[x].idx.tolist(), first.tolist(),
                                                     strict=True))
        # the re-rank changes the answer: not the first stage's top k
        assert (np.sort(want, 1) != np.sort(first[:, :K], 1)).any()


def group_job(root, name):
    specs = {g: {"attributes": m} for g, m in GROUPS.items()}
    return open_job(root, *group_method_spaces(name, specs))


def test_composed_kind_is_the_brute_force_top_k_of_each_h_imG(job_dir):
    root, a = job_dir
    got = dict(methods.composed_hits(group_job(root, "composed"), GROUPS, k=K))
    assert list(got) == [group_space(g) for g in GROUPS]
    for space in got:
        s = cosines(a["train"][space], a["test"][space])
        assert_same_hits(got[space], s, brute_top(s, K))


def test_composed_hierarchical_kind_reranks_the_top_b_by_h_imG(job_dir):
    root, a = job_dir
    job = group_job(root, "composed_hierarchical")
    got = dict(methods.composed_hierarchical_hits(job, GROUPS, k=K, b=B))
    first = brute_top(cosines(a["train"][IMAGE_SPACE], a["test"][IMAGE_SPACE]), B)
    for space in got:
        s = cosines(a["train"][space], a["test"][space])
        assert_same_hits(got[space], s, brute_top(s, K, allowed=first))


def test_fused_kind_is_the_brute_force_top_k_of_the_mean_cosine(job_dir):
    root, a = job_dir
    got = dict(methods.fused_hits(group_job(root, "fused"), GROUPS, k=K))
    for g, members in GROUPS.items():
        s = np.mean([cosines(a["train"][m], a["test"][m]) for m in members], axis=0)
        assert_same_hits(got[group_space(g)], s, brute_top(s, K))


def test_rrf_kind_fuses_the_brute_force_top_b_lists_by_reciprocal_rank(job_dir):
    root, a = job_dir
    got = dict(methods.rrf_hits(group_job(root, "rrf"), GROUPS, k=K, b=B, rrf_k=RRF_K))
    for g, members in GROUPS.items():
        fused = np.zeros((Q, N))
        for m in members:
            top = brute_top(cosines(a["train"][m], a["test"][m]), B)
            np.put_along_axis(fused, top, np.take_along_axis(fused, top, 1)
                              + 1.0 / (RRF_K + np.arange(1, B + 1)), 1)
        assert_same_hits(got[group_space(g)], fused, brute_top(fused, K))


def test_dispatch_names_the_unknown_kind(job_dir):
    root, _ = job_dir
    job = open_job(root, *method_spaces("image_only", ATTRS))
    with pytest.raises(ValueError, match="unknown search 'nearest'; known: image"):
        methods.method_hits("nearest", job, ATTRS, k=K)
    with pytest.raises(ValueError, match="unknown group search 'mean'"):
        methods.group_method_hits("mean", job, GROUPS, k=K)


def test_k_above_the_database_is_refused_by_name(job_dir):
    """retrieve.k = b = 1500 on 1,165 train images failed with FAISS's ValueError; now the
    job names the key and the count, for a method and a group method alike."""
    from skinground.core.errors import InputError

    root, _ = job_dir
    job = open_job(root, *method_spaces("hierarchical", ATTRS))
    message = rf"retrieve.k = {N + 1} is more than the {N} train images of the database"
    with pytest.raises(InputError, match=message):
        methods.method_hits("hierarchical", job, ATTRS, k=N + 1, b=N + 1)
    with pytest.raises(InputError, match=message):
        methods.group_method_hits("composed", job, GROUPS, k=N + 1)
    assert next(methods.method_hits("image", job, ATTRS, k=N))[1].idx.shape[1] == N


def test_results_are_written_attribute_by_attribute(job_dir, tmp_path):
    root, _ = job_dir
    job = open_job(root, ATTRS, ATTRS)
    hits = list(methods.method_hits("attribute", job, ATTRS, k=K))
    out = tmp_path / "r" / "image_text.parquet"
    rows = methods.write_results(out, "image_text", iter(hits), job.query_ids, job.db_ids)
    want = pl.concat([search.results_frame("image_text", x, job.query_ids, job.db_ids,
                                             top.idx, top.scores) for x, top in hits])
    got = pl.read_parquet(out)
    assert rows == want.height == got.height and got.equals(want)
    assert sorted(p.name for p in out.parent.iterdir()) == ["image_text.parquet"]


def test_a_job_stops_on_misaligned_or_overlapping_ids(job_dir, tmp_path):
    root, a = job_dir
    write_space(tmp_path / "train_x.npz", ids(N, 1), a["train"]["tbp_lv_A"])
    with pytest.raises(ShardError, match="train_x.npz: ids differ"):
        methods.JobSpaces({"index": [], "read": ["tbp_lv_A", "x"]}, [],
                          [root / "train_tbp_lv_A.npz", tmp_path / "train_x.npz"],
                          [root / "test_tbp_lv_A.npz", root / "test_tbp_lv_B.npz"])
    with pytest.raises(search.OverlapError):
        methods.JobSpaces({"index": [], "read": ["tbp_lv_A"]}, [],
                          [root / "train_tbp_lv_A.npz"], [root / "train_tbp_lv_B.npz"])
