"""model.embed: prefix-shared h_im / h_im,a equal the naive one-forward-per-pair reference."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skinground.data.images import open_images
from skinground.demo import tiny
from skinground.model import embed, loading
from skinground.model import prefix as P

from reference import naive_embeddings

QUESTIONS = [
    "What is the area of the lesion in mm²?",
    "Area?",
    "What is the average B (LAB) contrast between the inside and the outside of the lesion?",
]
CORPUS = [f"{q} {v}" for q in QUESTIONS for v in ("12.34", "0.57", "-1.25")]
SIZES = (61, 131, 239)  # SLICE-3D's smallest, median and largest tile
BUDGET = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}
TOL = 1e-4


def rgb(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    return tiny.build_tiny_qwen2vl(root / "qwen2vl", corpus=CORPUS, image_size=112)


@pytest.fixture(scope="module")
def native(model_dir):
    """Native resolution within a pixel budget: tiles of different sizes stay different."""
    return loading.load_mllm(model_dir, **BUDGET)


@pytest.fixture(scope="module")
def fixed(model_dir):
    """The saved fixed 112 px square (16 image tokens per image)."""
    return loading.load_mllm(model_dir)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [rgb(s, k) for k, s in enumerate(SIZES)]


@pytest.fixture(scope="module")
def reference(native, images):
    model, processor = native
    return naive_embeddings(model, processor, images, QUESTIONS)


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())


def test_inputs_really_differ(native, images):
    """The test below covers different prefix lengths and different suffix lengths."""
    model, processor = native
    prefix, suffixes = P.split_template(processor, QUESTIONS)
    batch = P.encode(processor, images, [prefix] * len(images))
    real = batch["attention_mask"].sum(1).tolist()
    assert len(set(real)) == len(images)
    lengths = [len(processor.tokenizer(s, add_special_tokens=False)["input_ids"])
               for s in suffixes]
    assert len(set(lengths)) == len(QUESTIONS)


def test_prefix_shared_matches_naive_native_sizes(native, images, reference):
    model, processor = native
    h_im, h_ima = embed.prefix_shared_embeddings(model, processor, images, QUESTIONS,
                                                 batch_images=len(images), token="question")
    d = model.config.text_config.hidden_size
    assert h_im.shape == (3, d) and h_ima.shape == (3, 3, d)
    assert h_im.dtype == h_ima.dtype == torch.float32 and h_im.device.type == "cpu"
    assert max_diff(h_im, reference[0]) < TOL
    assert max_diff(h_ima, reference[1]) < TOL
    # Not trivially equal: images and questions give different embeddings.
    assert max_diff(h_ima[:, 0], h_ima[:, 1]) > 1e-3
    assert max_diff(h_ima[0], h_ima[1]) > 1e-3


def test_prefix_shared_matches_naive_fixed_size(fixed, images):
    model, processor = fixed
    ref_im, ref_ima = naive_embeddings(model, processor, images, QUESTIONS)
    h_im, h_ima = embed.prefix_shared_embeddings(model, processor, images, QUESTIONS,
                                                 batch_images=3, token="question")
    assert max_diff(h_im, ref_im) < TOL
    assert max_diff(h_ima, ref_ima) < TOL


def test_batch_size_does_not_change_result(native, images, reference):
    model, processor = native
    for batch_images in (1, 2):
        h_im, h_ima = embed.prefix_shared_embeddings(model, processor, images, QUESTIONS,
                                                     batch_images=batch_images,
                                                     token="question")
        assert max_diff(h_im, reference[0]) < TOL
        assert max_diff(h_ima, reference[1]) < TOL


def test_h_im_is_mean_over_image_tokens(native, images, reference):
    model, processor = native
    prefix, _ = P.split_template(processor, QUESTIONS)
    assert prefix.endswith("<|vision_end|>") and "<|image_pad|>" in prefix
    merge = model.config.vision_config.spatial_merge_size
    for k, image in enumerate(images):
        batch = P.encode(processor, [image], [loading.chat_prompt(processor, QUESTIONS[0])])
        ids = batch["input_ids"][0]
        is_image = ids == model.config.image_token_id
        assert int(is_image.sum()) == int(batch["image_grid_thw"][0].prod()) // merge**2
        with torch.inference_mode():
            out = model(**batch, output_hidden_states=True)
        states = out.hidden_states[-1][0]  # after the final norm, causal: prefix unaffected
        assert max_diff(states[is_image].mean(0), reference[0][k]) < TOL
        # h_im,a (default: the paper's final question token, before <|im_end|> \n
        # <|im_start|> assistant \n)
        assert max_diff(states[-6], reference[1][k, 0]) < TOL
        assert max_diff(states.mean(0), reference[0][k]) > 1e-3  # text positions excluded


def test_no_questions_gives_h_im_only(native, images, reference):
    model, processor = native
    h_im, h_ima = embed.prefix_shared_embeddings(model, processor, images, [], batch_images=2,
                                                 token=None)
    assert h_ima.shape == (3, 0, model.config.text_config.hidden_size)
    assert max_diff(h_im, reference[0]) < TOL


def test_split_template_suffixes(native):
    _, processor = native
    prefix, suffixes = P.split_template(processor, QUESTIONS)
    for q, s in zip(QUESTIONS, suffixes, strict=True):
        assert prefix + s == loading.chat_prompt(processor, q)
        assert s == f"{q}<|im_end|>\n{loading.ASSISTANT_HEADER}"


def test_extract_aligned_float16(native, tmp_path, caplog):
    model, processor = native
    folder = tmp_path / "images"
    folder.mkdir()
    ids = [f"ISIC_{k:07d}" for k in range(4)]
    for k, (i, size) in enumerate(zip(ids, (239, 61, 131, 97), strict=True)):
        rgb(size, 10 + k).save(folder / f"{i}.jpg", quality=90)
    order = [ids[2], ids[0], ids[3], ids[1]]
    with (open_images(folder) as store,
          caplog.at_level(logging.INFO, logger="skinground.model.embed")):
        out_ids, h_im, h_ima = embed.extract(model, processor, store, order, QUESTIONS,
                                             batch_images=3, token="question")
        _, h_im1, h_ima1 = embed.extract(model, processor, store, order, QUESTIONS,
                                         batch_images=1, token="question", progress=False)
        decoded = [store.read(i) for i in order]
    d = model.config.text_config.hidden_size
    assert out_ids == order
    assert h_im.dtype == h_ima.dtype == np.float16
    assert h_im.shape == (4, d) and h_ima.shape == (4, 3, d)
    ref_im, ref_ima = naive_embeddings(model, processor, decoded, QUESTIONS)
    f16 = dict(atol=2e-3, rtol=2e-3)  # float16 storage rounding
    np.testing.assert_allclose(h_im.astype(np.float32), ref_im.numpy(), **f16)
    np.testing.assert_allclose(h_ima.astype(np.float32), ref_ima.numpy(), **f16)
    np.testing.assert_allclose(h_im1.astype(np.float32), h_im.astype(np.float32), **f16)
    np.testing.assert_allclose(h_ima1.astype(np.float32), h_ima.astype(np.float32), **f16)
    assert any("embedded images: 4/4" in r.getMessage() for r in caplog.records)


def test_bad_batch_size(native, images):
    model, processor = native
    with pytest.raises(ValueError, match="batch_images"):
        embed.prefix_shared_embeddings(model, processor, images, QUESTIONS, batch_images=0,
                                       token="question")


def test_a_shard_is_byte_identical_under_other_threads_and_load(tmp_path, model_dir):
    """The embed_shard script twice on the same shard: 1 thread on an idle machine, then 2
    threads with another process loading the cores; the shard files are the same bytes."""
    import subprocess
    import sys

    import h5py

    from conftest import jpeg_bytes, run_script

    ids = [f"ISIC_{i:07d}" for i in range(20)]
    with h5py.File(tmp_path / "images.hdf5", "w") as h5:
        for k, i in enumerate(ids):
            h5.create_dataset(i, data=np.bytes_(jpeg_bytes(61 + 9 * k, k)))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")

    def shard(name: str, threads: int) -> bytes:
        out = tmp_path / f"{name}.npz"
        proc = run_script(
            "embed", tmp_path, threads=threads, log=tmp_path / f"{name}.log",
            input={"base": model_dir, "images": tmp_path / "images.hdf5",
                   "ids": tmp_path / "ids.txt"},
            output={"out": out}, wildcards={"model": "untuned", "shard": 1},
            params={"preprocessing": BUDGET | {"image_size": None},
                    "questions": {f"q{j}": q for j, q in enumerate(QUESTIONS)},
                    "image_space": True, "h_ima_token": "question",
                    "batch_images": 4, "shards": 2})
        assert proc.returncode == 0, proc.log + proc.stderr
        return out.read_bytes()

    quiet = shard("quiet", 1)
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = shard("busy", 2)
    finally:
        load.kill()
    assert busy == quiet


@pytest.mark.parametrize("token", P.H_IMA_TOKENS)
def test_h_ima_token_choice_matches_the_full_forward(native, images, token):
    """h_im,a at the paper's final question token or at the prompt's end: the prefix-shared
    pass equals one full forward per (image, question) read at the same token."""
    model, processor = native
    _, ref_ima = naive_embeddings(model, processor, images, QUESTIONS, token=token)
    _, h_ima = embed.prefix_shared_embeddings(model, processor, images, QUESTIONS,
                                              batch_images=2, token=token)
    assert max_diff(h_ima, ref_ima) < TOL


def test_the_question_token_is_the_last_of_the_question(native, images):
    model, processor = native
    tok = processor.tokenizer
    _, suffixes = P.split_template(processor, QUESTIONS)
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in suffixes]
    s_ids, s_mask = P.pad_rows(ids, tok.pad_token_id)
    at = P.h_ima_positions(tok, s_ids, s_mask, "question")
    for row, a in zip(ids, at.tolist(), strict=True):
        assert tok.decode(row[: a + 1]).endswith("?")  # the question's last character
        assert len(row) - 1 - a == 5  # <|im_end|> \n <|im_start|> assistant \n
    assert (P.h_ima_positions(tok, s_ids, s_mask, "prompt_end")
            == torch.tensor([len(r) - 1 for r in ids])).all()
    q = embed.prefix_shared_embeddings(model, processor, images, QUESTIONS, batch_images=3,
                                       token="question")[1]
    e = embed.prefix_shared_embeddings(model, processor, images, QUESTIONS, batch_images=3,
                                       token="prompt_end")[1]
    assert max_diff(q, e) > 1e-3
    with pytest.raises(ValueError, match="h_im,a token"):
        P.h_ima_positions(tok, s_ids, s_mask, "last")
