"""The compute of Qwen2-VL and the image encoders (CLIP, SigLIP): model shapes, parameter and
FLOP counts, image tokens, and the accelerators' datasheet rates. Defined once;
``skinground.cost.estimate`` estimates the study with them, and the GPU check builds its 7B-shaped
model from :data:`QWEN2VL_7B`.

A forward pass costs 2 x (parameters a token passes through) per token: the vision blocks per
14 px patch (4 per image token), the patch merger per image token, the decoder layers per
sequence token, the LM head where logits are computed; training is 3x that (the 6·N·tokens
convention in which MFU is quoted).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from skinground.core.sections import pixel_params

# --------------------------------------------------------------------------- constants

#: The paper's counts (SLICE-3D, patient split 802/240).
PAPER_TRAIN_IMAGES = 282_564
PAPER_TEST_IMAGES = 118_495
PAPER_TUPLES = 1_412_820
#: SLICE-3D tile sides (px): the paper's summary.
TILE_MIN_PX, TILE_MAX_PX, TILE_MEDIAN_PX = 61, 239, 131

#: bf16 dense peak rates (FLOP/s) and memory bandwidths (B/s), datasheet values.
A6000_PEAK = 155e12
A6000_BANDWIDTH = 768e9
A6000_FP32_PEAK = 38.7e12
H200_PEAK = 989e12
H200_BANDWIDTH = 4.8e12

@dataclass(frozen=True)
class QwenSpec:
    """The shape of a Qwen2-VL model (what the parameter and FLOP counts need)."""

    text_hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab_size: int
    vision_depth: int
    vision_embed: int
    vision_heads: int
    patch_size: int = 14
    spatial_merge: int = 2
    temporal_patch: int = 2
    mlp_ratio: int = 4
    in_channels: int = 3
    #: The M-RoPE split of a head's rotary dimensions (temporal, height, width).
    mrope_section: tuple[int, ...] = ()


#: Qwen2-VL-7B(-Instruct)'s config.json.
QWEN2VL_7B = QwenSpec(text_hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4,
                      vocab_size=152064, vision_depth=32, vision_embed=1280, vision_heads=16,
                      mrope_section=(16, 24, 24))

@dataclass(frozen=True)
class EncoderSpec:
    """The shape of a ViT image encoder (CLIP or SigLIP): what its FLOPs and its embedding's
    width need. ``tokens``: positions per image (the patches, + [CLS] for CLIP);
    ``embedding``: the width of ``get_image_features`` (CLIP's projection; SigLIP's head keeps
    the width)."""

    name: str
    layers: int
    width: int
    mlp: int
    tokens: int
    embedding: int


#: MONET = CLIP ViT-L/14 at 224 px: 24 layers of width 1024, 256 patches + [CLS].
CLIP_L14 = EncoderSpec("CLIP ViT-L/14", layers=24, width=1024, mlp=4096, tokens=257,
                       embedding=768)
#: MedSigLIP = SigLIP So400m/14 at 448 px: 27 layers of width 1152, 32 x 32 patches.
SIGLIP_SO400M_448 = EncoderSpec("SigLIP So400m/14, 448 px", layers=27, width=1152, mlp=4304,
                                tokens=1024, embedding=1152)
#: The architectures of known hub repos (config ``model.encoders.<name>.hub``), for an
#: encoder whose folder is not here (the cost model runs anywhere).
KNOWN_ENCODERS: dict[str, EncoderSpec] = {
    "chanwkim/monet": CLIP_L14,
    "suinleelab/monet": CLIP_L14,
    "google/medsiglip-448": SIGLIP_SO400M_448,
}
#: transformers' defaults of each format's vision config (a config.json may leave them out).
_VISION_DEFAULTS = {
    "clip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "image_size": 224, "patch_size": 32},
    "siglip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "image_size": 224, "patch_size": 16},
}
_CLIP_PROJECTION_DEFAULT = 512
#: Parameters of the whole checkpoint of a known hub repo (both towers: an encoder job loads
#: the full CLIP or SigLIP model), stored in float32: CLIP ViT-L/14 has 427.6 M (1.71 GB),
#: SigLIP So400m's two towers about 878 M (3.5 GB).
KNOWN_ENCODER_PARAMETERS: dict[str, int] = {
    "chanwkim/monet": 427_616_513,
    "suinleelab/monet": 427_616_513,
    "google/medsiglip-448": 878_000_000,
}


def param_counts(spec: QwenSpec) -> dict[str, int]:
    """Parameters of ``Qwen2VLForConditionalGeneration`` by part (exact for transformers'
    implementation: the vision patch embedding, blocks and merger; the decoder's token
    embedding, layers and final norm; the LM head; and the total)."""
    e, h = spec.vision_embed, spec.text_hidden
    mlp = spec.mlp_ratio * e
    block = (2 * 2 * e  # two LayerNorms
             + 3 * e * e + 3 * e + e * e + e  # qkv, proj
             + e * mlp + mlp + mlp * e + e)  # fc1, fc2
    merged = e * spec.spatial_merge**2
    merger = 2 * e + merged * merged + merged + merged * h + h
    patch_embed = spec.in_channels * spec.temporal_patch * spec.patch_size**2 * e
    head_dim = h // spec.heads
    q, kv = spec.heads * head_dim, spec.kv_heads * head_dim
    layer = (h * q + q + 2 * (h * kv + kv) + q * h  # q, k, v (biases), o
             + 3 * h * spec.intermediate  # gate, up, down
             + 2 * h)  # two RMSNorms
    parts = {
        "vision_patch_embed": patch_embed,
        "vision_blocks": spec.vision_depth * block,
        "vision_merger": merger,
        "embed_tokens": spec.vocab_size * h,
        "decoder_layers": spec.layers * layer,
        "final_norm": h,
        "lm_head": h * spec.vocab_size,
    }
    parts["total"] = sum(parts.values())
    return parts


def linear_layers(spec: QwenSpec) -> dict[str, tuple[int, int]]:
    """Every ``nn.Linear`` of ``Qwen2VLForConditionalGeneration``, by the name transformers
    gives it (what ``train.lora.target_modules`` is matched against): (in, out) features."""
    e, h, mlp = spec.vision_embed, spec.text_hidden, spec.mlp_ratio * spec.vision_embed
    merged = e * spec.spatial_merge**2
    head_dim = h // spec.heads
    q, kv = spec.heads * head_dim, spec.kv_heads * head_dim
    out: dict[str, tuple[int, int]] = {}
    for i in range(spec.vision_depth):
        block = f"model.visual.blocks.{i}"
        out.update({f"{block}.attn.qkv": (e, 3 * e), f"{block}.attn.proj": (e, e),
                    f"{block}.mlp.fc1": (e, mlp), f"{block}.mlp.fc2": (mlp, e)})
    out.update({"model.visual.merger.mlp.0": (merged, merged),
                "model.visual.merger.mlp.2": (merged, h)})
    for i in range(spec.layers):
        layer = f"model.language_model.layers.{i}"
        out.update({f"{layer}.self_attn.q_proj": (h, q), f"{layer}.self_attn.k_proj": (h, kv),
                    f"{layer}.self_attn.v_proj": (h, kv), f"{layer}.self_attn.o_proj": (q, h),
                    f"{layer}.mlp.gate_proj": (h, spec.intermediate),
                    f"{layer}.mlp.up_proj": (h, spec.intermediate),
                    f"{layer}.mlp.down_proj": (spec.intermediate, h)})
    out["lm_head"] = (h, spec.vocab_size)
    return out


def lora_parameters(spec: QwenSpec, lora_cfg: Mapping[str, Any]) -> int:
    """Trainable parameters of the adapter ``train.lora`` makes on a model of shape ``spec``:
    r x (in + out) for each Linear its ``target_modules`` selects (a regex matched in full, as
    peft does; a list: names or name suffixes), plus the modules of ``modules_to_save``
    trained in full (``lm_head``, ``embed_tokens``, ``visual.merger``, or a Linear by name
    suffix). The adapter and the checkpoints store these (``skinground.cost.disk``)."""
    target, r = lora_cfg["target_modules"], int(lora_cfg["r"])
    layers = linear_layers(spec)

    def selected(name: str) -> bool:
        if isinstance(target, str):
            return re.fullmatch(target, name) is not None
        return any(name == t or name.endswith("." + t) for t in target)

    total = sum(r * (i + o) for name, (i, o) in layers.items() if selected(name))
    parts = param_counts(spec)
    whole = {"lm_head": parts["lm_head"], "embed_tokens": parts["embed_tokens"],
             "merger": parts["vision_merger"]}
    for name in lora_cfg.get("modules_to_save") or []:
        key = name.rsplit(".", 1)[-1]
        if key in whole:
            total += whole[key]
        else:
            total += sum(i * o for n, (i, o) in layers.items()
                         if n == name or n.endswith("." + name))
    return total


def forward_flops(spec: QwenSpec, *, tokens: float, image_tokens: float,
                  lm_tokens: float = 0.0) -> float:
    """Model FLOPs of one forward pass over ``tokens`` sequence positions (of which
    ``image_tokens`` are image tokens, whose patches the vision encoder computes; pass 0 when
    the images are not encoded in this pass) with logits at ``lm_tokens`` positions."""
    p = param_counts(spec)
    patches = image_tokens * spec.spatial_merge**2
    vision = 2 * (p["vision_patch_embed"] + p["vision_blocks"]) * patches
    vision += 2 * p["vision_merger"] * image_tokens
    return vision + 2 * p["decoder_layers"] * tokens + 2 * p["lm_head"] * lm_tokens


def weight_bytes(spec: QwenSpec, bytes_per_param: int = 2) -> float:
    """Bytes of weights one pass reads (everything but the token embedding, a lookup)."""
    p = param_counts(spec)
    return (p["total"] - p["embed_tokens"]) * bytes_per_param


def encoder_flops_per_image(spec: EncoderSpec = CLIP_L14) -> float:
    """Model FLOPs of one image through an encoder: its layers (attention projections and
    MLP) at every position, and the head (CLIP's projection, SigLIP's pooling) counted at
    every position too (an upper bound; the patch embedding is left out)."""
    w, mlp = spec.width, spec.mlp
    per_layer = 4 * w * w + 2 * w * mlp
    return 2 * (spec.layers * per_layer + w * spec.embedding) * spec.tokens


def encoder_file_bytes(spec: EncoderSpec, hub: str | None = None) -> float:
    """Bytes of an encoder's checkpoint (what its job reads): the known hub repo's parameters
    (:data:`KNOWN_ENCODER_PARAMETERS`) in float32, else two towers of the vision tower's
    layers (an estimate: CLIP's and SigLIP's text towers are no larger)."""
    if hub in KNOWN_ENCODER_PARAMETERS:
        return KNOWN_ENCODER_PARAMETERS[hub] * 4
    per_layer = 4 * spec.width**2 + 2 * spec.width * spec.mlp
    return 2 * spec.layers * per_layer * 4


def encoder_spec_from_config(config: Mapping[str, Any], fmt: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of a transformers config.json (``fmt``: clip or siglip)."""
    if fmt not in _VISION_DEFAULTS:
        raise ValueError(f"unknown encoder format {fmt!r} (known: {', '.join(_VISION_DEFAULTS)})")
    v = {**_VISION_DEFAULTS[fmt], **(config.get("vision_config") or {})}
    side = int(v["image_size"]) // int(v["patch_size"])
    width = int(v["hidden_size"])
    clip = fmt == "clip"
    return EncoderSpec(
        f"{'CLIP' if clip else 'SigLIP'} ViT, {v['num_hidden_layers']} x {width}, "
        f"{v['image_size']} px", layers=int(v["num_hidden_layers"]), width=width,
        mlp=int(v["intermediate_size"]), tokens=side * side + (1 if clip else 0),
        embedding=int(config.get("projection_dim", _CLIP_PROJECTION_DEFAULT)) if clip else width)


