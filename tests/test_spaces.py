"""Merged spaces on disk, read a block or a set of rows at a time: the streamed merge, the
blockwise index build and searches, and every retrieval method over them equal the plain
in-memory path."""

import zipfile

import numpy as np
import polars as pl
import pytest

from skinground.core.outputs import IMAGE_SPACE
from skinground.core.plan import method as plan_method
from skinground.core.plan import method_spaces
from skinground.data.shards import ShardError, shard_ids, write_shard
from skinground.retrieval import index as index_mod
from skinground.retrieval import search as search_mod
from skinground.retrieval.index import build_index, search
from skinground.retrieval.spaces import ArrayRows, Space, merge_space, read_ids

from reference import write_space

D = 24
ATTRS = ["tbp_lv_A", "tbp_lv_B", "tbp_lv_areaMM2"]
GROUPS = {"colour": ["tbp_lv_A", "tbp_lv_B"]}


def ids(n, offset=0):
    return [f"ISIC_{offset + i:07d}" for i in range(n)]


def vectors(rng, n, d=D):
    # float16-representable, so the stored spaces equal the arrays exactly
    return rng.normal(size=(n, d)).astype(np.float16).astype(np.float32)


def test_merge_streams_the_shards_into_one_space(tmp_path):
    rng = np.random.default_rng(0)
    all_ids = ids(53)
    full = {s: vectors(rng, 53) for s in ("im", "tbp_lv_A")}
    paths = []
    for s in range(4):
        part = shard_ids(all_ids, 4, s)
        rows = [all_ids.index(i) for i in part]
        paths.append(tmp_path / f"shard{s}.npz")
        write_shard(paths[-1], part, {k: v[rows] for k, v in full.items()})
    assert merge_space(paths, "tbp_lv_A", tmp_path / "A.npz") == (53, D)
    space = Space(tmp_path / "A.npz")
    assert space.ids == all_ids == read_ids(tmp_path / "A.npz") and space.shape == (53, D)
    np.testing.assert_array_equal(space.rows(0, 53), full["tbp_lv_A"].astype(np.float16))
    np.testing.assert_array_equal(space.rows(50, 99), full["tbp_lv_A"][50:].astype(np.float16))
    assert space.rows(7, 7).shape == (0, D)
    rows = np.array([0, 5, 6, 52])
    np.testing.assert_array_equal(space.take(rows), full["tbp_lv_A"][rows].astype(np.float16))
    with np.load(tmp_path / "A.npz") as f:  # still an ordinary .npz
        np.testing.assert_array_equal(f["vectors"], space.rows(0, 53))
    with pytest.raises(IndexError, match="out of range"):
        space.take(np.array([53]))


def test_a_space_carries_its_shards_record(tmp_path):
    """What made the embeddings (skinground.core.provenance) travels shard -> merged space; shards
    made otherwise (another pixel budget, another adapter) are not merged into one space."""
    from skinground.retrieval.spaces import member_shape
    from skinground.retrieval.spaces import read_record as space_record

    made = {"pixels": {"image_size": 112}, "h_ima_token": "question", "adapter": {"code": "a"}}
    write_shard(tmp_path / "a.npz", ids(3), {"im": np.zeros((3, 4))}, made)
    write_shard(tmp_path / "b.npz", ids(2, 3), {"im": np.ones((2, 4))}, made)
    merge_space([tmp_path / "a.npz", tmp_path / "b.npz"], "im", tmp_path / "m.npz")
    assert space_record(tmp_path / "m.npz") == made == space_record(tmp_path / "a.npz")
    assert Space(tmp_path / "m.npz").shape == (5, 4)
    with pytest.raises(ShardError, match=r"has no embedding space 'x' \(it has im\)"):
        member_shape(tmp_path / "a.npz", "x")
    other = {**made, "adapter": {"code": "b"}}
    write_shard(tmp_path / "c.npz", ids(2, 3), {"im": np.ones((2, 4))}, other)
    with pytest.raises(ShardError, match=r"c.npz was made otherwise than .*a.npz "
                                         r"\(adapter.code\): rerun its embedding jobs"):
        merge_space([tmp_path / "a.npz", tmp_path / "c.npz"], "im", tmp_path / "n.npz")
    assert not (tmp_path / "n.npz").exists()
    write_shard(tmp_path / "none.npz", ids(1), {"im": np.zeros((1, 4))})  # an encoder's
    assert space_record(tmp_path / "none.npz") is None


