"""Paper-scale cost model: the jobs of the DAG and the A6000 GPU-hours of each GPU stage.

    python -m skinground.cost [CONFIG.yaml ...] [--gpu-json bench/results/gpu.json] [--json]

CONFIG files are merged in order, as ``snakemake --configfile a.yaml b.yaml`` does (default:
``config.yaml``, the paper's run). Printed: (a) jobs per rule, computed from the config the
way the Snakefile builds its DAG (``tests/test_cost.py`` checks this against real Snakemake
dry runs); (b) the estimated GPU-hours per stage on A6000s.

The estimate counts model FLOPs from Qwen2-VL-7B's shape (:data:`QWEN2VL_7B`): a forward pass
costs 2 x (parameters a token passes through) per token — the vision blocks per 14 px patch
(4 per image token), the patch merger per image token, the decoder layers per sequence token,
the LM head where logits are computed — and training 3x that (the usual 6·N·tokens
convention, in which model-FLOP utilisation (MFU) is quoted; LoRA skips the frozen weights'
gradients, so the hardware does nearer 2x: the convention cancels as long as the MFU is
measured the same way, as ``bench/gpu_check.py`` does). Attention's sequence-squared term is
left out (< 1% at ~60 tokens). A pass takes at least ``FLOPs / (peak x MFU)`` and at least
the time to read the weights once (``bytes / (bandwidth x efficiency)``): batch-1 passes (the
naive embedding, every decoding step of generation) are bound by the latter.

Tokens per (image, question): the image tokens of the median SLICE-3D tile under the
processor's pixel budget (131 px -> 140 px, (140/28)^2 = 25; ``--tile-sigma`` > 0 averages
over a log-normal tile size clipped to 61-239 px instead), 16 template tokens before the
question (system turn, user header, vision markers), 17 for the question and the assistant
header, 6 for the answer ("12.34" digit by digit + ``<|im_end|>``).

With ``--gpu-json`` (default ``bench/results/gpu.json`` beside the config, when it exists and
is a full GPU run, not ``--tiny``) the MFU measured on the H200 by ``bench/gpu_check.sh`` —
training, prefix-shared and naive embedding — replaces the assumed one: the measured
throughput scaled by the ratio of peak rates (A6000 155 / H200 989 TFLOP/s bf16 dense).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

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

#: The Snakefile's embedding models and splits, and which model's spaces each retrieval
#: method searches (workflow/rules/embed.smk, retrieve.smk).
EMBED_SPLITS = ("train", "test")
METHOD_MODEL = {"image_text": "tuned", "hierarchical": "tuned", "image_only": "tuned",
                "image_untuned": "untuned", "monet": "monet"}
PREDICT_MODELS = ("tuned", "untuned")


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


#: Qwen2-VL-7B(-Instruct)'s config.json.
QWEN2VL_7B = QwenSpec(text_hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4,
                      vocab_size=152064, vision_depth=32, vision_embed=1280, vision_heads=16)

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


# --------------------------------------------------------------------------- config and DAG


def deep_merge(base: dict, over: Mapping) -> dict:
    """``over`` merged into a copy of ``base`` key by key (Snakemake's --configfile merge)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(paths: Sequence[str | Path]) -> dict:
    config: dict = {}
    for path in paths:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        config = deep_merge(config, loaded)
    return config


def method_spaces(method: str, attributes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(spaces searched with an index, spaces read from train/test embeddings) of a method."""
    if method == "image_text":
        return list(attributes), list(attributes)
    if method == "hierarchical":
        return ["im"], ["im", *attributes]
    return ["im"], ["im"]


def planned_jobs(config: Mapping[str, Any]) -> dict[str, int]:
    """Jobs per rule of a full run from nothing, as the Snakefile builds the DAG."""
    attributes = list(config["attributes"])
    shards = int(config["embed"]["shards"])
    methods = list(config["retrieve"]["methods"])
    jobs: dict[str, int] = {}
    if config.get("synthetic", {}).get("enabled"):
        jobs["synthetic_data"] = 1
    if config["model"].get("build_tiny"):
        jobs["build_models"] = 1
    jobs.update(manifest=1, split=1, tuples=1, train=1,
                predict_shard=len(PREDICT_MODELS) * int(config["predict"]["shards"]),
                merge_predictions=len(PREDICT_MODELS), r2=1)
    indexed: dict[str, set[str]] = {}
    train_spaces: dict[str, set[str]] = {}
    test_spaces: dict[str, set[str]] = {}
    for method in methods:
        model = METHOD_MODEL[method]
        searched, read = method_spaces(method, attributes)
        indexed.setdefault(model, set()).update(searched)
        train_spaces.setdefault(model, set()).update(read, searched)  # an index reads train
        test_spaces.setdefault(model, set()).update(read)
    jobs["embed_shard"] = len(indexed) * len(EMBED_SPLITS) * shards
    jobs["merge_embeddings"] = sum(len(train_spaces[m]) + len(test_spaces[m]) for m in indexed)
    jobs["build_index"] = sum(len(s) for s in indexed.values())
    jobs.update(retrieve=len(methods), evaluate=1, figures=1, all=1)
    return jobs


def gpus_per_job(profile: Mapping[str, Any] | None) -> dict[str, int]:
    """``gpu`` of each rule in the workflow profile's set-resources (absent: 0)."""
    resources = (profile or {}).get("set-resources") or {}
    return {rule: int((r or {}).get("gpu", 0)) for rule, r in resources.items()}


def runtime_limits(profile: Mapping[str, Any] | None) -> dict[str, float]:
    """``runtime`` (minutes) of each rule in the workflow profile's set-resources."""
    resources = (profile or {}).get("set-resources") or {}
    return {rule: float(r["runtime"]) for rule, r in resources.items()
            if isinstance(r, Mapping) and isinstance(r.get("runtime"), (int, float))}


# --------------------------------------------------------------------------- the estimate


@dataclass
class Assumptions:
    """Everything the estimate depends on (the CLI's options)."""

    train_images: int = PAPER_TRAIN_IMAGES
    test_images: int = PAPER_TEST_IMAGES
    tuples: int | None = None  # None: train_images x W (x attributes when W is "all")
    tile_median_px: float = TILE_MEDIAN_PX
    tile_sigma: float = 0.0
    prefix_text_tokens: int = 16
    suffix_tokens: int = 17
    answer_tokens: int = 6
    untuned_new_tokens: int | None = None  # None: predict.max_new_tokens
    gpus: int = 4
    peak_flops: float = A6000_PEAK
    bandwidth: float = A6000_BANDWIDTH
    fp32_peak_flops: float = A6000_FP32_PEAK
    train_mfu: float = 0.35
    infer_mfu: float = 0.35
    naive_mfu: float = 0.35
    bandwidth_efficiency: float = 0.7
    faiss_efficiency: float = 0.5
    reference_peak_flops: float = H200_PEAK
    measured: dict = field(default_factory=dict)


def _pass_seconds(flops: float, a: Assumptions, mfu: float, spec: QwenSpec) -> float:
    """One forward pass: compute-bound or weight-read-bound, whichever is slower."""
    return max(flops / (a.peak_flops * mfu), weight_bytes(spec) / (a.bandwidth *
                                                                   a.bandwidth_efficiency))


def apply_measurements(a: Assumptions, gpu: Mapping[str, Any] | None) -> Assumptions:
    """The MFUs measured by bench/gpu_check.py replace the assumed ones (same FLOP
    convention, so this is the measured throughput x A6000 peak / H200 peak). A ``--tiny``
    or CPU result, or a failed part, is not used."""
    if not gpu:
        return a
    why = None
    if gpu.get("tiny"):
        why = "gpu.json is a --tiny (CPU) run"
    elif not str(gpu.get("device", {}).get("type", "")).startswith("cuda"):
        why = "gpu.json was not measured on a GPU"
    if why:
        return replace(a, measured={"used": False, "why": why})
    used: dict[str, Any] = {"used": True, "gpu": gpu.get("device", {}).get("name")}
    train = gpu.get("train") or {}
    embed = gpu.get("embed") or {}
    new = {}
    if isinstance(train.get("mfu"), (int, float)) and train["mfu"] > 0:
        new["train_mfu"] = used["train_mfu"] = float(train["mfu"])
    mfu = embed.get("mfu") or {}
    if isinstance(mfu.get("prefix_shared"), (int, float)) and mfu["prefix_shared"] > 0:
        new["infer_mfu"] = used["infer_mfu"] = float(mfu["prefix_shared"])
    if isinstance(mfu.get("naive"), (int, float)) and mfu["naive"] > 0:
        new["naive_mfu"] = used["naive_mfu"] = float(mfu["naive"])
    peak = gpu.get("peak_tflops")
    if isinstance(peak, (int, float)) and peak > 0:
        new["reference_peak_flops"] = float(peak) * 1e12
    if len(used) == 2:
        used.update(used=False, why="gpu.json holds no successful measurement")
    return replace(a, measured=used, **new)


def estimate(config: Mapping[str, Any], a: Assumptions, *,
             gpus: Mapping[str, int] | None = None,
             runtimes: Mapping[str, float] | None = None, spec: QwenSpec = QWEN2VL_7B) -> dict:
    """Jobs per rule and GPU-hours per stage for ``config`` under assumptions ``a``;
    ``gpus``/``runtimes``: the profile's GPUs and runtime limit (minutes) per rule."""
    gpus = dict(gpus or {})
    runtimes = dict(runtimes or {})
    attributes = list(config["attributes"])
    n_attr = len(attributes)
    w = config["tuples"]["W"]
    tuples = a.tuples if a.tuples is not None else \
        a.train_images * (n_attr if w == "all" else int(w))
    epochs = float(config["train"]["epochs"])
    m = mean_image_tokens(config["model"], median_px=a.tile_median_px, sigma=a.tile_sigma,
                          spec=spec)
    prompt = a.prefix_text_tokens + m + a.suffix_tokens  # one (image, question) prompt
    prefix = a.prefix_text_tokens + m
    images = a.train_images + a.test_images
    jobs = planned_jobs(config)
    rows: list[dict] = []

    def row(stage, rule, n_jobs, flops, seconds_one_gpu, basis, *, gpus_per_job=1,
            in_dag=True, naive=None):
        """A stage; ``naive``: part of the naive layout's total (default: when in the DAG)."""
        gpu_hours = seconds_one_gpu / 3600
        parallel = max(1, min(a.gpus, n_jobs * gpus_per_job))
        per_job = gpu_hours / (n_jobs * max(1, gpus_per_job))  # equal shards
        limit = runtimes.get(rule)
        rows.append({"stage": stage, "rule": rule, "jobs": n_jobs, "gpus_per_job": gpus_per_job,
                     "pflop": flops / 1e15, "gpu_hours": gpu_hours,
                     "hours_on_gpus": gpu_hours / parallel, "hours_per_job": per_job,
                     "runtime_limit_hours": limit / 60 if limit else None,
                     "over_runtime_limit": bool(limit and per_job * 60 > limit),
                     "basis": basis, "in_dag": in_dag,
                     "in_naive": in_dag if naive is None else naive})

    # Training. per_tuple: one sequence per tuple, logits at every position (HF computes
    # them all). per_image: a batch of B consecutive tuples of the image-grouped order holds
    # (B + W - 1) / W images on average; each image's prefix runs once (logits at its last
    # token only), then every tuple's suffix + answer, logits at all its positions.
    t_tokens = prompt + a.answer_tokens
    s_tokens = a.suffix_tokens + a.answer_tokens
    f_per_tuple = 3 * forward_flops(spec, tokens=t_tokens, image_tokens=m, lm_tokens=t_tokens)
    per_batch = int(config["train"]["per_device_batch"])
    w_per_image = n_attr if w == "all" else int(w)
    images_per_batch = min(per_batch, (per_batch + w_per_image - 1) / w_per_image)
    f_per_image = 3 * (images_per_batch / per_batch
                       * forward_flops(spec, tokens=prefix, image_tokens=m, lm_tokens=1)
                       + forward_flops(spec, tokens=s_tokens, image_tokens=0,
                                       lm_tokens=s_tokens))
    layout = config["train"]["layout"]
    g_train = gpus.get("train", a.gpus) or a.gpus
    train_basis = "measured" if "train_mfu" in a.measured else "assumed"
    for name, f_tuple in (("per_image", f_per_image), ("per_tuple", f_per_tuple)):
        f_train = f_tuple * tuples * epochs
        row(f"train (LoRA, ZeRO-2, {name})", "train", jobs["train"], f_train,
            f_train / (a.peak_flops * a.train_mfu), f"{train_basis} MFU {a.train_mfu:.2f}",
            gpus_per_job=g_train, in_dag=name == layout, naive=name == "per_tuple")

    # Prediction (image-once, the DAG's): per batch of predict.batch_images images, one
    # prefill pass (the prefixes, then all images x questions suffixes) and one decoding
    # step per new token over all rows; sharded into predict.shards jobs per model.
    # The naive reference: one sequence per (image, question), as one generate() call per
    # batch of the same number of rows, each re-encoding its image.
    bi = int(config["predict"]["batch_images"])
    n_shards = int(config["predict"]["shards"])
    rows_per_batch = bi * n_attr
    batches = math.ceil(a.test_images / bi)
    new_tokens = {"tuned": a.answer_tokens,
                  "untuned": a.untuned_new_tokens or int(config["predict"]["max_new_tokens"])}
    f_step = forward_flops(spec, tokens=1, image_tokens=0, lm_tokens=1) * rows_per_batch
    f_prefill_once = bi * (forward_flops(spec, tokens=prefix, image_tokens=m)
                           + n_attr * forward_flops(spec, tokens=a.suffix_tokens,
                                                    image_tokens=0, lm_tokens=1))
    f_prefill_naive = rows_per_batch * forward_flops(spec, tokens=prompt, image_tokens=m,
                                                     lm_tokens=1)
    for model in PREDICT_MODELS:
        decode = new_tokens[model] * _pass_seconds(f_step, a, a.infer_mfu, spec)
        for name, f_prefill in (("image-once", f_prefill_once),
                                ("naive: 1 sequence per question", f_prefill_naive)):
            seconds = batches * (_pass_seconds(f_prefill, a, a.infer_mfu, spec) + decode)
            flops = batches * (f_prefill + new_tokens[model] * f_step)
            naive = name != "image-once"
            row(f"predict {model}, {name} ({new_tokens[model]} new tokens)",
                "-" if naive else "predict_shard", 1 if naive else n_shards, flops, seconds,
                "assumed MFU, decode bandwidth-bound", gpus_per_job=gpus.get("predict_shard", 1),
                in_dag=not naive, naive=naive)

    # Embeddings: per (model, split, shard) job; tuned = prefix + 16 questions.
    shards = int(config["embed"]["shards"])
    embed_jobs = len(EMBED_SPLITS) * shards
    bi = int(config["embed"]["batch_images"])
    f_prefix = forward_flops(spec, tokens=prefix, image_tokens=m)
    f_shared = f_prefix + n_attr * forward_flops(spec, tokens=a.suffix_tokens, image_tokens=0)
    infer_basis = "measured" if "infer_mfu" in a.measured else "assumed"
    # Two passes per batch of bi images (prefix, then the bi x 16 suffixes).
    s_shared = images / bi * (_pass_seconds(bi * f_prefix, a, a.infer_mfu, spec)
                              + _pass_seconds(bi * (f_shared - f_prefix), a, a.infer_mfu, spec))
    row("embed tuned, prefix-shared (h_im + 16 h_im,a)", "embed_shard", embed_jobs,
        images * f_shared, s_shared, f"{infer_basis} MFU {a.infer_mfu:.2f}",
        gpus_per_job=gpus.get("embed_shard", 1), naive=False)
    s_untuned = images / bi * _pass_seconds(bi * f_prefix, a, a.infer_mfu, spec)
    row("embed untuned (h_im)", "embed_shard", embed_jobs, images * f_prefix, s_untuned,
        f"{infer_basis} MFU {a.infer_mfu:.2f}", gpus_per_job=gpus.get("embed_shard", 1))
    f_clip = clip_flops_per_image()
    row("embed MONET (CLIP ViT-L/14)", "embed_shard", embed_jobs, images * f_clip,
        images * f_clip / (a.peak_flops * a.infer_mfu), f"{infer_basis} MFU {a.infer_mfu:.2f}",
        gpus_per_job=gpus.get("embed_shard", 1))
    # The naive reference: a prefix pass and one full pass per question, batch 1, each
    # encoding the image again.
    f_full = forward_flops(spec, tokens=prompt, image_tokens=m)
    s_naive = images * (_pass_seconds(f_prefix, a, a.naive_mfu, spec)
                        + n_attr * _pass_seconds(f_full, a, a.naive_mfu, spec))
    naive_basis = "measured" if "naive_mfu" in a.measured else "assumed"
    row("(embed tuned, naive: 1 + 16 passes/image)", "-", embed_jobs,
        images * (f_prefix + n_attr * f_full), s_naive,
        f"{naive_basis} MFU {a.naive_mfu:.2f}, batch 1", in_dag=False, naive=True)

    # FAISS on the GPU: adding is a copy; flat search = 2 x queries x database x d (fp32).
    d = spec.text_hidden
    row("build_index (FAISS flat)", "build_index", jobs["build_index"], 0.0,
        jobs["build_index"] * a.train_images * d * 4 / 12e9, "PCIe copy, 12 GB/s",
        gpus_per_job=gpus.get("build_index", 1))
    searches = 0.0
    for method in config["retrieve"]["methods"]:
        searched, _ = method_spaces(method, attributes)
        dim = CLIP_L14["projection"] if method == "monet" else d
        searches += len(searched) * 2 * a.test_images * a.train_images * dim
    row("retrieve (5 methods)", "retrieve", jobs["retrieve"], searches,
        searches / (a.fp32_peak_flops * a.faiss_efficiency),
        f"fp32 {a.fp32_peak_flops / 1e12:.1f} TFLOP/s x {a.faiss_efficiency}",
        gpus_per_job=gpus.get("retrieve", 1))

    in_dag = [r for r in rows if r["in_dag"]]
    in_naive = [r for r in rows if r["in_naive"]]
    shared = next(r for r in rows if r["stage"].startswith("embed tuned, prefix"))
    naive = next(r for r in rows if r["stage"].startswith("(embed tuned, naive"))
    total = {"gpu_hours": sum(r["gpu_hours"] for r in in_dag),
             "pflop": sum(r["pflop"] for r in in_dag)}
    naive_total = {"gpu_hours": sum(r["gpu_hours"] for r in in_naive),
                   "pflop": sum(r["pflop"] for r in in_naive),
                   "stages": [r["stage"] for r in in_naive]}
    return {
        "jobs": jobs,
        "total_jobs": sum(jobs.values()),
        "workload": {"train_images": a.train_images, "test_images": a.test_images,
                     "tuples": tuples, "epochs": epochs, "attributes": n_attr,
                     "image_tokens": m, "prompt_tokens": prompt,
                     "train_tokens_per_tuple": t_tokens,
                     "parameters": param_counts(spec)},
        "assumptions": {k: v for k, v in asdict(a).items() if k != "measured"},
        "measured": a.measured or {"used": False, "why": "no gpu.json"},
        "stages": rows,
        "total": total,
        "naive_total": naive_total,
        "dag_over_naive": total["gpu_hours"] / naive_total["gpu_hours"],
        "naive_over_prefix_shared": naive["gpu_hours"] / shared["gpu_hours"],
    }


# --------------------------------------------------------------------------- output


def format_table(result: Mapping[str, Any]) -> str:
    wl, a = result["workload"], result["assumptions"]
    jobs = result["jobs"]
    lines = ["Jobs per rule (a full run from nothing):", ""]
    lines += ["| rule | jobs |", "|---|---:|"]
    lines += [f"| {rule} | {n} |" for rule, n in jobs.items()]
    lines += [f"| **total** | **{result['total_jobs']}** |", ""]
    lines.append(
        f"GPU time on {a['gpus']}x A6000 ({a['peak_flops'] / 1e12:.0f} TFLOP/s bf16 dense, "
        f"{a['bandwidth'] / 1e9:.0f} GB/s): Qwen2-VL-7B "
        f"({wl['parameters']['total'] / 1e9:.2f} B parameters), {wl['tuples']:,} tuples x "
        f"{wl['epochs']:g} epoch, {wl['train_images']:,} + {wl['test_images']:,} images, "
        f"{wl['image_tokens']:.1f} image tokens/tile, {wl['prompt_tokens']:.0f}-token prompt "
        f"+ {a['answer_tokens']}-token answer.")
    measured = result["measured"]
    if measured.get("used"):
        lines.append(f"MFU measured on {measured.get('gpu')} (bench/results/gpu.json), "
                     "applied at A6000 peak.")
    else:
        lines.append(f"MFU assumed (no measurement used: {measured.get('why')}).")
    lines += ["", "| stage | rule | jobs | GPUs/job | PFLOP | GPU-hours | wall-clock h | h per job "
              "(limit) | basis |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["stages"]:
        per_job = f"{r['hours_per_job']:,.2f}"
        if r["runtime_limit_hours"]:
            per_job += f" ({r['runtime_limit_hours']:g})"
            per_job += " **over**" if r["over_runtime_limit"] else ""
        lines.append(f"| {r['stage']} | {r['rule']} | {r['jobs']} | {r['gpus_per_job']} | "
                     f"{r['pflop']:,.1f} | {r['gpu_hours']:,.2f} | {r['hours_on_gpus']:,.2f} | "
                     f"{per_job} | {r['basis']} |")
    total = result["total"]
    lines.append(f"| **total (DAG)** | | | | **{total['pflop']:,.1f}** | "
                 f"**{total['gpu_hours']:,.1f}** | **≥ {total['gpu_hours'] / a['gpus']:,.1f}** "
                 "| | |")
    naive = result["naive_total"]
    lines.append(f"| total, naive layout | | | | {naive['pflop']:,.1f} | "
                 f"{naive['gpu_hours']:,.1f} | ≥ {naive['gpu_hours'] / a['gpus']:,.1f} | | |")
    lines += ["", f"wall-clock h: the stage alone, its jobs spread over the {a['gpus']} GPUs "
              "(a job uses its GPUs/job); the total's is the bound with every GPU busy. h per job: "
              "one job's wall-clock time, (limit): its runtime in the workflow profile, hours.",
              "Rows with rule '-' or not the configured training layout are not in the DAG. "
              "The naive layout: one sequence per tuple in training (per_tuple), one sequence "
              "per (image, question) in prediction and embedding (the naive rows, plus "
              "untuned, MONET, index and retrieval as in the DAG).",
              f"The DAG takes {result['dag_over_naive']:.2f} of the naive layout's GPU-hours "
              f"({total['gpu_hours']:,.1f} vs {naive['gpu_hours']:,.1f}); naive embedding "
              f"alone would take {result['naive_over_prefix_shared']:.1f}x the prefix-shared "
              "GPU time."]
    return "\n".join(lines)


def arguments(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m skinground.cost",
                                description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", default=["config.yaml"],
                   help="config files, merged in order (default: config.yaml)")
    p.add_argument("--profile", type=Path, default=None,
                   help="workflow profile with per-rule GPUs (default: "
                        "profiles/default/config.yaml beside the first config)")
    p.add_argument("--gpu-json", type=Path, default=None,
                   help="bench/gpu_check.py's result (default: bench/results/gpu.json beside "
                        "the first config, when it exists)")
    p.add_argument("--no-gpu-json", action="store_true", help="ignore any measurement")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    d = Assumptions()
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--test-images", type=int, default=d.test_images)
    p.add_argument("--tuples", type=int, default=None,
                   help="training tuples (default: train images x tuples.W)")
    p.add_argument("--tile-px", type=float, default=d.tile_median_px,
                   help="median tile side (px)")
    p.add_argument("--tile-sigma", type=float, default=d.tile_sigma,
                   help="log-sd of the tile side; 0: every tile at the median")
    p.add_argument("--gpus", type=int, default=d.gpus, help="A6000s in the node")
    p.add_argument("--train-mfu", type=float, default=d.train_mfu)
    p.add_argument("--infer-mfu", type=float, default=d.infer_mfu)
    p.add_argument("--naive-mfu", type=float, default=d.naive_mfu)
    p.add_argument("--bandwidth-efficiency", type=float, default=d.bandwidth_efficiency)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = arguments(argv)
    root = Path(args.configs[0]).resolve().parent
    config = load_config(args.configs)
    profile_path = args.profile or root / "profiles" / "default" / "config.yaml"
    profile = (yaml.safe_load(profile_path.read_text(encoding="utf-8"))
               if profile_path.is_file() else None)
    a = Assumptions(train_images=args.train_images, test_images=args.test_images,
                    tuples=args.tuples, tile_median_px=args.tile_px,
                    tile_sigma=args.tile_sigma, gpus=args.gpus, train_mfu=args.train_mfu,
                    infer_mfu=args.infer_mfu, naive_mfu=args.naive_mfu,
                    bandwidth_efficiency=args.bandwidth_efficiency)
    gpu_path = args.gpu_json or root / "bench" / "results" / "gpu.json"
    if not args.no_gpu_json and gpu_path.is_file():
        try:
            gpu = json.loads(gpu_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            print(f"warning: {gpu_path} is not valid JSON ({err}); using the assumed MFU",
                  file=sys.stderr)
            gpu = None
        a = apply_measurements(a, gpu)
        if a.measured:
            a.measured["path"] = str(gpu_path)
    elif args.gpu_json and not args.no_gpu_json:
        print(f"warning: {gpu_path} not found; using the assumed MFU", file=sys.stderr)
    result = estimate(config, a, gpus=gpus_per_job(profile), runtimes=runtime_limits(profile))
    over = [r["stage"] for r in result["stages"] if r["in_dag"] and r["over_runtime_limit"]]
    if over and not args.json:
        print(f"warning: over the profile's runtime limit: {'; '.join(over)}", file=sys.stderr)
    result["configs"] = [str(c) for c in args.configs]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return result


if __name__ == "__main__":
    main()
