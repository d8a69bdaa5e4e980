"""Peak memory of every rule's job, host and GPU, as formulas of the workload: the memory
model beside the cost model (``python -m skinground.cost`` prints both).

A job's host peak is ``base`` (the Python process with its imports) plus the terms of what it
holds at its worst moment; its GPU peak (GPU rules only) likewise. Notation: N train and Q
test images, d the embedding width (3,584 for Qwen2-VL-7B; an encoder's own: 768 for MONET,
1,152 for MedSigLIP), A attributes,
k and b of ``retrieve``, S embedding shards, float16 stored vectors (2 bytes), float32 in
memory (4 bytes).

Where the terms come from:

- the retrieval half (merge, index, retrieve, evaluate, figures): the code's own buffers,
  derived from it (``skinground.retrieval.spaces``, ``index``, ``retrieve``), and per-row constants
  for the tables; all checked against measured peaks at three sizes up to 100k train images
  at d = 3,584 by the scale benchmark (docs/cost-and-scale.md: measured / model);
- the data half (manifest, split, tuples): per-row constants measured by the scale
  benchmark at three sizes up to SLICE-3D's 401,059 rows, and checked there;
- the model rules (train, predict, embed): the 7B's weights in bf16 (``flops.param_counts``)
  plus activations and caches from its shape. Their host side is measured by
  the model-rule benchmark (the real embed and predict rules on models of 22-282 M
  parameters, fp32 on CPU: the weights' share grows as ``WEIGHT_COPIES`` x their bytes); the
  GPU side is not measured here (no GPU): the GPU check is where a GPU session can.

:func:`table` evaluates every rule at a workload (default: the paper's) beside the profile's
``mem_mb`` and the A6000's 48 GB; ``tests/test_memory.py`` fails when a profile value is
below the model plus ``MARGIN``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skinground.core.plan import FIG3_METHODS, probed_models, retrieval_jobs
from skinground.core.plan import group_method as plan_group_method
from skinground.core.plan import method as plan_method
from skinground.cost.flops import QWEN2VL_7B, QwenSpec, encoder_specs, param_counts
from skinground.model.global_batch import train_batch

MiB = 2**20
GiB = 2**30
#: The GPU the profile places GPU rules on (A6000: 48 GB).
GPU_BYTES = 48e9
#: A profile's mem_mb must exceed the model's host peak by this share.
MARGIN = 0.25
#: The paper's split (and the tuples, train images x W).
PAPER_TRAIN, PAPER_TEST = 282_564, 118_495

# The Python process of a job, with its imports (measured on the demo's and the scale
# benchmark's jobs: numpy, polars, faiss ~60-120 MiB; with matplotlib/seaborn ~240 MiB; torch +
# transformers ~700 MiB).
BASE_TABLE = 110 * MiB
BASE_PLOT = 250 * MiB
BASE_TORCH = 900 * MiB

# Buffers of the retrieval code (skinground.retrieval.index / retrieve): byte budgets of one block.
CHUNK_BYTES = 256 * MiB                # index.CHUNK_BYTES and index.QUERY_BLOCK_BYTES
TEMPS = 3.5                            # a block normalised: stored rows, float32 copy, result
BATCH_ELEMENTS = 1 << 26               # retrieve.BATCH_ELEMENTS
FUSED_BLOCK_BYTES = 512 * MiB          # retrieve.FUSED_BLOCK_BYTES
FAISS_GPU_TEMP = 1.5 * GiB             # faiss-gpu's default scratch memory
ID_BYTES = 120                         # one isic_id held as a Python str (+ list slot)

# Per-row constants of the table rules, bytes: the slopes the scale benchmark measured
# (rounded up), the data rules at 100k-401k images, the evaluation at 25k-100k train images
# (its result holds the peaks they are checked against).
MANIFEST_ROW = 1400        # the CSV's 55 columns parsed, validated and joined with the images
SPLIT_ROW = 500
TUPLES_ROW = 2400          # per train image: W tuples of question/answer text
EVALUATE_ROW = 470         # per (query, rank, attribute, method) row of the percentile table
GROUP_EVALUATE_ROW = 950   # per (query, rank, group, method) row: every member's percentile
FIGURES_ROW = 190          # the table's three columns Figs. 4 and 5 read, and their box stats
PREDICTION_ROW = 250       # per (image, attribute) answer (not measured: small at any scale)
PROBE_BLOCK_ROWS = 8192    # probe.BLOCK_ROWS


@dataclass(frozen=True)
class Workload:
    """What the memory of the jobs depends on."""

    train_images: int = PAPER_TRAIN
    test_images: int = PAPER_TEST
    width: int = QWEN2VL_7B.text_hidden
    #: each image encoder's embedding width (method e: the encoder's name -> d)
    encoder_widths: Mapping[str, int] = field(default_factory=dict)
    attributes: int = 16
    group_sizes: tuple[int, ...] = ()
    k: int = 5
    b: int = 200
    embed_shards: int = 64
    embed_batch: int = 8
    predict_batch: int = 16
    methods: tuple[str, ...] = ()
    group_methods: tuple[str, ...] = ()
    W: int = 5
    #: tuples per training process and forward pass on ``train_gpus`` GPUs (batch.train_batch)
    per_device_batch: int = 4
    train_gpus: int = 4
    #: the probe's cross-validation folds and the models it probes (their image spaces)
    probe_folds: int = 5
    probed: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return self.train_images + self.test_images

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **sizes) -> Workload:
        """The workload of ``config`` (the paper's image counts unless ``sizes`` say)."""
        attrs = list(config["attributes"])
        w = config["tuples"]["W"]
        groups = config["retrieve"]["groups"]
        return cls(attributes=len(attrs),
                   group_sizes=tuple(len(g["attributes"]) for g in groups.values()),
                   k=int(config["retrieve"]["k"]), b=int(config["retrieve"]["b"]),
                   embed_shards=int(config["embed"]["shards"]),
                   embed_batch=int(config["embed"]["batch_images"]),
                   predict_batch=int(config["predict"]["batch_images"]),
                   methods=tuple(config["retrieve"]["methods"]),
                   group_methods=tuple(retrieval_jobs(config)),
                   W=len(attrs) if w == "all" else int(w),
                   per_device_batch=train_batch(int(config["train"]["global_batch"]),
                                                int(config["train"]["per_device_batch"]),
                                                sizes.get("train_gpus", cls.train_gpus))[0],
                   probe_folds=int(config["probe"]["folds"]),
                   probed=tuple(probed_models(config)),
                   encoder_widths={name: spec.embedding for name, spec
                                   in encoder_specs(config["model"]).items()}, **sizes)

    @classmethod
    def paper(cls, config: Mapping[str, Any]) -> Workload:
        return cls.from_config(config)


@dataclass(frozen=True)
class Peak:
    """A job's peak: host and GPU bytes, and the terms they add up from."""

    host: float
    gpu: float = 0.0
    terms: str = ""


def _weights(spec: QwenSpec = QWEN2VL_7B) -> float:
    return param_counts(spec)["total"] * 2  # bf16


def _kv_bytes_per_token(spec: QwenSpec = QWEN2VL_7B) -> float:
    head_dim = spec.text_hidden // spec.heads
    return spec.layers * 2 * spec.kv_heads * head_dim * 2


def _block(total: float, budget: float = CHUNK_BYTES) -> float:
    """A block of ``budget`` bytes, or all of it when smaller."""
    return min(total, budget)


def _search(n: float, d: int, w: Workload) -> float:
    """One exact search: the index, a query block with its temporaries, the hits."""
    return n * d * 4 + TEMPS * _block(w.test_images * d * 4) + w.test_images * w.k * 12


def _rerank(w: Workload, d: int) -> float:
    """The re-rank after the first stage: the candidates (int64), one batch's unique
    candidate rows (float16 read, then float32) and their products with the batch's queries,
    and the batch's [queries, b] scores and orders."""
    b = min(w.b, w.train_images)
    batch = min(w.test_images, max(1, BATCH_ELEMENTS // (b * d)))
    unique = min(w.train_images, batch * b)
    return (w.test_images * b * 8 + unique * d * 6 + unique * batch * 4
            + 4 * batch * b * 8)


def _fused(w: Workload, d: int) -> float:
    """Two blocks of fused vectors (|G| d wide): the database block (its parts, the
    concatenation, the index's normalised copy: ~5x) and a query block (~4x)."""
    width = max(w.group_sizes or (2,)) * d * 4
    rows = max(1, FUSED_BLOCK_BYTES // width)
    return (5 * min(w.train_images, rows) + 4 * min(w.test_images, rows)) * width


def _ids(w: Workload) -> float:
    return (w.train_images + w.test_images) * ID_BYTES


def retrieve_peak(search: str, w: Workload, *, width: int | None = None) -> Peak:
    """One retrieval job (``plan.Method.search`` / ``plan.GroupMethod.search``) over spaces of
    ``width`` (default: the Qwen2-VL width)."""
    n, d = w.train_images, (width or w.width)
    first = _search(n, d, w)
    gpu = n * d * 4 + _block(w.test_images * d * 4) + FAISS_GPU_TEMP
    base = BASE_TABLE + _ids(w)
    if search in ("image", "attribute", "composed"):
        return Peak(base + first, gpu, "N d 4 (one index) + a query block + the hits")
    if search in ("hierarchical", "composed_hierarchical"):
        return Peak(base + max(first, _rerank(w, d)), gpu,
                    "max(first stage: N d 4 + a query block; Q b 8 + a re-rank batch)")
    if search == "fused":
        return Peak(base + _fused(w, d), _fused(w, d) / 2 + FAISS_GPU_TEMP,
                    "a fused database block and a query block")
    if search == "rrf":
        g = max(w.group_sizes or (2,))
        return Peak(base + first + g * w.test_images * min(w.b, n) * 8, gpu,
                    "N d 4 (one index) + the group's top-b lists (G Q b 8)")
    raise ValueError(f"unknown search {search!r}")


def probe_peak(w: Workload, d: int) -> Peak:
    """The ridge probe of one space of width ``d`` (skinground.evaluation.probe): the train and test
    spaces in float16, the Gram matrix of each fold and the eigendecomposition's (F + 4 of
    d x d float64), X^T of the fold masks and targets' (N x 2A(F + 1) float64, built
    once), two float64 blocks."""
    n, a, f = w.train_images, w.attributes, w.probe_folds
    return Peak(BASE_TABLE + w.images * d * 2 + (f + 4) * d * d * 8
                + n * 2 * a * (f + 1) * 8 * 2 + 2 * PROBE_BLOCK_ROWS * d * 8,
                terms="(N + Q) d 2 + (F + 4) d² 8 + 2 N 2A(F + 1) 8 + two blocks")


def evaluation_rows(w: Workload) -> float:
    return w.test_images * w.k * w.attributes * max(1, len(w.methods))


def group_rows(w: Workload) -> float:
    methods = len(w.group_methods) + 2  # + image-only (c) and random
    return w.test_images * w.k * len(w.group_sizes) * methods


#: Host bytes per weight byte while a model job runs: the safetensors file's pages, mapped as
#: the weights are read, and the model's own tensors (the model-rule benchmark measured 1.97x for
#: generation, which touches every weight, at three model sizes; 0.85x for embedding, which
#: never reads the LM head).
WEIGHT_COPIES = 2.0


def model_job_host(spec: QwenSpec, param_bytes: float, *, rows: float = 0, spaces: int = 0,
                   width: int | None = None) -> float:
    """A model rule's host peak: the process with torch and transformers, the weights
    (``param_bytes`` each: bf16 on a GPU node, fp32 on CPU) ``WEIGHT_COPIES`` times, and the
    shard's ``spaces`` float16 outputs of ``rows`` images (twice: gathered, then written)."""
    width = width or spec.text_hidden
    return (BASE_TORCH + WEIGHT_COPIES * param_counts(spec)["total"] * param_bytes
            + rows * spaces * width * 4)


def rule_peaks(w: Workload, spec: QwenSpec = QWEN2VL_7B) -> dict[str, Peak]:
    """Every rule's (per-method for the retrieval rules) peak at workload ``w``."""
    weights = _weights(spec)
    kv = _kv_bytes_per_token(spec)
    rows = w.images
    shard_rows = w.images / max(1, w.embed_shards)
    tuned_spaces = 1 + w.attributes
    peaks = {
        "manifest": Peak(BASE_TABLE + rows * MANIFEST_ROW, terms="rows x MANIFEST_ROW"),
        "split": Peak(BASE_TABLE + rows * SPLIT_ROW, terms="rows x SPLIT_ROW"),
        "tuples": Peak(BASE_TABLE + w.train_images * TUPLES_ROW,
                       terms="train images x TUPLES_ROW"),
        "run_config": Peak(BASE_TABLE),
        "versions": Peak(BASE_TABLE),
        "cost": Peak(BASE_TABLE),
        # Each rank loads the bf16 weights on the host before moving them to its GPU; on
        # the GPU: weights, LoRA states (fp32 + Adam), a batch's activations and logits.
        "train": Peak(w.train_gpus * model_job_host(spec, 2),
                      weights + 4 * GiB + w.per_device_batch * 80 * (
                          spec.layers * spec.text_hidden * 34 + spec.vocab_size * 8),
                      "per rank: the bf16 weights, twice (host), then on the GPU + activations"),
        "predict_shard": Peak(model_job_host(spec, 2),
                              weights + w.predict_batch * w.attributes * 64 * kv
                              + w.predict_batch * w.attributes * spec.vocab_size * 4,
                              "bf16 weights, twice (host); on the GPU + the batch's KV cache"),
        "merge_predictions": Peak(BASE_TABLE + w.test_images * w.attributes * PREDICTION_ROW),
        "r2": Peak(BASE_TABLE + w.test_images * w.attributes * PREDICTION_ROW),
        "r2_untuned": Peak(BASE_TABLE + 2 * w.test_images * w.attributes * PREDICTION_ROW),
        "embed_shard": Peak(model_job_host(spec, 2, rows=shard_rows, spaces=tuned_spaces),
                            weights + w.embed_batch * w.attributes * 64 * kv,
                            "bf16 weights, twice + the shard's spaces (host)"),
        "embed_groups": Peak(model_job_host(spec, 2, rows=shard_rows,
                                            spaces=len(w.group_sizes)),
                             weights + w.embed_batch * len(w.group_sizes) * 64 * kv,
                             "bf16 weights, twice + the shard's group spaces (host)"),
        "merge_embeddings": Peak(BASE_TABLE + w.train_images * ID_BYTES
                                 + 2 * (w.train_images / w.embed_shards) * w.width * 2,
                                 terms="ids + one shard's member, twice"),
        # FAISS grows a flat index's storage as it adds chunks: the old and the new buffer
        # are both held at a growth (2772 MiB measured for a 1367 MiB index at 100k).
        "build_index": Peak(BASE_TABLE + 2 * w.train_images * w.width * 4
                            + TEMPS * _block(w.train_images * w.width * 4),
                            terms="2 N d 4 (the index, while its storage grows) + one chunk"),
        "evaluate": Peak(BASE_TABLE + evaluation_rows(w) * EVALUATE_ROW,
                         terms="Q k A methods x EVALUATE_ROW"),
        "figures": Peak(BASE_PLOT + evaluation_rows(w) * FIGURES_ROW,
                        terms="Q k A methods x FIGURES_ROW"),
        "evaluate_groups": Peak(BASE_TABLE + group_rows(w) * GROUP_EVALUATE_ROW,
                                terms="Q k groups methods x GROUP_EVALUATE_ROW"),
        "figure_groups": Peak(BASE_PLOT + group_rows(w) * FIGURES_ROW,
                              terms="Q k groups methods x FIGURES_ROW"),
        # not measured: the label columns beside the ids, and the hits joined with them
        "labels": Peak(BASE_TABLE + rows * SPLIT_ROW, terms="rows x SPLIT_ROW"),
        "diagnosis": Peak(BASE_TABLE + evaluation_rows(w) * EVALUATE_ROW,
                          terms="Q k A methods x EVALUATE_ROW (the hits, joined)"),
        "probe_r2": Peak(BASE_PLOT),
        # not measured: Fig. 3's attribute of its two methods (the far-off rows, then the
        # hits Fig. 3 draws its queries from) and the manifest
        "verdict": Peak(BASE_TABLE + rows * SPLIT_ROW
                        + 2 * w.test_images * w.k * len(FIG3_METHODS) * EVALUATE_ROW,
                        terms="rows x SPLIT_ROW + 2 Q k x 2 methods x EVALUATE_ROW"),
    }
    for name in w.probed:
        peaks[f"probe:{name}"] = probe_peak(w, w.encoder_widths.get(name, w.width))
    for name in w.methods:
        if name in w.encoder_widths:  # an encoder's method ((e), (e2), ...): its space
            peaks[f"retrieve:{name}"] = retrieve_peak("image", w, width=w.encoder_widths[name])
        else:
            peaks[f"retrieve:{name}"] = retrieve_peak(plan_method(name).search, w)
    for name in w.group_methods:
        peaks[f"retrieve_groups:{name}"] = retrieve_peak(plan_group_method(name).search, w)
    return peaks


def profile_mem_mb(profile: Mapping[str, Any] | None, site: Mapping[str, Any] | None,
                   rule: str) -> float | None:
    """The mem_mb a rule's jobs get: the workflow profile's set-resources, else the site
    profile's default-resources."""
    for source, key in ((profile, "set-resources"), (site, "default-resources")):
        resources = (source or {}).get(key) or {}
        entry = resources.get(rule) if key == "set-resources" else resources
        if isinstance(entry, Mapping) and "mem_mb" in entry:
            return float(entry["mem_mb"])
    return None


def table(config: Mapping[str, Any], profile: Mapping[str, Any] | None,
          site: Mapping[str, Any] | None, w: Workload | None = None,
          rules: Sequence[str] | None = None) -> list[dict]:
    """Per rule (retrieval rules per method): the host and GPU peak at ``w`` (default: the
    paper's), the profile's mem_mb, and whether each fits (host: mem_mb >= peak x (1 +
    MARGIN); GPU: <= 48 GB). ``rules``: only these (default: every rule of the model)."""
    w = w or Workload.paper(config)
    gpus = ((profile or {}).get("set-resources") or {})
    out = []
    for key, peak in rule_peaks(w).items():
        rule = key.split(":")[0]
        if rules is not None and rule not in rules:
            continue
        mem_mb = profile_mem_mb(profile, site, rule)
        on_gpu = bool((gpus.get(rule) or {}).get("gpu"))
        out.append({
            "rule": key, "host_gb": peak.host / 1e9, "gpu_gb": peak.gpu / 1e9 if on_gpu else None,
            "mem_mb": mem_mb, "terms": peak.terms,
            "host_fits": mem_mb is not None and mem_mb * 1e6 >= peak.host * (1 + MARGIN),
            "gpu_fits": (not on_gpu) or peak.gpu <= GPU_BYTES,
        })
    return out
