"""The disk of a run: every output under ``results/<run>/`` by its results-tree template
(``skinground.core.outputs``), its files and bytes at a workload, and the run's total; the
disk model beside the memory model (``python -m skinground.cost`` prints both).

Notation as in ``skinground.cost.memory``: N train and Q test images, d an embedding's width
(3,584 for Qwen2-VL-7B, an encoder's own: ``flops.encoder_specs``), A attributes, G groups, k
hits per query. The arrays are exact: a space or shard stores float16 vectors (2 bytes) and
its ids as numpy strings (``<U12``, 48 bytes an image); a FAISS IndexFlatIP stores float32
(4 bytes). The tables are parquet, their rows' bytes measured on tables of the code's schemas
filled with random ids and values at the paper's sizes (polars' default zstd): they are small
beside the arrays. The adapter and each checkpoint hold the LoRA parameters
(``flops.lora_parameters``): the adapter in float32, a checkpoint the adapter again, the
DeepSpeed module's copy in the training precision and ZeRO-2's optimizer states (float32
master weights, Adam's two moments: 12 bytes a parameter, over all ranks), with the
tokenizer's files; ``train.save_total_limit`` of them are kept. Figures, the small tables,
logs and benchmarks are left out (a few MB).

Nothing is ``temp()``: the total is also the run's peak (+ one file while it is written under
a temporary name). Why the shards are kept: docs/cost-and-scale.md (Disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skinground.core import outputs
from skinground.core.plan import (
    SPLITS,
    embedding_spaces,
    group_shards,
    indexed_spaces,
    predict_models,
    retrieval_jobs,
)
from skinground.core.plan import method as plan_method
from skinground.cost.flops import QWEN2VL_7B, QwenSpec, encoder_specs, lora_parameters

#: Bytes of one image's id in a space or shard (numpy ``<U12``: ISIC_0000000).
NPZ_ID = 48
#: Bytes of one line of split/<split>.txt (ISIC_0000000 and a newline).
ID_LINE = 13
#: Parquet bytes per row (measured: random tables of each schema at the paper's sizes, polars'
#: zstd; rounded up): the manifest's ids and target, + 8 per attribute (float64 as stored).
MANIFEST_ROW = 32
MANIFEST_ATTRIBUTE = 8
LABELS_ROW = 16
TUPLE_ROW = 4            # 3.9 measured: isic_id, attribute, question, answer
PREDICTION_ROW = 8       # 3.6 measured for the tuned model's short answers; longer untuned ones
HIT_ROW = 10             # 9.1 measured: method, attribute, query_id, rank, retrieved_id, score
PERCENTILE_ROW = 28      # 25.9 measured: a hit + the two values, its percentile
GROUP_PERCENTILE_ROW = 22  # 21.1 measured
#: The tokenizer and processor files every checkpoint holds (Qwen2-VL's: ~12 MB).
TOKENIZER_FILES = 12e6
#: Bytes a trainable parameter takes in a ZeRO-2 checkpoint, beside the adapter's 4: the
#: optimizer's float32 master copy and two Adam moments.
OPTIMIZER_STATE = 12
PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def _widths(config: Mapping[str, Any], spec: QwenSpec) -> dict[str, int]:
    """d of every embedded model: Qwen2-VL's hidden size, an encoder's embedding."""
    widths = {"tuned": spec.text_hidden, "untuned": spec.text_hidden}
    widths.update({name: e.embedding for name, e in encoder_specs(config["model"]).items()})
    return widths


def _item(template: str, rule: str, files: int, nbytes: float, terms: str) -> dict:
    return {"output": template, "rule": rule, "files": files, "bytes": float(nbytes),
            "gb": nbytes / 1e9, "terms": terms}


def items(config: Mapping[str, Any], train_images: int, test_images: int,
          spec: QwenSpec = QWEN2VL_7B) -> list[dict]:
    """Every output of ``config``'s run at ``train_images`` x ``test_images``, by template:
    its rule, its files, its bytes and the terms they add up from."""
    n, q = train_images, test_images
    rows = {"train": n, "test": q}
    images = n + q
    attributes = list(config["attributes"])
    a = len(attributes)
    groups = config["retrieve"]["groups"] or {}
    k = int(config["retrieve"]["k"])
    shards = int(config["embed"]["shards"])
    widths = _widths(config, spec)
    spaces = embedding_spaces(config)
    out = [
        _item(outputs.MANIFEST, "manifest", 1, images * (MANIFEST_ROW + a * MANIFEST_ATTRIBUTE),
              f"(N + Q) x ({MANIFEST_ROW} + {MANIFEST_ATTRIBUTE} A)"),
        _item(outputs.SPLIT_IDS, "split", 2, images * ID_LINE, f"(N + Q) x {ID_LINE}"),
    ]
    if config["stats"]["diagnosis"]:
        out.append(_item(outputs.LABELS, "labels", 1, images * LABELS_ROW,
                         f"(N + Q) x {LABELS_ROW}"))
    w = config["tuples"]["W"]
    tuples = n * (a if w == "all" else int(w))
    out.append(_item(outputs.TUPLES, "tuples", 1, tuples * TUPLE_ROW,
                     f"N W = {tuples:,} tuples x {TUPLE_ROW}"))

    # training: the adapter and the checkpoints
    train = config["train"]
    lora = lora_parameters(spec, train["lora"])
    out.append(_item(outputs.ADAPTER, "train", 1, lora * 4,
                     f"{lora / 1e6:,.1f} M LoRA parameters x 4 (float32)"))
    module = PRECISION_BYTES.get(str(train.get("precision")), 4)
    per_checkpoint = lora * (4 + module + OPTIMIZER_STATE) + TOKENIZER_FILES
    terms = f"the LoRA parameters x (4 + {module} + {OPTIMIZER_STATE}) + the tokenizer"
    if "save_total_limit" in train:
        kept = int(train["save_total_limit"])
        out.append(_item(outputs.CHECKPOINTS, "train", kept, kept * per_checkpoint,
                         f"save_total_limit {kept} x ({terms})"))
    else:  # a config without train's bookkeeping keys (core.sections.tracked)
        out.append(_item(outputs.CHECKPOINTS, "train", 1, per_checkpoint,
                         f"one checkpoint: {terms} (train.save_total_limit not given: each "
                         "kept checkpoint takes as much)"))

    # prediction: the shards and their merge, per model
    models = predict_models(config)
    answers = q * a * PREDICTION_ROW * len(models)
    out.append(_item(outputs.PREDICT_SHARD, "predict_shard",
                     len(models) * int(config["predict"]["shards"]), answers,
                     f"Q A x {PREDICTION_ROW}, per model ({', '.join(models)})"))
    out.append(_item(outputs.PREDICTIONS, "merge_predictions", len(models), answers,
                     "the same rows, merged"))

    # embeddings: per (model, split) the shards hold every space the model makes; the merged
    # files one space each, those the methods read
    shard_bytes, shard_files, shard_terms = 0.0, 0, []
    for model in spaces:
        made = 1 + a if model == "tuned" else 1
        for split in SPLITS:
            shard_bytes += rows[split] * (made * widths[model] * 2 + NPZ_ID)
        shard_files += len(SPLITS) * shards
        shard_terms.append(f"{model} {made} x {widths[model]:,}")
    out.append(_item(outputs.EMBED_SHARD, "embed_shard", shard_files, shard_bytes,
                     f"(N + Q) x spaces x d x 2: {', '.join(shard_terms)}"))
    if group_shards(config):
        g = len(groups)
        out.append(_item(outputs.GROUP_SHARD, "embed_groups", len(SPLITS) * shards,
                         images * (g * widths["tuned"] * 2 + NPZ_ID),
                         f"(N + Q) x G x d x 2: {g} x {widths['tuned']:,}"))
    merged_bytes, merged_files, merged_terms = 0.0, 0, []
    for model, by_split in spaces.items():
        for split, names in by_split.items():
            merged_bytes += len(names) * rows[split] * (widths[model] * 2 + NPZ_ID)
            merged_files += len(names)
        merged_terms.append(f"{model} {len(by_split['train'])} + {len(by_split['test'])}")
    out.append(_item(outputs.SPACE, "merge_embeddings", merged_files, merged_bytes,
                     f"N or Q x d x 2 per space (train + test): {', '.join(merged_terms)}"))
    indexed = indexed_spaces(config)
    out.append(_item(outputs.INDEX, "build_index", sum(len(s) for s in indexed.values()),
                     sum(len(s) * n * widths[m] * 4 for m, s in indexed.items()),
                     "N x d x 4 (float32 IndexFlatIP) per space: "
                     + ", ".join(f"{m} {len(s)}" for m, s in indexed.items())))

    # retrieval and evaluation
    methods = list(config["retrieve"]["methods"])
    lists = sum(a if plan_method(m, config).per_attribute else 1 for m in methods)
    out.append(_item(outputs.HITS, "retrieve", len(methods), q * k * lists * HIT_ROW,
                     f"Q k x {lists} lists (A per attribute method, 1 per image-only) "
                     f"x {HIT_ROW}"))
    group_jobs = retrieval_jobs(config)
    if group_jobs:
        out.append(_item(outputs.GROUP_HITS, "retrieve_groups", len(group_jobs),
                         q * k * len(groups) * len(group_jobs) * HIT_ROW,
                         f"Q k G x {len(group_jobs)} methods x {HIT_ROW}"))
    out.append(_item(outputs.PERCENTILES, "evaluate", 1,
                     q * k * a * max(1, len(methods)) * PERCENTILE_ROW,
                     f"Q k A x {len(methods)} methods x {PERCENTILE_ROW}"))
    if groups:
        group_methods = len(group_jobs) + 2  # + image-only (c) and random
        out.append(_item(outputs.GROUP_PERCENTILES, "evaluate_groups", 1,
                         q * k * len(groups) * group_methods * GROUP_PERCENTILE_ROW,
                         f"Q k G x {group_methods} methods x {GROUP_PERCENTILE_ROW}"))
    return out


def table(config: Mapping[str, Any], train_images: int, test_images: int,
          spec: QwenSpec = QWEN2VL_7B) -> dict:
    """:func:`items` with the total (bytes, GB) and the workload they are for."""
    rows = items(config, train_images, test_images, spec)
    total = sum(r["bytes"] for r in rows)
    return {"train_images": train_images, "test_images": test_images, "items": rows,
            "total_bytes": total, "total_gb": total / 1e9,
            "width": spec.text_hidden}
