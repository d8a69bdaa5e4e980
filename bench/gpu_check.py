"""GPU check: a Qwen2-VL-7B-shaped model (random weights, bf16) on one GPU (training: --gpus).

    python bench/gpu_check.py [--out bench/results/gpu.json]     # on a GPU (see gpu_check.sh)
    python bench/gpu_check.py --gpus 4                           # training on 4 GPUs
    python bench/gpu_check.py --tiny --out /tmp/gpu_tiny.json    # same code path, CPU, tiny
    PYTHONPATH=tests/emulate_cuda python bench/gpu_check.py --tiny --gpus 2   # 2 ranks on CPU

Three phases, each in a process of its own with a time limit (a hang, a crash or an
out-of-memory error in one is recorded in the result and the other still runs):

1. train: LoRA (config.yaml ``train.lora``: r=8, the vision + decoder target regex) under
   DeepSpeed ZeRO-2 (``train.deepspeed``), launched as workflow/scripts/train.py launches it
   (``torchrun --standalone --nproc_per_node N``, N = ``--gpus``, default 1; gloo on CPU),
   through the workflow's own collators/``training_arguments``/Trainer: ``--warmup-steps`` +
   ``--steps`` optimizer steps of ``train.global_batch`` tuples (W of them per tile, as
   ``tuples.W``) on synthetic SLICE-3D-sized tiles (61-239 px, config.yaml's
   ``min_pixels``/``max_pixels``), once in each layout (``per_tuple``, ``per_image``), each
   in its own process(es): step time (forward/backward/optimizer, CUDA-synchronised; a step
   lasts as long as its slowest rank), tokens/s, tuples/s, MFU, peak memory, and the tuples/s
   ratio of the two layouts. ``ranks`` holds each rank's own tuples/s and tokens/s, ``total``
   their sum; ``batch`` checks the global batch: every step the N ranks together trained
   exactly ``train.global_batch`` distinct tuples, each in micro-batches of the per-device
   batch ``global_batch.train_batch`` gives for N processes, as many as its gradient accumulation
   (config.yaml's 16: 4 x 4 on one GPU, 4 x 1 on four). Embedding and prediction run on one GPU
   whatever N (the workflow runs them one job per GPU).
2. embed: ``embed.prefix_shared_embeddings`` vs ``reference.naive_embeddings`` over ``--images``
   tiles x the 16 questions: images/s both ways, the ratio, MFU, agreement, peak memory.
3. predict: image-once greedy generation (``predict.image_once_tokens``) vs one ``generate``
   per batch of the same (image, question) rows: seconds, ratio, MFU, identical rows.

Each phase's peak GPU memory stands beside the memory model's (``skinground.cost.memory``: the
train, embed_shard and predict_shard rules at the phase's shape and batch). ``phases`` sums
each up (passed, MFU, peak vs model, exactness checks), ``failed`` names each phase that did
not pass and why, ``ok`` is true when none failed; ``versions`` and (``--bundle``, from
``gpu_check.sh --offline``) ``bundle`` say which packages ran.

MFU = model FLOPs / time / ``--peak-tflops`` (H200 bf16 dense 989; training: / ``--gpus``
times it, its GPUs' mean MFU). Model FLOPs are the cost model's: 2 x parameters a token
passes through per token forward (vision blocks per patch, decoder per token, LM head where
logits are computed), 3x that for training (the 6·N·tokens convention); the cost model
applies the same convention at A6000 scale.
The model is the 7B's config with random weights (``--tiny``: config.yaml ``model.tiny``,
float32); the tokenizer is ``tiny.build_tokenizer``'s, the embedding table padded to the
7B's 152,064 rows. The result is written atomically to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from skinground.cost.flops import H200_PEAK

REPO = Path(__file__).resolve().parents[1]

#: The model dimensions the tiny/7B builds take (``tiny.qwen2vl_config``'s keyword arguments).
DIM_KEYS = ("text_hidden", "intermediate", "layers", "heads", "kv_heads", "mrope_section",
            "vision_depth", "vision_embed", "vision_heads", "patch_size", "spatial_merge")
#: The check's tokenizer vocabulary (the 7B's embedding table is larger: padded).
TOKENIZER_VOCAB = 1024
PACKAGES = ("torch", "transformers", "peft", "deepspeed", "accelerate", "tokenizers",
            "safetensors", "numpy", "polars", "pydantic", "skinground")
GIB = 1024**3


# --------------------------------------------------------------------------- arguments


def arguments(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true",
                   help="config.yaml's tiny model in float32, few images (runs on CPU)")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--dims", type=json.loads, default={},
                   help="JSON overriding values of the 7B's shape (flops.QWEN2VL_7B), e.g. "
                        "'{\"layers\": 4}' for a smaller GPU or a quick test")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu.json")
    p.add_argument("--images", type=int, default=None,
                   help="tiles for the embedding phase (default 64; --tiny 6)")
    p.add_argument("--train-images", type=int, default=None,
                   help="distinct tiles in the training set (default 64; --tiny 8)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed optimizer steps (default 5; --tiny 2)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed optimizer steps")
    p.add_argument("--batch-images", type=int, nargs="+", default=None,
                   help="prefix-shared batch sizes to time (default: embed.batch_images, and "
                        "32 on a GPU); the first is compared with the naive method")
    p.add_argument("--naive-budget-s", type=float, default=None,
                   help="stop the naive pass after this many seconds (default 90; --tiny none)")
    p.add_argument("--train-timeout", type=float, default=300.0, help="seconds")
    p.add_argument("--embed-timeout", type=float, default=300.0, help="seconds")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for both phases together (each also keeps its own limit); "
                        "gpu_check.sh passes what its 8 minutes leave after the installs")
    p.add_argument("--peak-tflops", type=float, default=H200_PEAK / 1e12,
                   help="the accelerator's bf16 dense peak, for MFU (H200: 989)")
    p.add_argument("--gpus", type=int, default=1,
                   help="training processes, one per GPU (torchrun --nproc_per_node; default "
                        "1, the paper trains on 4): config.yaml's global batch on any count, "
                        "MFU against this many GPUs' peak. On CPU (--tiny) more than one needs "
                        "tests/emulate_cuda first on PYTHONPATH")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on CPU (default 1: more spin-wait on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bundle", type=Path, default=None,
                   help="the offline bundle the packages came from (gpu_check.sh --offline): "
                        "its bundle.json is summarised in the result")
    p.add_argument("--skip", choices=("train", "embed", "predict"), action="append", default=[],
                   help="leave a phase out")
    # Internal: run one phase in this process and write its result to --part.
    p.add_argument("--phase", choices=("train", "embed", "predict"), help=argparse.SUPPRESS)
    p.add_argument("--layout", choices=("per_tuple", "per_image"), default="per_image",
                   help=argparse.SUPPRESS)
    p.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.gpus < 1:
        p.error(f"--gpus must be at least 1, not {a.gpus}")
    a.images = a.images or (6 if a.tiny else 64)
    a.train_images = a.train_images or (8 if a.tiny else 64)
    a.steps = a.steps or (2 if a.tiny else 5)
    if a.naive_budget_s is None:
        a.naive_budget_s = math.inf if a.tiny else 90.0
    return a


def load_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- shared


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    import skinground

    out["skinground_from"] = str(Path(skinground.__file__).resolve().parent)
    return out


def bundle_summary(folder: Path) -> dict:
    """What an offline bundle (``bench/gpu_bundle.py``) brought: its wheels, size and what it
    left out."""
    manifest = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    return {"dir": str(folder), "total_mib": manifest["total_mib"],
            "wheels": {w["name"]: w["version"] for w in manifest["wheels"]},
            "left_out": manifest["left_out"], "built": manifest["built"]}


def nvidia_smi() -> dict | None:
    """The GPUs as nvidia-smi reports them (None without nvidia-smi)."""
    query = "name,driver_version,memory.total,compute_cap"
    try:
        proc = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-300:]}
    rows = [[c.strip() for c in line.split(",")] for line in proc.stdout.strip().splitlines()]
    return {"gpus": [dict(zip(query.split(","), r, strict=False)) for r in rows]}


def device_info(torch) -> dict:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "name": props.name, "memory_gib": props.total_memory / GIB,
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                "bf16": torch.cuda.is_bf16_supported()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def tiles(n: int, seed: int):
    """``n`` synthetic lesion tiles, 61-239 px (SLICE-3D's size distribution)."""
    import numpy as np
    from PIL import Image

    from skinground.demo.lesions import render_tile
    from skinground.demo.synthetic import tile_size

    rng = np.random.default_rng(seed)
    return [Image.fromarray(render_tile(rng, tile_size(rng)).rgb) for _ in range(n)]


def questions_of(config: dict) -> list[str]:
    return [a["question"] for a in config["attributes"].values()]


def build(args, config: dict, torch):
    """``(model, processor, spec, parameters)``: the 7B-shaped (or tiny) Qwen2-VL with random
    weights, on the GPU in bf16 (CPU float32 without one or with --tiny), and a processor with
    config.yaml's pixel budget. ``spec`` is the ``flops.QwenSpec`` its FLOPs are counted with."""
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from skinground.cost import flops
    from skinground.demo import tiny
    from skinground.model import loading

    questions = questions_of(config)
    corpus = [f"{q} {v}" for q in questions for v in ("12.34", "0.57", "-1.25", "250.10")]
    if args.tiny:
        small = config["model"]["tiny"]
        dims = {k: small[k] for k in DIM_KEYS if k in small} | {"patch_size": 14,
                                                                "spatial_merge": 2}
        tokenizer = tiny.build_tokenizer(corpus, int(small["vocab_size"]))
        vocab = len(tokenizer)
    else:
        shape = dataclasses.asdict(flops.QWEN2VL_7B) | args.dims
        dims = {k: shape[k] for k in DIM_KEYS}
        tokenizer = tiny.build_tokenizer(corpus, TOKENIZER_VOCAB)
        vocab = max(int(shape["vocab_size"]), len(tokenizer))
    ids = tiny.special_token_ids(tokenizer)
    config_hf = tiny.qwen2vl_config(ids, vocab, **dims)
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu and not args.tiny else torch.float32
    torch.manual_seed(args.seed)
    with torch.device("cuda" if gpu else "cpu"):
        model = Qwen2VLForConditionalGeneration._from_config(config_hf, dtype=dtype)
    mn, mx = config["model"]["min_pixels"], config["model"]["max_pixels"]
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=dims["patch_size"], merge_size=dims["spatial_merge"], temporal_patch_size=2,
        min_pixels=mn, max_pixels=mx)
    processor = loading.ImageOnlyQwen2VLProcessor(image_processor, tokenizer,
                                                 chat_template=loading.QWEN2VL_CHAT_TEMPLATE)
    loading.configure_pixels(processor, min_pixels=mn, max_pixels=mx)
    spec = flops.QwenSpec(
        text_hidden=dims["text_hidden"], intermediate=dims["intermediate"],
        layers=dims["layers"], heads=dims["heads"], kv_heads=dims["kv_heads"],
        vocab_size=vocab, vision_depth=dims["vision_depth"], vision_embed=dims["vision_embed"],
        vision_heads=dims["vision_heads"], patch_size=dims["patch_size"],
        spatial_merge=dims["spatial_merge"])
    counted = sum(p.numel() for p in model.parameters())
    formula = flops.param_counts(spec)["total"]
    parameters = {"counted": counted, "cost_model": formula, "match": counted == formula,
                  "dtype": str(dtype).removeprefix("torch."), "vocab_size": vocab,
                  "tokenizer_vocab": len(tokenizer), "dims": dims}
    return model, processor, spec, parameters