def encoder_spec(name: str, encoder: Mapping[str, Any], *, read_folder: bool = True,
                 ) -> EncoderSpec:
    """The architecture of config encoder ``name`` (``model.encoders.<name>``): its folder's
    config.json when ``read_folder`` and it is there, else the known architecture of its
    ``hub`` repo (:data:`KNOWN_ENCODERS`); neither: a ValueError naming the encoder."""
    config_json = Path(os.fspath(encoder["path"])) / "config.json"
    if read_folder and config_json.is_file():
        spec = encoder_spec_from_config(json.loads(config_json.read_text(encoding="utf-8")),
                                        encoder["format"])
        # a known architecture keeps its name (MONET's folder is "CLIP ViT-L/14")
        shape = astuple(spec)[1:]
        return next((k for k in KNOWN_ENCODERS.values() if astuple(k)[1:] == shape), spec)
    if encoder.get("hub") in KNOWN_ENCODERS:
        return KNOWN_ENCODERS[encoder["hub"]]
    raise ValueError(
        f"model.encoders.{name}: its architecture is unknown: no {config_json} and its hub "
        f"repo {encoder.get('hub')!r} is not one of {', '.join(KNOWN_ENCODERS)} "
        "(skinground.cost.flops.KNOWN_ENCODERS); fetch the weights, or add the repo there")


