"""skinground.models: tiny Qwen2-VL / CLIP built locally, loaded back through the 7B path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, Qwen2VLForConditionalGeneration

from skinground import models
from skinground.demo import tiny

from reference import image_token_count

CORPUS = [
    f"What is the {name} of the lesion? {value}"
    for name in ("area in mm²", "minor axis in mm", "color irregularity", "border score")
    for value in ("12.34", "0.57", "3.00", "-1.25", "250.10")
]


def rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "mllm": tiny.build_tiny_qwen2vl(root / "qwen2vl", corpus=CORPUS, image_size=112),
        "clip": tiny.build_tiny_clip(root / "clip"),
    }


@pytest.fixture(scope="module")
def mllm(tiny_dirs):
    return models.load_mllm(tiny_dirs["mllm"])


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer(CORPUS)


def test_tokenizer_splits_digits_one_by_one(tokenizer):
    assert tokenizer.tokenize("12.34") == ["1", "2", ".", "3", "4"]
    ids = tokenizer("0.57 and 250.10")["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    assert all(len(p.strip()) <= 1 for p in pieces if any(c.isdigit() for c in p))


@pytest.mark.parametrize("text", ["Area: 12.34 mm²", "x ~ {a|b} µ°±'\"\\\t\n", "-0.05"])
def test_tokenizer_round_trips(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_tokenizer_special_tokens(tokenizer):
    ids = tiny.special_token_ids(tokenizer)
    assert len(set(ids.values())) == len(models.SPECIAL_TOKENS)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.tokenize("<|vision_start|><|image_pad|><|vision_end|>") == [
        "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
    assert len(tokenizer) <= 512


def test_tiny_dir_layout(tiny_dirs):
    names = {p.name for p in tiny_dirs["mllm"].iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
            "chat_template.jinja", "generation_config.json"} <= names
    assert not [p for p in tiny_dirs["mllm"].parent.iterdir() if p.name.endswith(".tmp")]


def test_config_matches_tokenizer(mllm):
    model, processor = mllm
    tok, cfg = processor.tokenizer, model.config
    assert cfg.text_config.vocab_size == len(tok)
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.text_config.eos_token_id == tok.eos_token_id


def test_chat_prompt_structure(mllm):
    _, processor = mllm
    prompt = models.chat_prompt(processor, "What is the area?")
    assert prompt.endswith(models.ASSISTANT_HEADER)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the area?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_forward_and_generate(mllm):
    model, processor = mllm
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    prompt = models.chat_prompt(processor, "What is the area of the lesion in mm²?")
    batch = processor(images=[rgb(131, 131)], text=[prompt], return_tensors="pt")
    assert "mm_token_type_ids" in batch
    image_id = model.config.image_token_id
    assert int((batch["input_ids"] == image_id).sum()) == 16
    assert image_token_count(processor, 131, 131) == 16
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(processor.tokenizer))
    assert torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]


def test_fixed_square_whatever_the_aspect(mllm):
    _, processor = mllm
    prompt = models.chat_prompt(processor, "q")
    batch = processor(images=[rgb(200, 90)], text=[prompt], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_pixel_budget_from_arguments(tiny_dirs):
    _, processor = models.load_mllm(tiny_dirs["mllm"], min_pixels=56 * 56, max_pixels=224 * 224)
    assert processor.image_size is None
    assert image_token_count(processor, 112, 224) == 4 * 8
    _, processor = models.load_mllm(tiny_dirs["mllm"], image_size=56)
    assert image_token_count(processor, 300, 100) == 4
    with pytest.raises(ValueError, match="multiple of 28"):
        models.load_mllm(tiny_dirs["mllm"], image_size=100)


def _hub_layout(src: Path, dst: Path) -> Path:
    """Rewrite a tiny dir in Qwen2-VL-7B-Instruct's hub layout (flat config, legacy files)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    text = cfg.pop("text_config")
    rope = text.pop("rope_parameters")
    for key in ("model_type", "layer_types"):
        text.pop(key, None)
    cfg.update(text, rope_theta=rope["rope_theta"],
               rope_scaling={"type": "mrope", "mrope_section": rope["mrope_section"]})
    (dst / "config.json").write_text(json.dumps(cfg))
    proc = json.loads((dst / "processor_config.json").read_text())["image_processor"]
    proc.pop("size")
    proc.update(min_pixels=3136, max_pixels=12845056, processor_class="Qwen2VLProcessor")
    (dst / "preprocessor_config.json").write_text(json.dumps(proc))
    (dst / "processor_config.json").unlink()
    template = (dst / "chat_template.jinja").read_text()
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (dst / "chat_template.jinja").unlink()
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    tok.update(tokenizer_class="Qwen2Tokenizer", processor_class="Qwen2VLProcessor")
    (dst / "tokenizer_config.json").write_text(json.dumps(tok))
    return dst


