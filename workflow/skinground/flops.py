"""The compute of Qwen2-VL and CLIP: model shapes, parameter and FLOP counts, image tokens,
and the accelerators' datasheet rates. Defined once; ``skinground.cost`` estimates the study
with them and ``bench/gpu_check.py`` builds its 7B-shaped model from :data:`QWEN2VL_7B`.

A forward pass costs 2 x (parameters a token passes through) per token: the vision blocks per
14 px patch (4 per image token), the patch merger per image token, the decoder layers per
sequence token, the LM head where logits are computed; training is 3x that (the 6·N·tokens
convention in which MFU is quoted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

#: MONET = CLIP ViT-L/14 at 224 px: 24 layers of width 1024, 256 patches + [CLS].
CLIP_L14 = {"layers": 24, "width": 1024, "mlp": 4096, "tokens": 257, "projection": 768}


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


def clip_flops_per_image(clip: Mapping[str, int] = CLIP_L14) -> float:
    w, mlp = clip["width"], clip["mlp"]
    per_layer = 4 * w * w + 2 * w * mlp
    return 2 * (clip["layers"] * per_layer + w * clip["projection"]) * clip["tokens"]


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
    if model_cfg.get("image_size"):
        side = int(model_cfg["image_size"])
        return (side // factor) ** 2
    h, w = smart_resize(side_px, side_px, factor=factor,
                        min_pixels=int(model_cfg.get("min_pixels") or 56 * 56),
                        max_pixels=int(model_cfg.get("max_pixels") or 28 * 28 * 1280))
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