def encoder_specs(model_cfg: Mapping[str, Any]) -> dict[str, EncoderSpec]:
    """The architecture of every encoder of config ``model`` (:func:`encoder_spec`), in config
    order. The demo's folders hold tiny stand-ins of the hub's models (``build_tiny``): the
    paper-scale estimate takes the hub's, as it takes the 7B's shape for the tiny Qwen2-VL."""
    read = not model_cfg.get("build_tiny")
    return {name: encoder_spec(name, e, read_folder=read)
            for name, e in (model_cfg.get("encoders") or {}).items()}


# --------------------------------------------------------------------------- image tokens


def smart_resize(height: int, width: int, *, factor: int = 28, min_pixels: int = 3136,
                 max_pixels: int = 262144) -> tuple[int, int]:
    """Qwen2-VL's resize: sides rounded to multiples of ``factor`` within the pixel budget
    (the same arithmetic as transformers' ``qwen2_vl.image_processing_qwen2_vl``)."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(side_px: int, model_cfg: Mapping[str, Any], spec: QwenSpec = QWEN2VL_7B,
                 ) -> int:
    """``<|image_pad|>`` tokens of a square ``side_px`` tile under config ``model``'s pixel
    budget (``image_size``, else ``min_pixels``/``max_pixels``)."""
    factor = spec.patch_size * spec.spatial_merge
    budget = pixel_params(model_cfg)
    if "image_size" in budget:
        return (int(budget["image_size"]) // factor) ** 2
    h, w = smart_resize(side_px, side_px, factor=factor,
                        min_pixels=int(budget["min_pixels"] or 56 * 56),
                        max_pixels=int(budget["max_pixels"] or 28 * 28 * 1280))
    return (h // factor) * (w // factor)


def mean_image_tokens(model_cfg: Mapping[str, Any], *, median_px: float = TILE_MEDIAN_PX,
                      sigma: float = 0.0, lo: int = TILE_MIN_PX, hi: int = TILE_MAX_PX,
                      spec: QwenSpec = QWEN2VL_7B) -> float:
    """Mean image tokens per tile: the median tile's when ``sigma`` is 0, else the mean over
    a log-normal side length (median ``median_px``, log-sd ``sigma``) clipped to [lo, hi]."""
    if sigma <= 0:
        return float(image_tokens(round(median_px), model_cfg, spec))

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf((math.log(x) - math.log(median_px)) / (sigma * math.sqrt(2))))

    total = 0.0
    for px in range(lo, hi + 1):
        a = 0.0 if px == lo else cdf(px - 0.5)
        b = 1.0 if px == hi else cdf(px + 0.5)
        total += (b - a) * image_tokens(px, model_cfg, spec)
    return total
