"""Exact cosine search: FAISS IndexFlatIP on normalised rows == numpy on normalised rows."""

import numpy as np
import pytest

from skinground.retrieval.index import (
    build_index,
    gpu_available,
    load_index,
    normalize,
    save_index,
    search,
    to_device,
)


def numpy_top_k(db, queries, k):
    sims = normalize(queries).astype(np.float64) @ normalize(db).astype(np.float64).T
    idx = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx, sims


def data(seed=0, n=400, q=30, d=16):
    rng = np.random.default_rng(seed)
    # Different scales per row: cosine must ignore them.
    db = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))
    return db.astype(np.float32), rng.normal(size=(q, d)).astype(np.float32)


def test_normalize_rows_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=np.float64)
    out = normalize(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        normalize(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        normalize(np.ones(3))


@pytest.mark.parametrize("k", [1, 5, 17])
def test_search_equals_numpy_cosine_top_k(k):
    db, queries = data()
    scores, idx = search(build_index(db), queries, k)
    ref_scores, ref_idx, sims = numpy_top_k(db, queries, k)
    # The data has no near-ties at the cut (else the order would be float-rounding noise).
    top = -np.sort(-sims, axis=1)[:, :k + 1]
    assert np.diff(top, axis=1).min() < -1e-5
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    assert scores.shape == idx.shape == (len(queries), k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_search_few_queries_path():
    """FAISS switches from its sequential to its BLAS path at 20 queries: both exact."""
    db, queries = data(seed=1)
    for q in (queries[:3], queries[:25]):
        _, idx = search(build_index(db), q, 5)
        np.testing.assert_array_equal(idx, numpy_top_k(db, q, 5)[1])


def test_search_argument_checks():
    db, queries = data(n=10)
    index = build_index(db)
    with pytest.raises(ValueError, match="k="):
        search(index, queries, 11)
    with pytest.raises(ValueError, match="queries must be"):
        search(index, queries[:, :3], 2)
    scores, idx = search(index, queries[:0], 2)
    assert scores.shape == idx.shape == (0, 2)


def test_save_load_round_trip(tmp_path):
    db, queries = data(seed=2)
    index = build_index(db)
    path = tmp_path / "sub" / "im.faiss"
    save_index(index, path)
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    loaded = load_index(path)
    assert loaded.ntotal == index.ntotal and loaded.d == index.d
    a, b = search(index, queries, 5), search(loaded, queries, 5)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


def test_device_choice():
    db, _ = data(n=20)
    index = build_index(db, gpu=False)
    assert to_device(index, gpu=None) is index or gpu_available()
    if not gpu_available():  # faiss-cpu or no visible GPU: asking for one is an error
        with pytest.raises(RuntimeError, match="GPU"):
            build_index(db, gpu=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_a_damaged_index_is_named_in_one_line(tmp_path, damage):
    """A truncated index gave a FAISS RuntimeError dump in the query and in retrieve."""
    import numpy as np

    from skinground.core.errors import InputError
    from skinground.retrieval.index import build_index, load_index, save_index

    path = tmp_path / "im.faiss"
    save_index(build_index(np.ones((10, 8), np.float32)), path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an index" * 10)
    else:
        path.unlink()
    with pytest.raises(InputError) as err:
        load_index(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a readable FAISS index (") and "\n" not in message
    assert message.endswith("delete it and rerun the workflow to rebuild it")