def test_merge_and_open_name_the_bad_file(tmp_path):
    write_shard(tmp_path / "a.npz", ids(3), {"im": np.zeros((3, 4))})
    write_shard(tmp_path / "b.npz", ids(3, 3), {"im": np.zeros((3, 5))})
    write_shard(tmp_path / "c.npz", ids(3, 1), {"im": np.zeros((3, 4))})
    with pytest.raises(ShardError, match="b.npz: space 'im' is 5 wide"):
        merge_space([tmp_path / "a.npz", tmp_path / "b.npz"], "im", tmp_path / "m.npz")
    with pytest.raises(ShardError, match="share ids"):
        merge_space([tmp_path / "a.npz", tmp_path / "c.npz"], "im", tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    np.savez_compressed(tmp_path / "z.npz", ids=np.array(ids(2)), vectors=np.zeros((2, 4), "<f2"))
    with pytest.raises(ShardError, match="z.npz: vectors are compressed"):
        Space(tmp_path / "z.npz")
    write_space(tmp_path / "cut.npz", ids(40), np.ones((40, 8)))
    data = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[:100])
    with pytest.raises(ShardError, match="bad.npz"):
        Space(tmp_path / "bad.npz")
    with zipfile.ZipFile(tmp_path / "noids.npz", "w") as zf:
        zf.writestr("vectors.npy", b"")
    with pytest.raises(ShardError, match="noids.npz: not a merged embedding space"):
        Space(tmp_path / "noids.npz")


def test_blockwise_index_and_search_equal_the_whole_arrays(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    db, q = vectors(rng, 300), vectors(rng, 70)
    write_space(tmp_path / "db.npz", ids(300), db)
    write_space(tmp_path / "q.npz", ids(70, 1000), q)
    want = search(build_index(db), q, 6)
    monkeypatch.setattr(index_mod, "CHUNK_BYTES", 37 * D * 4)  # 37 rows a chunk
    monkeypatch.setattr(index_mod, "QUERY_BLOCK_BYTES", 11 * D * 4)  # 11 queries a block
    got = search(build_index(Space(tmp_path / "db.npz")), Space(tmp_path / "q.npz"), 6)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    assert search(build_index(db), np.empty((0, D)), 3)[1].shape == (0, 3)


def test_fused_search_in_blocks_equals_the_concatenated_space():
    rng = np.random.default_rng(2)
    db = [vectors(rng, 257) for _ in range(3)]
    q = [vectors(rng, 41) for _ in range(3)]
    want = search_mod.top_k(search_mod.fused_vectors(db), search_mod.fused_vectors(q), 5)
    for block in (10**9, 3 * D * 4 * 50, 3 * D * 4 * 3):  # one block; 50 rows; 3 rows
        got = search_mod.fused_top_k([ArrayRows(x) for x in db], q, 5, block_bytes=block)
        np.testing.assert_array_equal(got.idx, want.idx)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)


# --------------------------------------------------------------------------- memory


def peak_mib(log: str) -> float:
    import re

    return float(re.findall(r"peak memory \(max RSS\): ([\d.]+) MiB", log)[-1])


def retrieval_job(root, n_attributes, method, *, n=40_000, n_q=4_000, d=512):
    """Run the retrieve rule's script as Snakemake does, on ``n_attributes`` spaces of
    ``n`` train x ``d`` (an index: 82 MB); its exact peak RSS (MiB) from the job's log."""
    from conftest import run_script

    rng = np.random.default_rng(n_attributes)
    attrs = [f"a{i}" for i in range(n_attributes)]
    folder = root / f"{method}_{n_attributes}"
    folder.mkdir()
    for space in (IMAGE_SPACE, *attrs):
        for split, count, off in (("train", n, 0), ("test", n_q, 10**6)):
            write_space(folder / f"{split}_{space}.npz", ids(count, off),
                        rng.standard_normal((count, d), dtype=np.float32))
    indexed, read = method_spaces(method, attrs)
    for space in indexed:
        index_mod.save_index(build_index(Space(folder / f"train_{space}.npz")),
                             folder / f"{space}.faiss")
    out = folder / "hits.parquet"
    proc = run_script(
        "retrieve", folder,
        input={"index": [folder / f"{s}.faiss" for s in indexed],
               "train": [folder / f"train_{s}.npz" for s in read],
               "test": [folder / f"test_{s}.npz" for s in read]},
        output={"hits": out}, wildcards={"method": method},
        params={"search": plan_method(method).search, "spaces": {"index": indexed, "read": read},
                "attributes": attrs,
                "retrieve": {"k": 5, "b": 50} if method == "hierarchical" else {"k": 5}})
    assert proc.returncode == 0, proc.log
    assert pl.read_parquet(out).height == n_q * 5 * n_attributes
    return peak_mib(proc.log)


@pytest.mark.parametrize("method", ["image_text", "hierarchical"])
def test_a_retrieval_jobs_peak_memory_does_not_grow_with_the_attributes(tmp_path, method):
    """One space at a time: eight attributes peak where two do. Holding every space (as the
    job did before) adds ~6 x (index 82 MB + train and test spaces as float32) = ~1 GB.
    What does grow a little is polars' writing of the result parts (~20 MB from 1 part to
    6, flat after that): well under half an index."""
    two = retrieval_job(tmp_path, 2, method)
    eight = retrieval_job(tmp_path, 8, method)
    index_mib = 40_000 * 512 * 4 / 2**20
    assert eight - two < 0.5 * index_mib, (two, eight)