def error_record(err: BaseException, torch) -> dict:
    oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()
    return {"error": "out of memory" if oom else f"{type(err).__name__}: {str(err)[:500]}",
            "traceback": traceback.format_exc()[-3000:]}


def memory(torch) -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB}


def memory_model(rule: str, config: dict, spec, measured: dict, **sizes) -> dict:
    """The memory model's GPU peak (``skinground.cost.memory.rule_peaks``: bf16 weights) of the
    workflow rule a phase stands for, at the phase's model shape and batch (``sizes``: fields
    of ``memory.Workload``), beside the phase's measured peak where there is one (a GPU). A
    model that cannot be evaluated is an ``error`` here, never the phase's failure."""
    from skinground.cost import memory as M

    try:
        work = dataclasses.replace(M.Workload.from_config(config), **sizes)
        peak = M.rule_peaks(work, spec)[rule]
    except Exception as err:  # noqa: BLE001 - the measurement stands without the model
        return {"rule": rule, "error": f"{type(err).__name__}: {err}"[:500]}
    out = {"rule": rule, "model_gib": peak.gpu / GIB, "terms": peak.terms, **sizes}
    if measured.get("peak_memory_gib") is not None:
        out["measured_gib"] = measured["peak_memory_gib"]
        out["measured_over_model"] = measured["peak_memory_gib"] / out["model_gib"]
    return out


