"""Benchmark: training tuples/s of the per-image (image-once) layout vs the per-tuple layout.

Builds the demo's tiny Qwen2-VL (``model.tiny`` of the merged configs, by default config.yaml +
profiles/demo/demo-config.yaml) with its LoRA adapter (``train.lora``), renders synthetic
lesion tiles and measures their attributes (W of them per tile, as ``tuples.W``), and times
full optimizer steps of ``train.per_device_batch`` tuples in both layouts, side by side in
one process, on the same batches (tuples grouped by image, as the per-image sampler gives
them): collation by the workflow's collator, forward, backward, AdamW step. Both layouts start
from the same weights; their first-batch losses and gradients are compared. Writes
``bench/results/train_layout.json`` atomically (goal: >= 4x).

    python bench/train_layout.py [--steps 20] [--repeats 3] [--threads 2]

The Trainer and DeepSpeed add the same per-step overhead to both layouts; the workflow's
``train`` rule's own steps/s are in ``results/<run>/train/summary.json``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skinground.core.config import load
from skinground.core.io import write_json
from skinground.data.answers import format_answer
from skinground.data.tuples import resolve_w
from skinground.demo import tiny
from skinground.demo.lesions import render_tile
from skinground.demo.measure import measure
from skinground.model import batches, loading
from skinground.model.lora import attach_lora

from timing import machine

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = [REPO / "config.yaml", REPO / "profiles" / "demo" / "demo-config.yaml"]
GOAL = 4.0


def tuples(config: dict, n_tuples: int, seed: int) -> list[dict]:
    """Tiles of the demo's size range with W measured attributes each, grouped by tile."""
    rng = np.random.default_rng(seed)
    attrs = config["attributes"]
    w = resolve_w(config["tuples"]["W"], len(attrs))
    synth = config["synthetic"]
    items: list[dict] = []
    k = 0
    while len(items) < n_tuples:
        tile = render_tile(rng, int(rng.integers(synth["min_px"], synth["max_px"] + 1)))
        values = measure(tile)
        image = Image.fromarray(tile.rgb)
        for name in rng.permutation(list(attrs))[:w].tolist():
            items.append({"isic_id": f"tile{k}", "image": image,
                          "question": attrs[name]["question"],
                          "answer": format_answer(values[name], attrs[name]["decimals"])})
        k += 1
    return items[:n_tuples]


def loss_fn(name: str):
    if name == "per_image":
        return lambda model, batch: batches.image_once_loss(model, batch)
    return lambda model, batch: model(**batch).loss


def run(model, processor, name: str, steps: list[list[dict]], lr: float) -> dict:
    """Optimizer steps over ``steps`` (the first ``warmup`` untimed)."""
    collate = batches.collator(name, processor)
    compute = loss_fn(name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    seconds = collate_seconds = 0.0
    for items in steps:
        t0 = time.perf_counter()
        batch = collate(items)
        t1 = time.perf_counter()
        loss = compute(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        seconds += t2 - t0
        collate_seconds += t1 - t0
    n = sum(len(b) for b in steps)
    return {"seconds": seconds, "collate_seconds": collate_seconds, "tuples": n,
            "tuples_per_s": n / seconds}


def first_batch_agreement(model, processor, items: list[dict]) -> dict:
    out = {}
    for name in batches.LAYOUTS:
        model.zero_grad(set_to_none=True)
        loss = loss_fn(name)(model, batches.collator(name, processor)(items))
        loss.backward()
        out[name] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                                   if p.requires_grad})
    model.zero_grad(set_to_none=True)
    (l1, g1), (l2, g2) = out["per_tuple"], out["per_image"]
    return {"loss_per_tuple": l1, "loss_per_image": l2, "loss_abs_diff": abs(l1 - l2),
            "max_grad_abs_diff": max(float((g1[n] - g2[n]).abs().max()) for n in g1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=Path, nargs="+", default=DEMO_CONFIGS)
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per repeat")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats (best of)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_layout.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load(args.configs)
    train_cfg, model_cfg = config["train"], config["model"]
    batch = int(train_cfg["per_device_batch"])
    items = tuples(config, (args.warmup + args.steps) * batch, args.seed)
    steps = [items[i:i + batch] for i in range(0, len(items), batch)]
    questions = [a["question"] for a in config["attributes"].values()]

    with tempfile.TemporaryDirectory() as tmp:
        base = tiny.build_tiny_qwen2vl(Path(tmp) / "qwen2vl", corpus=questions,
                                         **model_cfg["tiny"])
        model, processor = loading.load_mllm(
            base, image_size=model_cfg.get("image_size"), min_pixels=model_cfg.get("min_pixels"),
            max_pixels=model_cfg.get("max_pixels"))
    torch.manual_seed(args.seed)
    model.config.use_cache = False
    model = attach_lora(model, train_cfg["lora"]).train()
    agreement = first_batch_agreement(model, processor, steps[0])

    best: dict[str, dict] = {}
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        for name in ("per_tuple", "per_image"):
            replica = copy.deepcopy(model)
            run(replica, processor, name, steps[: args.warmup],
                float(train_cfg["learning_rate"]))
            r = run(replica, processor, name, steps[args.warmup:],
                    float(train_cfg["learning_rate"]))
            if name not in best or r["tuples_per_s"] > best[name]["tuples_per_s"]:
                best[name] = r
    ratio = best["per_image"]["tuples_per_s"] / best["per_tuple"]["tuples_per_s"]
    result = {
        "benchmark": "training tuples/s, per-image (image-once) vs per-tuple layout, demo model",
        "configs": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)
                    for p in args.configs],
        "per_device_batch_tuples": batch, "W": config["tuples"]["W"],
        "images_per_batch": float(np.mean([len({it["isic_id"] for it in b})
                                           for b in steps[args.warmup:]])),
        "timed_steps": args.steps, "repeats": args.repeats,
        "per_tuple": best["per_tuple"], "per_image": best["per_image"],
        "ratio": ratio, "goal": GOAL, "met": ratio >= GOAL,
        "agreement_first_batch": agreement,
        "machine": machine(torch=torch.__version__, torch_threads=torch.get_num_threads()),
    }
    write_json(args.out, result)
    print(f"per_image {best['per_image']['tuples_per_s']:.0f} tuples/s, per_tuple "
          f"{best['per_tuple']['tuples_per_s']:.0f} tuples/s: {ratio:.2f}x (goal >= {GOAL:g}x); "
          f"first-batch loss diff {agreement['loss_abs_diff']:.1e} -> {args.out}")
    return result


if __name__ == "__main__":
    main()
