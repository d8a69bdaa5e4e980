"""Benchmark: prefix-shared embedding extraction vs one forward per (image, question).

Builds the demo's tiny Qwen2-VL (config.yaml ``model.tiny``), renders synthetic lesion tiles,
takes the 16 questions of config.yaml, and times ``reference.naive_embeddings`` against
``embed.prefix_shared_embeddings`` in the same process (warm-up first, best of ``--repeats``).
Checks that they agree and writes ``bench/results/prefix_sharing.json`` atomically.

    python bench/prefix_sharing.py [--images 32] [--batch-images 8] [--native] [--threads 1]

On a CPU shared with other jobs, pass ``--threads 1``: torch's default (one thread per core)
spin-waits when the cores are oversubscribed and then runs up to 20x slower, both ways.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from skinground.core.config import load
from skinground.core.io import write_json
from skinground.demo import tiny
from skinground.demo.lesions import render_tile
from skinground.demo.synthetic import tile_size
from skinground.model import embed, loading

from reference import naive_embeddings
from timing import machine

REPO = Path(__file__).resolve().parents[1]


def tiles(n: int, seed: int) -> list[Image.Image]:
    """``n`` synthetic lesion tiles, 61-239 px (SLICE-3D's size distribution)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(render_tile(rng, tile_size(rng)).rgb) for _ in range(n)]


def timed(fn, repeats: int) -> tuple[list[float], tuple]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def torch_machine() -> dict:
    return machine(processor=platform.processor() or platform.machine(),
                   torch=torch.__version__, transformers=transformers.__version__,
                   torch_threads=torch.get_num_threads())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each method (best)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--native", action="store_true",
                    help="native resolution within config.yaml's min/max pixels instead of "
                         "the demo's fixed image_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "prefix_sharing.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = load([args.config])
    questions = [a["question"] for a in config["attributes"].values()]
    token = config["embed"]["h_ima_token"]  # where h_im,a is read, both ways
    dims = dict(config["model"]["tiny"])
    images = tiles(args.images, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = [f"{q} {v}" for q in questions for v in ("12.34", "0.57", "-1.25", "250.10")]
        model_dir = tiny.build_tiny_qwen2vl(Path(tmp) / "qwen2vl", corpus=corpus, **dims)
        if args.native:
            pixels = {"min_pixels": config["model"]["min_pixels"],
                      "max_pixels": config["model"]["max_pixels"]}
        else:
            pixels = {"image_size": dims["image_size"]}
        model, processor = loading.load_mllm(model_dir, **pixels)

    def naive():
        return naive_embeddings(model, processor, images, questions, token=token)

    def shared():
        return embed.prefix_shared_embeddings(model, processor, images, questions,
                                              batch_images=args.batch_images, token=token)

    # Warm-up (allocator, kernels, tokenizer caches).
    naive_embeddings(model, processor, images[:2], questions, token=token)
    embed.prefix_shared_embeddings(model, processor, images[:2], questions,
                                   batch_images=args.batch_images, token=token)
    t_naive, (n_im, n_ima) = timed(naive, args.repeats)
    t_shared, (s_im, s_ima) = timed(shared, args.repeats)
    diff_im = float((n_im - s_im).abs().max())
    diff_ima = float((n_ima - s_ima).abs().max())
    best_naive, best_shared = min(t_naive), min(t_shared)
    n = len(images)
    result = {
        "images": n, "questions": len(questions), "batch_images": args.batch_images,
        "pixels": pixels, "image_sizes_px": sorted({im.width for im in images}),
        "repeats": args.repeats,
        "seconds": {"naive": best_naive, "prefix_shared": best_shared},
        "seconds_all": {"naive": t_naive, "prefix_shared": t_shared},
        "seconds_median": {"naive": statistics.median(t_naive),
                           "prefix_shared": statistics.median(t_shared)},
        "images_per_s": {"naive": n / best_naive, "prefix_shared": n / best_shared},
        "speedup": best_naive / best_shared,
        "max_abs_diff": {"h_im": diff_im, "h_ima": diff_ima},
        "dtype": str(model.dtype), "device": str(model.device),
        "model": {k: v for k, v in dims.items() if k != "seed"},
        "torch_threads": torch.get_num_threads(), "machine": torch_machine(),
    }
    write_json(args.out, result)
    print(f"{n} images x {len(questions)} questions, batch {args.batch_images}: "
          f"naive {best_naive:.2f} s ({n / best_naive:.1f} img/s), prefix-shared "
          f"{best_shared:.3f} s ({n / best_shared:.1f} img/s), speed-up "
          f"{result['speedup']:.1f}x, max |diff| h_im {diff_im:.2e} h_ima {diff_ima:.2e}"
          f" -> {args.out}")
    return result


if __name__ == "__main__":
    main()
