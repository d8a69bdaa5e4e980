"""skinground.model.loading: tiny Qwen2-VL / CLIP / SigLIP built locally, loaded back through the
paths the rules use (the 7B's, the image encoders')."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, Qwen2VLForConditionalGeneration, SiglipModel

from skinground.demo import tiny
from skinground.model import loading

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
        "siglip": tiny.build_tiny_siglip(root / "siglip"),
    }


@pytest.fixture(scope="module")
def mllm(tiny_dirs):
    return loading.load_mllm(tiny_dirs["mllm"])


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
    assert len(set(ids.values())) == len(loading.SPECIAL_TOKENS)
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
    prompt = loading.chat_prompt(processor, "What is the area?")
    assert prompt.endswith(loading.ASSISTANT_HEADER)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the area?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_forward_and_generate(mllm):
    model, processor = mllm
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    prompt = loading.chat_prompt(processor, "What is the area of the lesion in mm²?")
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
    prompt = loading.chat_prompt(processor, "q")
    batch = processor(images=[rgb(200, 90)], text=[prompt], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_pixel_budget_from_arguments(tiny_dirs):
    _, processor = loading.load_mllm(tiny_dirs["mllm"], min_pixels=56 * 56, max_pixels=224 * 224)
    assert processor.image_size is None
    assert image_token_count(processor, 112, 224) == 4 * 8
    _, processor = loading.load_mllm(tiny_dirs["mllm"], image_size=56)
    assert image_token_count(processor, 300, 100) == 4
    with pytest.raises(ValueError, match="multiple of 28"):
        loading.load_mllm(tiny_dirs["mllm"], image_size=100)


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
    model, processor = loading.load_mllm(hub, image_size=112)
    prompt = loading.chat_prompt(processor, "q")
    batch = processor(images=[rgb(131, 131)], text=[prompt], return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        assert model(**batch).logits.shape[-1] == len(processor.tokenizer)


def test_load_mllm_errors_name_the_path(tiny_dirs, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(loading.ModelLoadError, match="does not exist") as err:
        loading.load_mllm(missing)
    assert str(missing) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(loading.ModelLoadError, match="no config.json") as err:
        loading.load_mllm(empty)
    assert str(empty) in str(err.value)
    with pytest.raises(loading.ModelLoadError, match="'clip'") as err:
        loading.load_mllm(tiny_dirs["clip"])
    assert str(tiny_dirs["clip"]) in str(err.value)


def test_load_mllm_missing_tokenizer(tiny_dirs, tmp_path):
    broken = shutil.copytree(tiny_dirs["mllm"], tmp_path / "broken")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(loading.ModelLoadError, match="tokenizer") as err:
        loading.load_mllm(broken)
    assert str(broken) in str(err.value)
    (broken / "processor_config.json").unlink()
    with pytest.raises(loading.ModelLoadError, match="image processor"):
        loading.load_mllm(broken)


def test_clip_features(tiny_dirs):
    model, processor = loading.load_encoder(tiny_dirs["clip"], "clip")
    assert isinstance(model, CLIPModel)
    assert type(processor).__name__ == "CLIPImageProcessorPil"  # never torchvision's
    assert tuple(processor.image_mean) == pytest.approx(loading.IMAGENET_MEAN)
    assert tuple(processor.image_std) == pytest.approx(loading.IMAGENET_STD)
    feats = loading.image_features(model, processor, [rgb(131, 131), rgb(300, 200, 1)])
    assert feats.shape == (2, model.config.projection_dim)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    again = loading.image_features(model, processor, [rgb(131, 131)])
    assert torch.allclose(again[0], feats[0], atol=1e-5)


def test_siglip_features(tiny_dirs):
    model, processor = loading.load_encoder(tiny_dirs["siglip"], "siglip")
    assert isinstance(model, SiglipModel)
    assert type(processor).__name__ == "SiglipImageProcessorPil"
    assert processor.size.height == processor.size.width == 64  # the folder's: a square
    feats = loading.image_features(model, processor, [rgb(131, 131), rgb(300, 200, 1)])
    assert feats.shape == (2, model.config.vision_config.hidden_size)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(feats[0], feats[1], atol=1e-3)  # the images differ


def _by_hand(image: Image.Image, pre: dict) -> torch.Tensor:
    """``pre`` (config preprocessing) with PIL and numpy alone: resize (the short side, then a
    centre crop, or the whole image to a square), / 255, (x - mean) / std, CHW."""
    size, resample = pre["size"], loading.RESAMPLE[pre["resample"]]
    image = image.convert("RGB")
    if pre["crop"]:
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        image = image.resize((size, new_long) if w <= h else (new_long, size), resample)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    else:
        image = image.resize((size, size), resample)
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


#: Preprocessings unlike the tiny folders' own (so the config's must be what is applied).
SIGLIP_PRE = {"size": 64, "crop": False, "resample": "bicubic", "mean": list(loading.IMAGENET_MEAN),
              "std": list(loading.IMAGENET_STD)}
CLIP_PRE = {"size": 224, "crop": True, "resample": "bilinear", "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25]}


#: MedSigLIP's own preprocessing, which the tiny SigLIP folder holds too.
MEDSIGLIP_PRE = {**SIGLIP_PRE, "resample": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.mark.parametrize(("fmt", "pre", "the_folders"),
                         [("siglip", SIGLIP_PRE, False), ("clip", CLIP_PRE, False),
                          ("siglip", MEDSIGLIP_PRE, True)],
                         ids=["siglip-imagenet-bicubic", "clip-crop-bilinear", "siglip-own"])
def test_encoder_features_equal_a_direct_forward(tiny_dirs, fmt, pre, the_folders):
    """The embeddings image_features gives are the model's own vision tower (+ CLIP's
    projection) run on pixels prepared by hand as the config says, L2-normalised."""
    model, processor = loading.load_encoder(tiny_dirs[fmt], fmt, preprocessing=pre)
    images = [rgb(131, 131), rgb(300, 200, 1), rgb(61, 239, 2)]
    pixels = torch.stack([_by_hand(im, pre) for im in images])
    assert torch.allclose(processor(images=images, return_tensors="pt")["pixel_values"],
                          pixels, atol=1e-5)
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=pixels).pooler_output
        if fmt == "clip":
            pooled = model.visual_projection(pooled)
    direct = torch.nn.functional.normalize(pooled, dim=-1)
    feats = loading.image_features(model, processor, images)
    assert feats.shape == direct.shape
    assert torch.allclose(feats, direct, atol=1e-5)
    # the config's preprocessing is the one applied: the folder's own gives other embeddings
    # (the same only where the config asks for what the folder holds)
    own_model, own = loading.load_encoder(tiny_dirs[fmt], fmt)
    same = torch.allclose(loading.image_features(own_model, own, images), direct, atol=1e-3)
    assert same == the_folders


def test_another_image_size_interpolates_the_position_embeddings(tiny_dirs):
    """A preprocessing size other than the model's runs (the position embeddings
    interpolated), and at the model's own size nothing is interpolated."""
    model, processor = loading.load_encoder(tiny_dirs["siglip"], "siglip",
                                           preprocessing={**SIGLIP_PRE, "size": 96})
    assert loading.encoder_image_size(model) == 64
    feats = loading.image_features(model, processor, [rgb(131, 131)])
    assert feats.shape == (1, model.config.vision_config.hidden_size)
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize(("folder", "fmt", "found"), [("mllm", "clip", "'qwen2_vl'"),
                                                      ("siglip", "clip", "'siglip'"),
                                                      ("clip", "siglip", "'clip'")])
