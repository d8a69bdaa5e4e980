"""Benchmark: image-once greedy generation vs one sequence per (image, question).

Builds the demo's tiny Qwen2-VL (``model.tiny`` of the merged configs, by default config.yaml +
profiles/demo/demo-config.yaml), renders synthetic lesion tiles and generates the answers to
all configured questions for every tile both ways, side by side in one process:
``predict.generate_answers`` (the workflow's: each image's prefix once, its questions as one
batch of suffixes, one decoding loop) and ``reference.generate_per_question`` (one left-padded
``generate`` call per batch of the same number of (image, question) rows, each re-encoding
its image). Asserts that the answers are identical and writes ``bench/results/predict.json``
atomically (goal: >= 5x).

    python bench/predict.py [--images 48] [--repeats 3] [--threads 2] [--run results/demo]

By default the model is a fresh random tiny one, which answers with random tokens until
``max_new_tokens``: every row decodes the full budget, the worst case for both ways. With
``--run``, the tuned model of a finished demo run (its base and ``train/adapter``, as the
``predict_shard`` rule loads them) answers that run's test images: short numeric answers that
end at ``<|im_end|>``, as in the workflow. Both are recorded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skinground.core import outputs as out
from skinground.core.config import load
from skinground.core.io import write_json
from skinground.demo import tiny
from skinground.demo.lesions import render_tile
from skinground.model import loading

from timing import machine

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = [REPO / "config.yaml", REPO / "profiles" / "demo" / "demo-config.yaml"]
GOAL = 5.0


class Tiles:
    """An image store over rendered tiles (``read(id)`` as ``images.open_images`` gives)."""

    def __init__(self, n: int, seed: int, lo: int, hi: int):
        rng = np.random.default_rng(seed)
        self.images = {f"tile{k:03d}": Image.fromarray(
            render_tile(rng, int(rng.integers(lo, hi + 1))).rgb) for k in range(n)}

    def read(self, isic_id: str) -> Image.Image:
        return self.images[isic_id]


def main(argv=None) -> dict:
    from skinground.model.predict import generate_answers

    from reference import generate_per_question

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=Path, nargs="+", default=DEMO_CONFIGS)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats (best of)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", type=Path, default=None,
                    help="a finished demo run's results/<run>: its tuned model and test images")
    ap.add_argument("--out", type=Path, default=None,
                    help="default bench/results/predict.json (predict_tuned.json with --run)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = REPO / "bench" / "results" / ("predict_tuned.json" if args.run
                                                 else "predict.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load(args.configs)
    attributes, cfg = config["attributes"], config["predict"]
    if args.run:  # the run's own tuned model and test images
        from skinground.data.images import open_images

        run_config = load([args.run / out.RUN_CONFIG])
        attributes, cfg = run_config["attributes"], run_config["predict"]
        store = open_images(run_config["data"]["images"])
        ids = sorted((args.run / out.fill(out.SPLIT_IDS, split="test")).read_text().split()
                     )[: args.images]
        model, processor = loading.load_qwen(run_config["model"]["base"], run_config["model"],
                                            adapter=args.run / out.ADAPTER)
    else:
        store = Tiles(args.images, args.seed, config["synthetic"]["min_px"],
                      config["synthetic"]["max_px"])
        ids = list(store.images)
        with tempfile.TemporaryDirectory() as tmp:
            base = tiny.build_tiny_qwen2vl(Path(tmp) / "qwen2vl",
                                           corpus=tiny.demo_corpus(attributes),
                                           **config["model"]["tiny"])
            model, processor = loading.load_qwen(base, config["model"])
    rows = int(cfg["batch_images"]) * len(attributes)  # the same rows per batch both ways
    questions = {a: spec["question"] for a, spec in attributes.items()}
    ways = {
        "image_once": lambda: generate_answers(
            model, processor, store, ids, questions, batch_images=int(cfg["batch_images"]),
            max_new_tokens=int(cfg["max_new_tokens"])),
        "per_question": lambda: generate_per_question(
            model, processor, store, ids, questions, batch_size=rows,
            max_new_tokens=int(cfg["max_new_tokens"])),
    }
    best: dict[str, float] = {}
    answers = {}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            answers[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    identical = answers["image_once"].equals(answers["per_question"])
    ratio = best["per_question"] / best["image_once"]
    result = {
        "benchmark": "greedy answers to every question, image-once vs one sequence per "
                     "(image, question), demo model",
        "model": f"tuned, {args.run}" if args.run else "random tiny (full max_new_tokens)",
        "configs": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)
                    for p in args.configs],
        "images": args.images, "questions": len(attributes), "rows_per_batch": rows,
        "batch_images": int(cfg["batch_images"]), "max_new_tokens": int(cfg["max_new_tokens"]),
        "seconds": {"image_once": best["image_once"], "per_question": best["per_question"]},
        "answers_per_s": {k: len(ids) * len(attributes) / v for k, v in best.items()},
        "ratio": ratio, "goal": GOAL, "identical": identical,
        "met": identical and ratio >= GOAL, "repeats": args.repeats,
        "machine": machine(torch=torch.__version__, torch_threads=torch.get_num_threads()),
    }
    write_json(args.out, result)
    print(f"image-once {best['image_once']:.2f} s, per question {best['per_question']:.2f} s: "
          f"{ratio:.1f}x (goal >= {GOAL:g}x), identical answers: {identical} -> {args.out}")
    if not identical:
        sys.exit("the two ways gave different answers")
    return result


if __name__ == "__main__":
    main()