def prompt_tokens(processor, model, images, questions) -> tuple[list[int], list[int],
                                                                list[int]]:
    """For the FLOP counts: per image its prefix's tokens and image tokens, per question its
    suffix's tokens (the cut of ``prefix.split_template``, the one extraction and generation
    share)."""
    from skinground.model import prefix as P

    prefix, suffixes = P.split_template(processor, questions)
    tok = processor.tokenizer
    suffix_len = [len(tok(s, add_special_tokens=False)["input_ids"]) for s in suffixes]
    prefix_len, image_len = [], []
    for im in images:
        enc = P.encode(processor, [im], [prefix])
        prefix_len.append(int(enc["attention_mask"].sum()))
        image_len.append(int((enc["input_ids"] == model.config.image_token_id).sum()))
    return prefix_len, image_len, suffix_len


# --------------------------------------------------------------------------- phase: train


class Tuples(list):
    """Training items (dicts) that also give their ids, as ``batches.TupleDataset`` does (the
    per-image sampler groups by them)."""

    @property
    def ids(self) -> list[str]:
        return [item["isic_id"] for item in self]


class CountingCollator:
    """The workflow's collator of a training layout, recording what each batch holds: the
    positions the decoder runs over (per image: each image's prefix once plus every suffix),
    those with an image token, those where logits are computed, the answer tokens, and which
    tuples (their indices in the training set) it holds."""

    def __init__(self, inner, image_token_id: int, index: dict[tuple[str, str], int]):
        self.inner = inner
        self.image_token_id = image_token_id
        self.index = index
        self.batches: list[dict] = []

    def __call__(self, items):
        out = self.inner(items)
        ids = out["input_ids"]
        tokens = int(out["attention_mask"].sum())
        padded = int(ids.numel())
        lm_tokens = tokens
        if "suffix_ids" in out:  # per image: logits over the suffixes only
            lm_tokens = int(out["suffix_mask"].sum())
            tokens += lm_tokens
            padded += int(out["suffix_ids"].numel())
        self.batches.append({
            "sequences": len(items),
            "images": len({it["isic_id"] for it in items}),
            "tokens": tokens,
            "padded_tokens": padded,
            "image_tokens": int((ids == self.image_token_id).sum()),
            "lm_tokens": lm_tokens,
            "answer_tokens": int((out["labels"] != -100).sum()),
            "tuples": [self.index[it["isic_id"], it["question"]] for it in items],
        })
        return out