def test_load_encoder_rejects_another_model(tiny_dirs, folder, fmt, found):
    with pytest.raises(loading.ModelLoadError, match=found) as err:
        loading.load_encoder(tiny_dirs[folder], fmt)
    assert str(tiny_dirs[folder]) in str(err.value)


def test_load_encoder_rejects_an_unknown_format(tiny_dirs):
    with pytest.raises(loading.ModelLoadError, match="open_clip"):
        loading.load_encoder(tiny_dirs["clip"], "open_clip")


def test_build_is_seeded(tiny_dirs, tmp_path):
    again = tiny.build_tiny_qwen2vl(tmp_path / "again", corpus=CORPUS, image_size=112)
    a = Qwen2VLForConditionalGeneration.from_pretrained(tiny_dirs["mllm"]).state_dict()
    b = Qwen2VLForConditionalGeneration.from_pretrained(again).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_monet_preprocessing_from_the_config_replaces_the_folders(tiny_dirs, repo_config):
    """The config's MONET preprocessing (224 px bicubic, centre crop, ImageNet mean/std) is
    what the features see, whatever the folder's preprocessor_config.json says."""
    monet = repo_config["model"]["encoders"]["monet"]
    pre = monet["preprocessing"]
    assert monet["format"] == "clip" and monet["hub"] == "chanwkim/monet"
    assert pre["size"] == 224 and pre["crop"] and pre["resample"] == "bicubic"
    assert tuple(pre["mean"]) == loading.IMAGENET_MEAN
    other = dict(pre, size=112, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    model, processor = loading.load_encoder(tiny_dirs["clip"], "clip", preprocessing=other)
    batch = processor(images=[rgb(300, 200, 1)], return_tensors="pt")["pixel_values"]
    assert batch.shape[-2:] == (112, 112)
    assert processor.image_mean == [0.5, 0.5, 0.5] and processor.resample == 3  # bicubic
    white = processor(images=[Image.new("RGB", (150, 150), "white")],
                      return_tensors="pt")["pixel_values"]
    assert torch.allclose(white, torch.full_like(white, 2.0))  # (1 - 0.5) / 0.25


def test_a_siglip_preprocessing_resizes_without_crop(tiny_dirs):
    """crop false (SigLIP's way): the whole image squeezed to size x size, nothing cut off."""
    pre = {"size": 64, "crop": False, "resample": "bilinear", "mean": [0.5] * 3,
           "std": [0.5] * 3}
    _, processor = loading.load_encoder(tiny_dirs["siglip"], "siglip", preprocessing=pre)
    wide = Image.new("RGB", (300, 100), "black")
    wide.paste(Image.new("RGB", (50, 100), "white"), (0, 0))  # a white left sixth
    x = processor(images=[wide], return_tensors="pt")["pixel_values"][0]
    assert x.shape == (3, 64, 64) and processor.resample == 2  # bilinear
    assert torch.allclose(x[:, :, :8], torch.ones(3, 64, 8))  # kept: (1 - 0.5) / 0.5
    assert torch.allclose(x[:, :, 16:], -torch.ones(3, 64, 48))