def test_hub_layout_loads_through_same_path(tiny_dirs, tmp_path):
    hub = _hub_layout(tiny_dirs["mllm"], tmp_path / "hub")
    model, processor = models.load_mllm(hub, image_size=112)
    prompt = models.chat_prompt(processor, "q")
    batch = processor(images=[rgb(131, 131)], text=[prompt], return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        assert model(**batch).logits.shape[-1] == len(processor.tokenizer)


def test_load_mllm_errors_name_the_path(tiny_dirs, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(models.ModelLoadError, match="does not exist") as err:
        models.load_mllm(missing)
    assert str(missing) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(models.ModelLoadError, match="no config.json") as err:
        models.load_mllm(empty)
    assert str(empty) in str(err.value)
    with pytest.raises(models.ModelLoadError, match="'clip'") as err:
        models.load_mllm(tiny_dirs["clip"])
    assert str(tiny_dirs["clip"]) in str(err.value)


def test_load_mllm_missing_tokenizer(tiny_dirs, tmp_path):
    broken = shutil.copytree(tiny_dirs["mllm"], tmp_path / "broken")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(models.ModelLoadError, match="tokenizer") as err:
        models.load_mllm(broken)
    assert str(broken) in str(err.value)
    (broken / "processor_config.json").unlink()
    with pytest.raises(models.ModelLoadError, match="image processor"):
        models.load_mllm(broken)


def test_clip_features(tiny_dirs):
    model, processor = models.load_clip(tiny_dirs["clip"])
    assert isinstance(model, CLIPModel)
    assert tuple(processor.image_mean) == pytest.approx(models.IMAGENET_MEAN)
    assert tuple(processor.image_std) == pytest.approx(models.IMAGENET_STD)
    feats = models.clip_image_features(model, processor, [rgb(131, 131), rgb(300, 200, 1)])
    assert feats.shape == (2, model.config.projection_dim)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    again = models.clip_image_features(model, processor, [rgb(131, 131)])
    assert torch.allclose(again[0], feats[0], atol=1e-5)


def test_load_clip_rejects_mllm(tiny_dirs):
    with pytest.raises(models.ModelLoadError, match="'qwen2_vl'") as err:
        models.load_clip(tiny_dirs["mllm"])
    assert str(tiny_dirs["mllm"]) in str(err.value)


def test_build_is_seeded(tiny_dirs, tmp_path):
    again = tiny.build_tiny_qwen2vl(tmp_path / "again", corpus=CORPUS, image_size=112)
    a = Qwen2VLForConditionalGeneration.from_pretrained(tiny_dirs["mllm"]).state_dict()
    b = Qwen2VLForConditionalGeneration.from_pretrained(again).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_monet_preprocessing_from_the_config_replaces_the_folders(tiny_dirs, repo_config):
    """The config's MONET preprocessing (224 px bicubic, centre crop, ImageNet mean/std) is
    what the features see, whatever the folder's preprocessor_config.json says."""
    pre = repo_config["model"]["monet_preprocessing"]
    assert pre["size"] == 224 and tuple(pre["mean"]) == models.IMAGENET_MEAN
    other = dict(pre, size=112, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    model, processor = models.load_clip(tiny_dirs["clip"], preprocessing=other)
    batch = processor(images=[rgb(300, 200, 1)], return_tensors="pt")["pixel_values"]
    assert batch.shape[-2:] == (112, 112)
    assert processor.image_mean == [0.5, 0.5, 0.5] and processor.resample == 3  # bicubic
    white = processor(images=[Image.new("RGB", (150, 150), "white")],
                      return_tensors="pt")["pixel_values"]
    assert torch.allclose(white, torch.full_like(white, 2.0))  # (1 - 0.5) / 0.25