def phase_train(args, config: dict) -> dict:
    """One training process (rank) of ``--gpus``: its own record, step by step (what each
    optimizer step's micro-batches held, their FLOPs, the step's time); ``combine_train``
    makes the phase's result of the ranks' records."""
    import torch
    from transformers import TrainerCallback

    from skinground.core.sections import bookkeeping, tracked
    from skinground.cost import flops
    from skinground.model import train as T
    from skinground.model.batches import collator as layout_collator
    from skinground.model.lora import attach_lora

    world, rank = T.world_size(), int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available() and torch.cuda.device_count() < world:
        raise RuntimeError(f"--gpus {world}: only {torch.cuda.device_count()} GPU(s) visible")
    T.no_shm_comm_on_cpu(world)  # no JIT-compiled shared-memory op for one CPU process
    bf16 = torch.cuda.is_available() and not args.tiny
    steps = args.warmup_steps + args.steps
    train_cfg = dict(config["train"])
    train_cfg.update(max_steps=steps, epochs=1, save_steps=10**9, logging_steps=1,
                     dataloader_workers=0, precision="bf16" if bf16 else "fp32",
                     layout=args.layout)
    result: dict = {"rank": rank, "processes": world, "precision": train_cfg["precision"],
                    "layout": args.layout, "warmup_steps": args.warmup_steps}
    with tempfile.TemporaryDirectory(prefix="gpu_check_train.") as tmp:
        targs = T.training_arguments(tracked("train", train_cfg),
                                     bookkeeping("train", train_cfg), checkpoint_dir=tmp,
                                     deepspeed_config=REPO / config["train"]["deepspeed"],
                                     world=world, bf16=bf16)
        result["device"] = device_info(torch)
        t0 = time.perf_counter()
        model, processor, spec, parameters = build(args, config, torch)
        model.config.use_cache = False
        model = attach_lora(model, config["train"]["lora"])
        model.train()
        sync(torch)
        result["build_seconds"] = time.perf_counter() - t0
        result["parameters"] = parameters
        result["trainable_parameters"] = sum(p.numel() for p in model.parameters()
                                             if p.requires_grad)
        result.update({f"{k}_after_build": v for k, v in memory(torch).items()})

        import numpy as np

        rng = np.random.default_rng(args.seed)  # the same tuples on every rank
        images = tiles(args.train_images, args.seed + 1)
        attrs = list(config["attributes"].values())
        w = config["tuples"]["W"]
        w = len(attrs) if w == "all" else int(w)
        n_seq = steps * int(train_cfg["global_batch"])
        data = Tuples()  # W attributes per image, as the tuples rule samples them
        for k in range(-(-n_seq // w)):
            for j in rng.choice(len(attrs), size=w, replace=False).tolist():
                data.append({"isic_id": f"tile{k}", "image": images[k % len(images)],
                             "question": attrs[j]["question"],
                             "answer": f"{rng.uniform(0, 300):.{attrs[j]['decimals']}f}"})
        index = {(it["isic_id"], it["question"]): i for i, it in enumerate(data)}
        collator = CountingCollator(layout_collator(args.layout, processor),
                                    model.config.image_token_id, index)

        times: list[float] = []

        class StepTimer(TrainerCallback):
            begin = None

            def on_step_begin(self, *a, **k):
                sync(torch)
                self.begin = time.perf_counter()

            def on_step_end(self, *a, **k):
                sync(torch)
                times.append(time.perf_counter() - self.begin)

        trainer = T.trainer_class(args.layout)(model=model, args=targs, train_dataset=data,
                                               data_collator=collator,
                                               callbacks=[StepTimer()])
        result["accelerate_processes"] = trainer.accelerator.num_processes
        if trainer.accelerator.num_processes != world:
            raise RuntimeError(
                f"Accelerate sees {trainer.accelerator.num_processes} process(es) of {world}: "
                "each rank would train the whole batch alone (on CPU, put tests/emulate_cuda "
                "first on PYTHONPATH)")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.train()
        sync(torch)
        result["train_seconds"] = time.perf_counter() - t0
        result.update(memory(torch))

    acc = targs.gradient_accumulation_steps
    per_step = [collator.batches[s * acc:(s + 1) * acc] for s in range(len(times))]

    def total(key, batches):
        return sum(b[key] for b in batches)

    result.update(
        per_device_batch=targs.per_device_train_batch_size, gradient_accumulation=acc,
        losses=[e["loss"] for e in trainer.state.log_history if "loss" in e],
        step_records=[{
            "seconds": times[s],
            "micro_batches": [b["sequences"] for b in batches],
            "tuples": sorted(t for b in batches for t in b["tuples"]),
            **{key: total(key, batches) for key in ("sequences", "images", "tokens",
                                                     "padded_tokens", "image_tokens")},
            "flops": sum(3 * flops.forward_flops(spec, tokens=b["tokens"],
                                                 image_tokens=b["image_tokens"],
                                                 lm_tokens=b["lm_tokens"]) for b in batches),
        } for s, batches in enumerate(per_step)])
    result["memory_model"] = memory_model("train", config, spec, result, train_gpus=world,
                                          per_device_batch=targs.per_device_train_batch_size)
    return result


def combine_train(parts: list[dict], *, global_batch: int, per_device_cap: int,
                  peak_tflops: float) -> dict:
    """The train phase's result from its ranks' records (``phase_train``; rank order).

    A step takes as long as its slowest rank (the ranks meet in its gradient reduction);
    tuples/s, tokens/s and model FLOPs/s are the ranks' sums over the timed steps' time, the
    MFU is against ``len(parts)`` GPUs' peak. Each rank's own tuples/s and tokens/s (over its
    own step times) are in ``ranks``. ``batch`` checks the global batch: every step the ranks
    together trained exactly ``global_batch`` tuples, each rank in micro-batches of
    ``train_batch``'s per-device batch, as many as its accumulation, no tuple twice."""
    from skinground.model.global_batch import train_batch

    n, first = len(parts), parts[0]
    steps = min(len(p["step_records"]) for p in parts)
    timed = list(range(first["warmup_steps"], steps))
    if not timed:
        raise RuntimeError(f"only {steps} step(s) ran; none timed")

    def records(s):
        return [p["step_records"][s] for p in parts]

    def over_ranks(key, s):
        return sum(r[key] for r in records(s))

    def per_timed_step(key):
        return sum(over_ranks(key, s) for s in timed) / len(timed)

    step_times = [max(r["seconds"] for r in records(s)) for s in range(steps)]
    seconds = sum(step_times[s] for s in timed)
    tokens = sum(over_ranks("tokens", s) for s in timed)
    sequences = sum(over_ranks("sequences", s) for s in timed)
    model_flops = sum(over_ranks("flops", s) for s in timed)
    ranks = []
    for p in parts:
        own = [p["step_records"][s] for s in timed]
        own_seconds = sum(r["seconds"] for r in own)
        ranks.append({
            "rank": p["rank"], "step_time_s": statistics.median(r["seconds"] for r in own),
            "tuples_per_step": sum(r["sequences"] for r in own) / len(own),
            "tuples_per_s": sum(r["sequences"] for r in own) / own_seconds,
            "tokens_per_s": sum(r["tokens"] for r in own) / own_seconds,
            "peak_memory_gib": p.get("peak_memory_gib")})

    per_device, accumulation = train_batch(global_batch, per_device_cap, n)
    seen = [t for s in range(steps) for r in records(s) for t in r["tuples"]]
    checks = {
        "tuples_per_step": all(over_ranks("sequences", s) == global_batch
                               for s in range(steps)),
        "per_device_batch": all(b == per_device for s in range(steps) for r in records(s)
                                for b in r["micro_batches"]),
        "gradient_accumulation": all(len(r["micro_batches"]) == accumulation
                                     for s in range(steps) for r in records(s)),
        "training_arguments": all((p["per_device_batch"], p["gradient_accumulation"])
                                  == (per_device, accumulation) for p in parts),
        "processes": all(p["processes"] == p["accelerate_processes"] == n for p in parts),
        "distinct_tuples": len(seen) == len(set(seen)),
    }
    batch = {"global_batch": global_batch, "per_device_batch_cap": per_device_cap,
             "processes": n, "per_device_batch": per_device,
             "gradient_accumulation": accumulation,
             "tuples_per_step": [over_ranks("sequences", s) for s in range(steps)],
             "checks": checks, "ok": all(checks.values())}

    peaks = [p["peak_memory_gib"] for p in parts if p.get("peak_memory_gib") is not None]
    losses = first["losses"]  # the Trainer logs the mean over the ranks
    result = {k: v for k, v in first.items()
              if k not in ("rank", "step_records", "losses", "warmup_steps")}
    result.update({
        "processes": n, "steps": steps, "timed_steps": len(timed),
        "sequences_per_step": over_ranks("sequences", timed[0]),
        "images_per_step": per_timed_step("images"),
        "tokens_per_step": tokens / len(timed),
        "padded_tokens_per_step": per_timed_step("padded_tokens"),
        "image_tokens_per_step": per_timed_step("image_tokens"),
        "step_times_s": step_times,
        "step_time_s": statistics.median(step_times[s] for s in timed),
        "tokens_per_s": tokens / seconds,
        "sequences_per_s": sequences / seconds,
        "flops_per_step": model_flops / len(timed),
        "achieved_tflops": model_flops / seconds / 1e12,
        "mfu": model_flops / seconds / (n * peak_tflops * 1e12),
        "mfu_gpus": n,
        "ranks": ranks,
        "total": {"tuples_per_s": sequences / seconds, "tokens_per_s": tokens / seconds},
        "batch": batch,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "finite_loss": bool(losses) and all(math.isfinite(v) for v in losses),
    })
    if peaks:  # the fullest GPU, beside the memory model's per-GPU peak
        result["peak_memory_gib"] = max(peaks)
        mem = dict(result.get("memory_model") or {})
        if mem.get("model_gib"):
            mem.update(measured_gib=max(peaks), measured_over_model=max(peaks)
                       / mem["model_gib"])
        result["memory_model"] = mem
    return result


# --------------------------------------------------------------------------- phase: embed


def phase_embed(args, config: dict) -> dict:
    import torch

    from skinground.cost import flops
    from skinground.model import embed

    from reference import naive_embeddings

    result: dict = {"device": device_info(torch)}
    t0 = time.perf_counter()
    model, processor, spec, parameters = build(args, config, torch)
    model.eval()
    sync(torch)
    result["build_seconds"] = time.perf_counter() - t0
    result["parameters"] = parameters
    questions = questions_of(config)
    token = config["embed"]["h_ima_token"]  # where h_im,a is read, both ways
    images = tiles(args.images, args.seed)
    sizes = args.batch_images or (
        [int(config["embed"]["batch_images"])]
        + ([32] if torch.cuda.is_available() and not args.tiny else []))
    result.update(images=len(images), questions=len(questions), batch_images=sizes[0],
                  image_sizes_px=[min(im.width for im in images),
                                  statistics.median(im.width for im in images),
                                  max(im.width for im in images)])

    prefix_len, image_len, suffix_len = prompt_tokens(processor, model, images, questions)

    def f_shared(k):
        return (flops.forward_flops(spec, tokens=prefix_len[k], image_tokens=image_len[k])
                + sum(flops.forward_flops(spec, tokens=s, image_tokens=0) for s in suffix_len))

    def f_naive(k):
        return (flops.forward_flops(spec, tokens=prefix_len[k], image_tokens=image_len[k],
                                   lm_tokens=1)
                + sum(flops.forward_flops(spec, tokens=prefix_len[k] + s,
                                         image_tokens=image_len[k], lm_tokens=1)
                      for s in suffix_len))

    result["tokens"] = {"prefix_mean": statistics.mean(prefix_len),
                        "image_mean": statistics.mean(image_len),
                        "image_min": min(image_len), "image_max": max(image_len),
                        "suffix_mean": statistics.mean(suffix_len)}
    peak = args.peak_tflops * 1e12
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    # Warm-up: allocator, kernels, tokenizer caches.
    embed.prefix_shared_embeddings(model, processor, images[:sizes[0]], questions,
                                   batch_images=sizes[0], token=token)
    naive_embeddings(model, processor, images[:1], questions, token=token)
    sync(torch)

    shared_runs, reference = {}, None
    for bi in sizes:
        try:
            sync(torch)
            t = time.perf_counter()
            out = embed.prefix_shared_embeddings(model, processor, images, questions,
                                                 batch_images=bi, token=token)
            sync(torch)
            dt = time.perf_counter() - t
            fl = sum(f_shared(k) for k in range(len(images)))
            shared_runs[str(bi)] = {"seconds": dt, "images_per_s": len(images) / dt,
                                    "achieved_tflops": fl / dt / 1e12, "mfu": fl / dt / peak}
            if reference is None:
                reference = out
        except Exception as err:  # noqa: BLE001 - an OOM at one size is a result
            shared_runs[str(bi)] = error_record(err, torch)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    result["prefix_shared"] = shared_runs

    # Naive: one image at a time until the budget is spent.
    n_im, n_ima, done = [], [], 0
    t = time.perf_counter()
    try:
        for im in images:
            e_im, e_ima = naive_embeddings(model, processor, [im], questions, token=token)
            n_im.append(e_im)
            n_ima.append(e_ima)
            done += 1
            if time.perf_counter() - t > args.naive_budget_s and done >= 2:
                break
        sync(torch)
        dt = time.perf_counter() - t
        fl = sum(f_naive(k) for k in range(done))
        result["naive"] = {"images": done, "seconds": dt, "images_per_s": done / dt,
                           "achieved_tflops": fl / dt / 1e12, "mfu": fl / dt / peak}
    except Exception as err:  # noqa: BLE001
        result["naive"] = error_record(err, torch) | {"images": done}
    result.update(memory(torch))
    result["memory_model"] = memory_model("embed_shard", config, spec, result,
                                          embed_batch=max(sizes))

    first = shared_runs.get(str(sizes[0]), {})
    naive = result["naive"]
    result["images_per_s"] = {"prefix_shared": first.get("images_per_s"),
                              "naive": naive.get("images_per_s")}
    result["mfu"] = {"prefix_shared": first.get("mfu"), "naive": naive.get("mfu")}
    if first.get("images_per_s") and naive.get("images_per_s"):
        result["speedup"] = first["images_per_s"] / naive["images_per_s"]
    if reference is not None and done:
        s_im, s_ima = reference[0][:done], reference[1][:done]
        r_im, r_ima = torch.cat(n_im), torch.cat(n_ima)
        cos = torch.nn.functional.cosine_similarity
        result["agreement"] = {
            "images": done,
            "max_abs_diff": {"h_im": float((s_im - r_im).abs().max()),
                             "h_ima": float((s_ima - r_ima).abs().max())},
            "min_cosine": {"h_im": float(cos(s_im, r_im, dim=-1).min()),
                           "h_ima": float(cos(s_ima, r_ima, dim=-1).min())},
            "finite": bool(torch.isfinite(s_ima).all() and torch.isfinite(s_im).all()),
        }
    return result


# --------------------------------------------------------------------------- phase: predict


def phase_predict(args, config: dict) -> dict:
    """Greedy answers to the 16 questions for ``--images`` tiles, image-once (the workflow's
    ``predict.image_once_tokens``) vs one left-padded ``generate`` per batch of the same
    (image, question) rows (``reference.generate_batch``): seconds, the ratio and how many rows
    got the same tokens (bf16 rounding may flip a near-tie). MFU counts what the cost model
    counts for prediction: the prefill (image-once: each prefix, then every row's suffix with
    logits at its last position; per question: every row's whole prompt) and one one-token
    step per further token a row generated (its stop token included)."""
    import torch

    from skinground.cost import flops
    from skinground.model.predict import image_once_tokens

    from reference import generate_batch

    result: dict = {"device": device_info(torch)}
    model, processor, spec, parameters = build(args, config, torch)
    model.eval()
    result["parameters"] = parameters
    questions = questions_of(config)
    images = tiles(args.images, args.seed)
    bi = int(config["predict"]["batch_images"])
    new = int(config["predict"]["max_new_tokens"])
    stops = {processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",
                                                                     "<|endoftext|>")}

    def once():
        out = []
        for s in range(0, len(images), bi):
            out += image_once_tokens(model, processor, images[s:s + bi], questions,
                                     max_new_tokens=new)
        return out

    def per_question():
        out = []
        for s in range(0, len(images), bi):
            chunk = [im for im in images[s:s + bi] for _ in questions]
            rows = generate_batch(model, processor, chunk, questions * (len(chunk)
                                                                       // len(questions)),
                                  max_new_tokens=new, tokens=True)
            out += [r[: next((k for k, t in enumerate(r) if t in stops), len(r))]
                    for r in rows]
        return out

    once()  # warm-up
    times = {}
    answers = {}
    for name, fn in (("image_once", once), ("per_question", per_question)):
        sync(torch)
        t0 = time.perf_counter()
        answers[name] = fn()
        sync(torch)
        times[name] = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(answers["image_once"], answers["per_question"],
                                      strict=True))
    prefix_len, image_len, suffix_len = prompt_tokens(processor, model, images, questions)

    def fwd(tokens, image_tokens=0, lm_tokens=0):
        return flops.forward_flops(spec, tokens=tokens, image_tokens=image_tokens,
                                   lm_tokens=lm_tokens)

    def decode(rows):  # the first token comes from the prefill; a stop token is one more
        return sum(max(0, len(r) + (len(r) < new) - 1) for r in rows) * fwd(1, 0, 1)

    model_flops = {
        "image_once": sum(fwd(p, m) for p, m in zip(prefix_len, image_len, strict=True))
        + len(images) * sum(fwd(n, 0, 1) for n in suffix_len) + decode(answers["image_once"]),
        "per_question": sum(fwd(p + n, m, 1) for p, m in zip(prefix_len, image_len, strict=True)
                            for n in suffix_len) + decode(answers["per_question"]),
    }
    peak = args.peak_tflops * 1e12
    result.update(images=len(images), questions=len(questions), batch_images=bi,
                  max_new_tokens=new, seconds=times,
                  ratio=times["per_question"] / times["image_once"],
                  rows=len(answers["image_once"]), identical_rows=same,
                  generated_tokens={k: sum(map(len, v)) for k, v in answers.items()},
                  flops=model_flops,
                  achieved_tflops={k: f / times[k] / 1e12 for k, f in model_flops.items()},
                  mfu={k: f / times[k] / peak for k, f in model_flops.items()})
    result.update(memory(torch))
    result["memory_model"] = memory_model("predict_shard", config, spec, result,
                                          predict_batch=bi)
    return result


# --------------------------------------------------------------------------- driver


def rank_part(part: Path, rank: int) -> Path:
    """Where rank ``rank`` of a phase writes its result (rank 0, a one-process phase: ``part``)."""
    return part if rank == 0 else part.with_name(f"{part.stem}.rank{rank}{part.suffix}")


def run_phase(name: str, cmd: list[str], timeout: float, part: Path, ranks: int = 1,
              combine=None) -> dict:
    """Run one phase's process (its own process group, killed whole on timeout). A phase of
    several ranks (torchrun) has one result per rank, made one by ``combine``; the first
    rank's error, or a rank without a result, is the phase's error."""
    print(f"== gpu_check: {name} (limit {timeout:.0f} s): {' '.join(cmd[:6])} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    seconds = time.perf_counter() - t0
    files = [rank_part(part, r) for r in range(ranks)]
    found = [json.loads(f.read_text(encoding="utf-8")) for f in files if f.is_file()]
    failed = next((r for r in found if "error" in r), None)
    missing = [r for r, f in enumerate(files) if not f.is_file()]
    if failed is not None:
        result = failed
    elif timed_out:
        result = {"error": f"timed out after {timeout:.0f} s"}
    elif missing:
        who = "" if ranks == 1 else f" for rank(s) {', '.join(map(str, missing))}"
        result = {"error": f"exited with status {rc} without a result{who}"}
    else:
        try:
            result = combine(found) if combine else found[0]
        except Exception as err:  # noqa: BLE001 - recorded as the phase's error
            result = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
    result["process"] = {"rc": rc, "seconds": seconds, "timed_out": timed_out, "ranks": ranks}
    return result


def child_args(args) -> list[str]:
    out = ["--config", str(args.config), "--images", str(args.images),
           "--train-images", str(args.train_images), "--steps", str(args.steps),
           "--warmup-steps", str(args.warmup_steps), "--naive-budget-s",
           str(args.naive_budget_s), "--peak-tflops", str(args.peak_tflops),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.tiny:
        out.append("--tiny")
    if args.dims:
        out += ["--dims", json.dumps(args.dims)]
    if args.batch_images:
        out += ["--batch-images", *map(str, args.batch_images)]
    return out


def layout_ratio(result: dict, dag_layout: str) -> dict:
    """Tuples per second of the two training layouts, measured side by side, and the ratio."""
    runs = {layout: result.get("train" if layout == dag_layout else f"train_{layout}") or {}
            for layout in ("per_tuple", "per_image")}
    rates = {layout: run.get("sequences_per_s") for layout, run in runs.items()}
    out = {"tuples_per_s": rates}
    if all(isinstance(v, (int, float)) and v > 0 for v in rates.values()):
        out["per_image_over_per_tuple"] = rates["per_image"] / rates["per_tuple"]
    return out


#: The result's phases: training in each layout ("train" is config.yaml's), then the others.
PHASE_KEYS = ("train", "train_per_tuple", "train_per_image", "embed", "predict")


def phase_summary(key: str, run: dict) -> dict:
    """One phase at a glance: passed or not (and why not), its MFU, its peak GPU memory
    beside the memory model's, and its exactness checks."""
    mem = run.get("memory_model") or {}
    out = {"ok": False, "why": None, "mfu": run.get("mfu"),
           "peak_memory_gib": run.get("peak_memory_gib"),
           "memory_model_gib": mem.get("model_gib"),
           "measured_over_model": mem.get("measured_over_model"),
           "seconds": (run.get("process") or {}).get("seconds")}
    if key.startswith("train"):
        batch = run.get("batch") or {}
        out["exact"] = {"finite_loss": run.get("finite_loss"),
                        "parameters_match": (run.get("parameters") or {}).get("match"),
                        "global_batch": batch.get("ok")}
        out["ok"] = "mfu" in run and bool(run.get("finite_loss")) and bool(batch.get("ok"))
        wrong = [k for k, v in (batch.get("checks") or {}).items() if not v]
        out["why"] = run.get("error") or (
            None if out["ok"] else "the loss is not finite" if not run.get("finite_loss")
            else f"the global batch of {batch.get('global_batch')} over "
                 f"{batch.get('processes')} rank(s) failed: {', '.join(wrong) or 'unchecked'}")
    elif key == "embed":
        agreement = run.get("agreement") or {}
        out["exact"] = agreement
        out["ok"] = bool(run.get("speedup")) and bool(agreement.get("finite"))
        naive = (run.get("naive") or {}).get("error")
        shared = [f"batch {b}: {r['error']}" for b, r in (run.get("prefix_shared") or {}).items()
                  if "error" in r]
        out["why"] = run.get("error") or (None if out["ok"] else "; ".join(
            shared + ([f"naive: {naive}"] if naive else []) or ["embeddings not finite"]))
    else:
        out["exact"] = {"identical_rows": run.get("identical_rows"), "rows": run.get("rows")}
        out["ok"] = bool(run.get("ratio"))
        out["why"] = run.get("error") or (None if out["ok"] else "no ratio measured")
    return out


def summary_lines(result: dict) -> list[str]:
    lines = []
    tr, em = result.get("train") or {}, result.get("embed") or {}
    if "mfu" in tr:
        peak = f", peak {tr['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in tr else ""
        lines.append(f"train ({tr['processes']} rank(s) x {tr['per_device_batch']} x "
                     f"{tr['gradient_accumulation']} accumulation): {tr['sequences_per_step']} "
                     f"seq/step, step {tr['step_time_s']:.3f} s, {tr['tokens_per_s']:,.0f} "
                     f"tokens/s, MFU {tr['mfu']:.3f}{peak}, loss {tr['loss_first']:.3f} -> "
                     f"{tr['loss_last']:.3f}")
        if len(tr["ranks"]) > 1:
            lines += [f"       rank {r['rank']}: {r['tuples_per_s']:,.1f} tuples/s, "
                      f"{r['tokens_per_s']:,.0f} tokens/s" for r in tr["ranks"]]
    ratio = (result.get("train_layouts") or {}).get("per_image_over_per_tuple")
    if ratio:
        rates = result["train_layouts"]["tuples_per_s"]
        lines.append(f"train layouts: per_image {rates['per_image']:,.1f} tuples/s, per_tuple "
                     f"{rates['per_tuple']:,.1f} tuples/s: {ratio:.2f}x")
    ips = em.get("images_per_s") or {}
    if ips.get("prefix_shared") and ips.get("naive"):
        mfu = em["mfu"]
        lines.append(f"embed: prefix-shared {ips['prefix_shared']:.2f} img/s (MFU "
                     f"{mfu['prefix_shared']:.3f}), naive {ips['naive']:.2f} img/s (MFU "
                     f"{mfu['naive']:.3f}): {em['speedup']:.1f}x; max |diff| h_ima "
                     f"{em['agreement']['max_abs_diff']['h_ima']:.2e}")
        for bi, run in em["prefix_shared"].items():
            if "images_per_s" in run:
                lines.append(f"       batch {bi}: {run['images_per_s']:.2f} img/s, "
                             f"MFU {run['mfu']:.3f}")
            else:
                lines.append(f"       batch {bi}: {run.get('error')}")
    pr = result.get("predict") or {}
    if "ratio" in pr:
        lines.append(f"predict: image-once {pr['seconds']['image_once']:.1f} s (MFU "
                     f"{pr['mfu']['image_once']:.3f}), per question "
                     f"{pr['seconds']['per_question']:.1f} s (MFU {pr['mfu']['per_question']:.3f})"
                     f": {pr['ratio']:.1f}x; {pr['identical_rows']}/{pr['rows']} rows identical")
    for key, phase in (result.get("phases") or {}).items():
        if phase["peak_memory_gib"] is not None and phase["memory_model_gib"]:
            lines.append(f"memory {key}: peak {phase['peak_memory_gib']:.1f} GiB, the memory "
                         f"model's {phase['memory_model_gib']:.1f} GiB "
                         f"({phase['measured_over_model']:.2f}x)")
    for key, why in (result.get("failed") or {}).items():
        lines.append(f"{key}: FAILED: {why}")
    return lines


def main(argv=None) -> int:
    args = arguments(argv)
    config = load_config(args.config)

    if args.phase:  # a child: one phase, result to --part
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(args.threads)
        try:
            result = {"train": phase_train, "embed": phase_embed,
                      "predict": phase_predict}[args.phase](args, config)
            rc = 0
        except Exception as err:  # noqa: BLE001 - recorded, the parent carries on
            result, rc = error_record(err, torch), 1
            print(result["traceback"], file=sys.stderr)
        part = rank_part(args.part, int(os.environ.get("RANK", "0")))
        part.write_text(json.dumps(result, default=str), encoding="utf-8")
        return rc

    started = time.perf_counter()
    from skinground.core.errors import InputError
    from skinground.model.global_batch import train_batch

    global_batch = int(config["train"]["global_batch"])
    per_device_cap = int(config["train"]["per_device_batch"])
    try:
        train_batch(global_batch, per_device_cap, args.gpus)
    except InputError as err:
        print(f"gpu_check: --gpus {args.gpus}: {err}", file=sys.stderr)
        return 2
    result: dict = {"tiny": args.tiny, "config": str(args.config), "versions": versions(),
                    "nvidia_smi": nvidia_smi(), "peak_tflops": args.peak_tflops,
                    "gpus": args.gpus,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.bundle is not None:
        result["bundle"] = bundle_summary(args.bundle)
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        if "train" not in args.skip:
            # Both layouts, each in its own process; "train" is the config's (the DAG's).
            for layout in ("per_tuple", "per_image"):
                part = Path(tmp) / f"train_{layout}.json"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node", str(args.gpus), me, *child_args(args),
                       "--phase", "train", "--layout", layout, "--part", str(part)]
                limit = args.train_timeout
                if args.budget_s is not None:  # leave the embedding phase at least 40%
                    limit = min(limit, 0.3 * args.budget_s)
                key = "train" if layout == config["train"]["layout"] else f"train_{layout}"
                result[key] = run_phase(
                    f"train ({layout}, {args.gpus} rank(s))", cmd, limit, part, args.gpus,
                    lambda parts: combine_train(parts, global_batch=global_batch,
                                                per_device_cap=per_device_cap,
                                                peak_tflops=args.peak_tflops))
            result["train_layouts"] = layout_ratio(result, config["train"]["layout"])
        if "embed" not in args.skip:
            part = Path(tmp) / "embed.json"
            cmd = [sys.executable, me, *child_args(args), "--phase", "embed",
                   "--part", str(part)]
            limit = args.embed_timeout
            if args.budget_s is not None:  # leave the prediction phase its share
                limit = max(30.0, min(limit, 0.6 * (args.budget_s
                                                    - (time.perf_counter() - started))))
            result["embed"] = run_phase("embed", cmd, limit, part)
        if "predict" not in args.skip:
            part = Path(tmp) / "predict.json"
            cmd = [sys.executable, me, *child_args(args), "--phase", "predict",
                   "--part", str(part)]
            limit = args.embed_timeout
            if args.budget_s is not None:
                limit = max(30.0, min(limit, args.budget_s - (time.perf_counter() - started)))
            result["predict"] = run_phase("predict", cmd, limit, part)
    for name in ("train", "embed", "predict"):
        if (result.get(name) or {}).get("device"):
            result["device"] = result[name]["device"]
        if (result.get(name) or {}).get("parameters"):
            result["model"] = result[name]["parameters"]
    result.setdefault("device", {"type": "unknown"})
    result["phases"] = {key: phase_summary(key, result[key]) for key in PHASE_KEYS
                        if key in result}
    result["failed"] = {key: p["why"] for key, p in result["phases"].items() if not p["ok"]}
    result["ok"] = not result["failed"]
    result["seconds"] = time.perf_counter() - started

    from skinground.core.io import write_json

    write_json(args.out, result)
    for line in summary_lines(result):
        print(line)
    print(f"{'ok' if result['ok'] else 'NOT ok'}: {args.out} ({result['seconds']:.0f} s)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
