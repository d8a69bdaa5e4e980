"""Paper-scale cost model: the jobs of the DAG and the A6000 GPU-hours of each GPU stage.

    python -m skinground.cost [CONFIG.yaml ...] [--gpu-json GPU.json] [--json]

CONFIG files are merged in order, as ``snakemake --configfile a.yaml b.yaml`` does (default:
``config.yaml``, the paper's run). Printed: (a) jobs per rule, from ``skinground.core.plan`` (the
plan the Snakefile builds its DAG from; ``tests/test_cost.py`` checks it against real Snakemake
dry runs); (b) the estimated GPU-hours per stage on A6000s, beside the naive layout's (one
sequence per tuple in training, one per (image, question) in prediction and embedding).

The estimate counts model FLOPs from Qwen2-VL-7B's shape (``flops.QWEN2VL_7B``, counted as
``skinground.cost.flops`` does; LoRA skips the frozen weights' gradients, so the hardware does
nearer 2x than the convention's 3x: it cancels as long as the MFU is measured the same way,
as the GPU check does); attention's sequence-squared term is left out (< 1% at ~60
tokens). A pass takes at least ``FLOPs / (peak x MFU)`` and at least the time to read the
weights once (``bytes / (bandwidth x efficiency)``): batch-1 passes (the naive embedding, every
decoding step of generation) are bound by the latter.

Tokens per (image, question): the image tokens of the median SLICE-3D tile under the
processor's pixel budget (131 px -> 140 px, (140/28)^2 = 25; ``--tile-sigma`` > 0 averages
over a log-normal tile size clipped to 61-239 px instead), 16 template tokens before the
question (system turn, user header, vision markers), 17 for the question and the assistant
header, 6 for the answer ("12.34" digit by digit + ``<|im_end|>``).

With ``--gpu-json`` (default ``outputs.GPU_MEASUREMENT`` beside the config, when it exists and
is a full GPU run, not ``--tiny``) the MFU the GPU check measured on the H200 —
training, prefix-shared and naive embedding — replaces the assumed one: the measured
throughput scaled by the ratio of peak rates (A6000 155 / H200 989 TFLOP/s bf16 dense).

Each model job's time and GPU-hours also hold the loading of its weights at the assumed
``storage_bandwidth`` (``skinground.cost.runtime``, which also recommends each model rule's
runtime); the result carries the memory (``skinground.cost.memory``) and the disk
(``skinground.cost.disk``) of the run at the same image counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from skinground.core.config import gpus_per_job, load_profile, runtime_limits
from skinground.core.plan import (
    SPLITS,
    embedding_spaces,
    encoders,
    method_spaces,
    planned_jobs,
    predict_models,
)
from skinground.core.plan import method as plan_method
from skinground.cost import disk, memory, runtime
from skinground.cost.flops import (
    A6000_BANDWIDTH,
    A6000_FP32_PEAK,
    A6000_PEAK,
    H200_PEAK,
    PAPER_TEST_IMAGES,
    PAPER_TRAIN_IMAGES,
    QWEN2VL_7B,
    TILE_MEDIAN_PX,
    QwenSpec,
    encoder_flops_per_image,
    encoder_specs,
    forward_flops,
    mean_image_tokens,
    param_counts,
    weight_bytes,
)
from skinground.model.global_batch import train_batch

# --------------------------------------------------------------------------- the estimate


@dataclass
class Assumptions:
    """Everything the estimate depends on (the CLI's options)."""

    train_images: int = PAPER_TRAIN_IMAGES
    test_images: int = PAPER_TEST_IMAGES
    tuples: int | None = None  # None: train_images x W (x attributes when W is "all")
    tile_median_px: float = TILE_MEDIAN_PX
    tile_sigma: float = 0.0
    prefix_text_tokens: float = 16
    suffix_tokens: float = 17
    answer_tokens: float = 6
    tokens_measured: str | None = None  # the tokens.json the three counts above come from
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
    #: bytes/s a job reads its weights at (a shared filesystem, per job): assumed, not measured
    storage_bandwidth: float = 1e9
    measured: dict = field(default_factory=dict)


def _pass_seconds(flops: float, a: Assumptions, mfu: float, spec: QwenSpec) -> float:
    """One forward pass: compute-bound or weight-read-bound, whichever is slower."""
    return max(flops / (a.peak_flops * mfu), weight_bytes(spec) / (a.bandwidth *
                                                                   a.bandwidth_efficiency))


def estimate(config: Mapping[str, Any], a: Assumptions, *,
             gpus: Mapping[str, int] | None = None,
             runtimes: Mapping[str, float] | None = None, spec: QwenSpec = QWEN2VL_7B,
             profile: Mapping[str, Any] | None = None,
             site: Mapping[str, Any] | None = None) -> dict:
    """Jobs per rule, GPU-hours per stage and peak memory per rule (``skinground.cost.memory``)
    for ``config`` under assumptions ``a``; ``gpus``/``runtimes``: the profile's GPUs and
    runtime limit (minutes) per rule; ``profile``/``site``: the workflow and site profiles,
    for each rule's mem_mb."""
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
            in_dag=True, naive=None, model=None, load_jobs=None):
        """A stage; ``naive``: part of the naive layout's total (default: when in the DAG);
        ``model``: the weights each of its ``load_jobs`` (default: its jobs) reads first, its
        GPUs held (``runtime``)."""
        load_s = runtime.load_seconds(runtime.model_bytes(config, model, spec),
                                      a.storage_bandwidth) if model else 0.0
        load_jobs = n_jobs if load_jobs is None else load_jobs
        compute_hours = seconds_one_gpu / 3600
        gpu_hours = compute_hours + load_jobs * load_s * max(1, gpus_per_job) / 3600
        parallel = max(1, min(a.gpus, n_jobs * gpus_per_job))
        per_job = gpu_hours / (n_jobs * max(1, gpus_per_job))  # equal shards
        limit = runtimes.get(rule)
        rows.append({"stage": stage, "rule": rule, "jobs": n_jobs, "gpus_per_job": gpus_per_job,
                     "pflop": flops / 1e15, "gpu_hours": gpu_hours,
                     "compute_gpu_hours": compute_hours, "load_seconds_per_job": load_s,
                     "load_jobs": load_jobs if model else 0,
                     "load_model": runtime.model_title(config, model) if model else None,
                     "load_gb": runtime.model_bytes(config, model, spec) / 1e9 if model else 0.0,
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
    g_train = gpus.get("train", a.gpus) or a.gpus
    per_batch = train_batch(int(config["train"]["global_batch"]),
                            int(config["train"]["per_device_batch"]), g_train)[0]
    w_per_image = n_attr if w == "all" else int(w)
    images_per_batch = min(per_batch, (per_batch + w_per_image - 1) / w_per_image)
    f_per_image = 3 * (images_per_batch / per_batch
                       * forward_flops(spec, tokens=prefix, image_tokens=m, lm_tokens=1)
                       + forward_flops(spec, tokens=s_tokens, image_tokens=0,
                                       lm_tokens=s_tokens))
    layout = config["train"]["layout"]
    train_basis = "measured" if "train_mfu" in a.measured else "assumed"
    for name, f_tuple in (("per_image", f_per_image), ("per_tuple", f_per_tuple)):
        f_train = f_tuple * tuples * epochs
        row(f"train (LoRA, ZeRO-2, {name})", "train", jobs["train"], f_train,
            f_train / (a.peak_flops * a.train_mfu), f"{train_basis} MFU {a.train_mfu:.2f}",
            gpus_per_job=g_train, in_dag=name == layout, naive=name == "per_tuple",
            model="untuned")  # the base model's weights; the adapter is made here

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
    for model in predict_models(config):
        decode = new_tokens[model] * _pass_seconds(f_step, a, a.infer_mfu, spec)
        for name, f_prefill in (("image-once", f_prefill_once),
                                ("naive: 1 sequence per question", f_prefill_naive)):
            seconds = batches * (_pass_seconds(f_prefill, a, a.infer_mfu, spec) + decode)
            flops = batches * (f_prefill + new_tokens[model] * f_step)
            naive = name != "image-once"
            row(f"predict {model}, {name} ({new_tokens[model]:.3g} new tokens)",
                "-" if naive else "predict_shard", 1 if naive else n_shards, flops, seconds,
                "assumed MFU, decode bandwidth-bound", gpus_per_job=gpus.get("predict_shard", 1),
                in_dag=not naive, naive=naive, model=model, load_jobs=n_shards)

    # Embeddings: per (model, split, shard) job; tuned = prefix + 16 questions.
    shards = int(config["embed"]["shards"])
    embed_jobs = len(SPLITS) * shards
    bi = int(config["embed"]["batch_images"])
    f_prefix = forward_flops(spec, tokens=prefix, image_tokens=m)
    f_shared = f_prefix + n_attr * forward_flops(spec, tokens=a.suffix_tokens, image_tokens=0)
    infer_basis = "measured" if "infer_mfu" in a.measured else "assumed"
    # Two passes per batch of bi images (prefix, then the bi x 16 suffixes).
    s_shared = images / bi * (_pass_seconds(bi * f_prefix, a, a.infer_mfu, spec)
                              + _pass_seconds(bi * (f_shared - f_prefix), a, a.infer_mfu, spec))
    row("embed tuned, prefix-shared (h_im + 16 h_im,a)", "embed_shard", embed_jobs,
        images * f_shared, s_shared, f"{infer_basis} MFU {a.infer_mfu:.2f}",
        gpus_per_job=gpus.get("embed_shard", 1), naive=False, model="tuned")
    s_untuned = images / bi * _pass_seconds(bi * f_prefix, a, a.infer_mfu, spec)
    row("embed untuned (h_im)", "embed_shard", embed_jobs, images * f_prefix, s_untuned,
        f"{infer_basis} MFU {a.infer_mfu:.2f}", gpus_per_job=gpus.get("embed_shard", 1),
        model="untuned")
    # The image encoders (method e) whose embeddings the DAG extracts, in config order.
    specs = encoder_specs(config["model"])
    embedded = embedding_spaces(config)
    for name, spec_e in specs.items():
        if name not in embedded:
            continue
        f_enc = encoder_flops_per_image(spec_e)
        row(f"embed {encoders(config)[name]['title']} ({spec_e.name})", "embed_shard",
            embed_jobs, images * f_enc, images * f_enc / (a.peak_flops * a.infer_mfu),
            f"{infer_basis} MFU {a.infer_mfu:.2f}", gpus_per_job=gpus.get("embed_shard", 1),
            model=name)
    # The naive reference: a prefix pass and one full pass per question, batch 1, each
    # encoding the image again.
    f_full = forward_flops(spec, tokens=prompt, image_tokens=m)
    s_naive = images * (_pass_seconds(f_prefix, a, a.naive_mfu, spec)
                        + n_attr * _pass_seconds(f_full, a, a.naive_mfu, spec))
    naive_basis = "measured" if "naive_mfu" in a.measured else "assumed"
    row("(embed tuned, naive: 1 + 16 passes/image)", "-", embed_jobs,
        images * (f_prefix + n_attr * f_full), s_naive,
        f"{naive_basis} MFU {a.naive_mfu:.2f}, batch 1", in_dag=False, naive=True,
        model="tuned")

    # The composed group questions (retrieve.groups): h_im once more plus one suffix per group,
    # in embed_groups jobs (absent when no group method reads them). A group question's
    # tokens are estimated from its length relative to the attribute questions'.
    if jobs.get("embed_groups"):
        questions = [spec_a["question"] for spec_a in config["attributes"].values()]
        per_char = a.suffix_tokens / (sum(map(len, questions)) / len(questions))
        g_tokens = [max(1, round(len(g["question"]) * per_char))
                    for g in config["retrieve"]["groups"].values()]
        f_groups = f_prefix + sum(forward_flops(spec, tokens=t, image_tokens=0)
                                  for t in g_tokens)
        s_groups = images / bi * (_pass_seconds(bi * f_prefix, a, a.infer_mfu, spec)
                                  + _pass_seconds(bi * (f_groups - f_prefix), a, a.infer_mfu,
                                                  spec))
        row(f"embed groups, prefix-shared (h_im + {len(g_tokens)} h_im,G)", "embed_groups",
            jobs["embed_groups"], images * f_groups, s_groups,
            f"{infer_basis} MFU {a.infer_mfu:.2f}", gpus_per_job=gpus.get("embed_groups", 1),
            naive=False, model="tuned")
        f_gfull = [forward_flops(spec, tokens=prefix + t, image_tokens=m) for t in g_tokens]
        row(f"(embed groups, naive: {len(g_tokens)} passes/image)", "-", jobs["embed_groups"],
            images * sum(f_gfull),
            images * sum(_pass_seconds(f, a, a.naive_mfu, spec) for f in f_gfull),
            f"{naive_basis} MFU {a.naive_mfu:.2f}, batch 1", in_dag=False, naive=True,
            model="tuned")

    # FAISS on the GPU: flat search = 2 x queries x database x d (fp32). build_index is a
    # CPU job (normalise and copy: no GPU time).
    d = spec.text_hidden
    searches = 0.0
    for method in config["retrieve"]["methods"]:
        searched, _ = method_spaces(method, attributes, config)
        model = plan_method(method, config).model
        dim = specs[model].embedding if model in specs else d
        searches += len(searched) * 2 * a.test_images * a.train_images * dim
    n_methods = len(config["retrieve"]["methods"])
    row(f"retrieve ({n_methods} methods)", "retrieve", jobs["retrieve"], searches,
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
        "memory": memory.table(config, profile, site, memory.Workload.from_config(
            config, train_images=a.train_images, test_images=a.test_images)),
        "disk": disk.table(config, a.train_images, a.test_images, spec),
        "loading": {"storage_bandwidth": a.storage_bandwidth,
                    "models": runtime.loading_summary(rows)},
        "runtimes": runtime.recommendations(rows, runtimes),
        "workload": {"train_images": a.train_images, "test_images": a.test_images,
                     "tuples": tuples, "epochs": epochs, "attributes": n_attr,
                     "image_tokens": m, "prompt_tokens": prompt, "layout": layout,
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


def estimate_with_profiles(config: Mapping[str, Any], a: Assumptions, profile_path,
                           site_path) -> dict:
    """:func:`estimate` with the workflow profile's GPUs, runtimes and memory and the site
    profile's default memory (paths; a missing file counts as no profile)."""
    profile, site = load_profile(profile_path), load_profile(site_path)
    return estimate(config, a, gpus=gpus_per_job(profile), runtimes=runtime_limits(profile),
                    profile=profile, site=site)
