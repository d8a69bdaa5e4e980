"""What a job's time holds beside its compute, and what runtime a rule should ask for.

Loading: each model job (``plan.MODEL_RULES``: train, predict_shard, embed_shard,
embed_groups) first reads its weights from storage, its GPUs held meanwhile: the 7B's bf16
checkpoint (16.6 GB; train's ranks share one node's page cache, so one read a job), the
tuned model's adapter beside it, an encoder's float32 checkpoint (MONET 1.7 GB). A load takes
``bytes / Assumptions.storage_bandwidth``, an assumption (a shared filesystem at ~1 GB/s per
job), reported as such; ``skinground.cost.estimate`` adds it to each job's time and GPU-hours.

Recommended runtimes: a rule's jobs ask the scheduler for a runtime (the workflow profile's
``runtime``, minutes); asking for hours what takes minutes holds a job back in the queue
(backfill). :func:`recommend` takes the estimate of one job (compute + loading, the slowest
of the rule's kinds) x :data:`SAFETY`, rounded up to :data:`STEP_MIN`, at least
:data:`FLOOR_MIN` (which also covers the process's start: imports, the CUDA context). Only
the model rules: the other GPU rule, retrieve, re-ranks on the CPU (not in the estimate); the
CPU rules' times are measured by the scale benchmark (docs/cost-and-scale.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from skinground.core.plan import MODEL_RULES, QWEN_MODELS, encoders
from skinground.cost.flops import (
    PAPER_TEST_IMAGES,
    PAPER_TRAIN_IMAGES,
    QWEN2VL_7B,
    QwenSpec,
    encoder_file_bytes,
    encoder_specs,
    lora_parameters,
    param_counts,
)

#: A recommended runtime is the estimate times this (an MFU of ~0.12 against the assumed
#: 0.35, or storage at a third of the assumed bandwidth, still ends in time) ...
SAFETY = 3.0
#: ... rounded up to a multiple of this, and never below the floor (minutes).
STEP_MIN = 15
FLOOR_MIN = 15


def config_images(config: Mapping[str, Any]) -> tuple[int, int]:
    """The train and test images a config's run holds at full scale: the paper's 282,564 and
    118,495, or where ``split.patient_fraction`` < 1 (the pilot), the images its sample of
    SLICE-3D's patients aims at (``skinground.data.split.target_images``)."""
    split = config["split"]
    if float(split.get("patient_fraction", 1.0)) >= 1.0:
        return PAPER_TRAIN_IMAGES, PAPER_TEST_IMAGES
    from skinground.data.split import target_images

    return target_images(PAPER_TRAIN_IMAGES + PAPER_TEST_IMAGES, **split)


def qwen_file_bytes(spec: QwenSpec = QWEN2VL_7B) -> float:
    """Qwen2-VL's checkpoint as shipped (bf16)."""
    return param_counts(spec)["total"] * 2


def adapter_bytes(config: Mapping[str, Any], spec: QwenSpec = QWEN2VL_7B) -> float:
    """The LoRA adapter (float32, as peft saves it): ``flops.lora_parameters`` x 4."""
    return lora_parameters(spec, config["train"]["lora"]) * 4


def model_bytes(config: Mapping[str, Any], model: str, spec: QwenSpec = QWEN2VL_7B) -> float:
    """The bytes a job of ``model`` reads before it computes: tuned = the base + its adapter,
    untuned = the base, an encoder = its checkpoint."""
    if model in QWEN_MODELS:
        return qwen_file_bytes(spec) + (adapter_bytes(config, spec) if model == "tuned" else 0)
    return encoder_file_bytes(encoder_specs(config["model"])[model],
                              encoders(config)[model].get("hub"))


def model_title(config: Mapping[str, Any], model: str) -> str:
    if model in QWEN_MODELS:
        return "Qwen2-VL-7B, bf16" + (" + the adapter" if model == "tuned" else "")
    return f"{encoders(config)[model].get('title', model)}, float32"


def load_seconds(nbytes: float, bandwidth: float) -> float:
    return nbytes / bandwidth


def loading_summary(stages: list[dict]) -> list[dict]:
    """The DAG's model loading, one entry per (model, seconds per job): its jobs, and the
    GPU-hours its loads hold (GPUs x jobs x seconds)."""
    out: dict[tuple, dict] = {}
    for r in stages:
        if not (r["in_dag"] and r["load_seconds_per_job"]):
            continue
        key = (r["load_model"], round(r["load_seconds_per_job"], 6))
        entry = out.setdefault(key, {"model": r["load_model"], "gb": r["load_gb"],
                                     "seconds": r["load_seconds_per_job"], "jobs": 0,
                                     "gpu_hours": 0.0})
        entry["jobs"] += r["load_jobs"]
        entry["gpu_hours"] += r["gpu_hours"] - r["compute_gpu_hours"]
    return list(out.values())


def recommend(hours_per_job: float) -> int:
    """A runtime request (minutes) for a job estimated at ``hours_per_job``."""
    minutes = hours_per_job * 60 * SAFETY
    return max(FLOOR_MIN, math.ceil(minutes / STEP_MIN - 1e-9) * STEP_MIN)


def recommendations(stages: list[dict], runtimes: Mapping[str, float]) -> list[dict]:
    """Per model rule of the DAG: the estimate of its slowest job (hours: compute + loading),
    the recommended runtime and the profile's (minutes; None where it sets none)."""
    slowest: dict[str, float] = {}
    for r in stages:
        if r["in_dag"] and r["rule"] in MODEL_RULES:
            slowest[r["rule"]] = max(slowest.get(r["rule"], 0.0), r["hours_per_job"])
    return [{"rule": rule, "hours_per_job": hours, "recommended_min": recommend(hours),
             "profile_min": runtimes.get(rule)}
            for rule, hours in slowest.items()]
