"""Hierarchical retrieval on the fly (forward passes for the b candidates, no stored
per-attribute database) gives the same top-k as the stored path; shards merge back in order."""

import numpy as np
import pytest

from skinground.data.images import open_images
from skinground.data.shards import ShardError, shard_ids, write_shard
from skinground.demo import tiny
from skinground.demo.lesions import render_tile
from skinground.demo.measure import encode_jpeg
from skinground.model import loading
from skinground.model.embed import extract
from skinground.model.predict import image_once
from skinground.retrieval.index import build_index
from skinground.retrieval.query import hierarchical_new_image, on_the_fly
from skinground.retrieval.search import hierarchical, stored
from skinground.retrieval.spaces import Space, merge_space

QUESTIONS = ["What is the area of the lesion in mm²?", "What is the B (LAB) value inside?"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    tiny.build_tiny_qwen2vl(root / "qwen", corpus=QUESTIONS, image_size=56)
    model, processor = loading.load_mllm(root / "qwen", image_size=56)
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(40)]
    for i in ids:
        tile = render_tile(rng, int(rng.integers(61, 140)))
        (folder / f"{i}.jpg").write_bytes(encode_jpeg(tile.rgb, 90))
    return model, processor, open_images(folder), ids


def test_on_the_fly_equals_stored(setup):
    model, processor, store, ids = setup
    train, test = ids[:34], ids[34:]
    _, db_im, db_ima = extract(model, processor, store, train, QUESTIONS, batch_images=5,
                               token="question")
    _, q_im, q_ima = extract(model, processor, store, test, QUESTIONS, batch_images=5,
                             token="question")
    index = build_index(db_im.astype(np.float32))
    for a, question in enumerate(QUESTIONS):
        want = hierarchical(index, q_im, q_ima[:, a], b=12, k=5,
                            candidate_ima=stored(db_ima[:, a]))
        got = hierarchical(index, q_im, q_ima[:, a], b=12, k=5, batch_size=2,
                           candidate_ima=on_the_fly(model, processor, store, train, question,
                                                    batch_images=3, token="question"))
        np.testing.assert_array_equal(got.idx, want.idx)
        np.testing.assert_allclose(got.scores, want.scores, atol=2e-3)
        # A new image (not in the database) as skinground query retrieves for it: its h_im
        # and h_im,a from the image-once pass that also answers.
        once = image_once(model, processor, [store.read(test[0])], [question],
                          max_new_tokens=1, token="question")
        one = hierarchical_new_image(model, processor, store, train, index, once.h_im,
                                     once.h_ima[:, 0], question, b=12, k=5, token="question",
                                     batch_images=8)
        np.testing.assert_array_equal(one.idx[0], want.idx[0])


def test_shards_cover_the_split_and_merge_in_order(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in (5, 3, 9, 1, 7, 2, 8)]
    parts = [shard_ids(ids, 3, s) for s in range(3)]
    assert sum(parts, []) == sorted(ids) and all(parts)
    paths = []
    for s, part in enumerate(parts):
        vec = np.array([[int(i[-1]), s] for i in part], dtype=np.float16)
        write_shard(tmp_path / f"shard{s}.npz", part, {"im": vec, "tbp_lv_A": -vec})
        paths.append(tmp_path / f"shard{s}.npz")
    assert merge_space(paths, "tbp_lv_A", tmp_path / "A.npz") == (len(ids), 2)
    merged = Space(tmp_path / "A.npz")
    assert merged.ids == sorted(ids)
    assert merged.rows(0, len(ids))[:, 0].tolist() == [-int(i[-1]) for i in sorted(ids)]
    with pytest.raises(ShardError, match="no embedding space 'tbp_lv_B'"):
        merge_space(paths, "tbp_lv_B", tmp_path / "B.npz")
    assert not (tmp_path / "B.npz").exists()
    with pytest.raises(ValueError, match="shard 3"):
        shard_ids(ids, 3, 3)
