"""The cost model's report and command line (``python -m skinground.cost``, see
:mod:`skinground.cost.estimate`): the estimate as a table, with the model loading and the
recommended runtimes, the memory of every rule beside its profile's and the run's disk
(:mod:`skinground.cost.disk`), or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skinground.core import outputs
from skinground.core.config import load
from skinground.cost import calibration, memory, runtime
from skinground.cost.estimate import Assumptions, estimate_with_profiles
from skinground.cost.flops import PAPER_TEST_IMAGES, PAPER_TRAIN_IMAGES


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
        f"+ {a['answer_tokens']:.1f}-token answer.")
    if a.get("tokens_measured"):
        lines.append(f"Token counts measured with Qwen2-VL-7B's tokenizer: "
                     f"{a['prefix_text_tokens']:g} template tokens around the image, "
                     f"{a['suffix_tokens']:.1f} per question, {a['answer_tokens']:.2f} per "
                     "answer.")
    else:
        lines.append(f"Token counts assumed (no {outputs.TOKEN_MEASUREMENT}).")
    measured = result["measured"]
    if measured.get("used"):
        lines.append(f"MFU measured on {measured.get('gpu')} ({outputs.GPU_MEASUREMENT}), "
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
    lines += ["", f"This config trains in the `{wl['layout']}` layout"
              + (" (the paper's: the tuples shuffled, one sequence per tuple)."
                 if wl["layout"] == "per_tuple" else " (the image-once speed option)."),
              f"wall-clock h: the stage alone, its jobs spread over the {a['gpus']} GPUs "
              "(a job uses its GPUs/job); the total's is the bound with every GPU busy. h per job: "
              "one job's wall-clock time, (limit): its runtime in the workflow profile, hours.",
              "Rows with rule '-' or not the configured training layout are not in the DAG. "
              "The naive layout: one sequence per tuple in training (per_tuple), one sequence "
              "per (image, question) in prediction and embedding (the naive rows, plus "
              "untuned, the image encoders, index and retrieval as in the DAG).",
              f"The DAG takes {result['dag_over_naive']:.2f} of the naive layout's GPU-hours "
              f"({total['gpu_hours']:,.1f} vs {naive['gpu_hours']:,.1f}); naive embedding "
              f"alone would take {result['naive_over_prefix_shared']:.1f}x the prefix-shared "
              "GPU time."]
    lines += ["", *format_loading(result), "", *format_runtimes(result["runtimes"])]
    lines += ["", *format_memory(result["memory"], wl)]
    return "\n".join(lines)


def format_loading(result: Mapping[str, Any]) -> list[str]:
    """The model loading in the GPU-hours above: jobs x seconds per model."""
    loading = result["loading"]
    parts = [f"{m['jobs']} jobs x {m['seconds']:.1f} s ({m['model']}, {m['gb']:.1f} GB)"
             for m in loading["models"]]
    hours = sum(m["gpu_hours"] for m in loading["models"])
    return [f"Model loading: {'; '.join(parts)}: {hours:,.2f} of the DAG's "
            f"{result['total']['gpu_hours']:,.1f} GPU-hours, in the GPU-hours and hours per job "
            "above. Each model job first reads its weights, its GPUs held, at an assumed "
            f"{loading['storage_bandwidth'] / 1e9:g} GB/s (`storage_bandwidth`: a shared "
            "filesystem, per job; not measured)."]


def format_runtimes(rows) -> list[str]:
    """The recommended runtime of each model rule beside its profile's."""
    lines = [f"Recommended runtime per job (minutes): the estimate of the rule's slowest job "
             f"(compute + loading) x {runtime.SAFETY:g}, rounded up to {runtime.STEP_MIN} min, "
             f"at least {runtime.FLOOR_MIN}; beside the workflow profile's `runtime`. Retrieve "
             "(its re-rank runs on the CPU) and the CPU rules are not estimated here: their "
             "times are measured by the scale benchmark (docs/cost-and-scale.md).", "",
             "| rule | h per job (estimate) | recommended min | profile min |",
             "|---|---:|---:|---:|"]
    for r in rows:
        profile = f"{r['profile_min']:,.0f}" if r["profile_min"] else "-"
        lines.append(f"| {r['rule']} | {r['hours_per_job']:,.2f} | {r['recommended_min']:,} | "
                     f"{profile} |")
    return lines


def format_disk(disk: Mapping[str, Any], *, heading: bool = True) -> str:
    """The disk model's table: every output by its template, and the total."""
    lines = []
    if heading:
        lines += [f"Disk (skinground.cost.disk) at {disk['train_images']:,} train x "
                  f"{disk['test_images']:,} test images: every output under results/<run>/ by "
                  "its template (N train, Q test images, d the width, A attributes, G groups); "
                  "figures, small tables and logs (a few MB) left out.", ""]
    lines += ["| output | rule | files or folders | GB | what it holds |",
              "|---|---|---:|---:|---|"]
    for r in disk["items"]:
        lines.append(f"| `{r['output']}` | {r['rule']} | {r['files']:,} | {r['gb']:,.2f} | "
                     f"{r['terms']} |")
    files = sum(r["files"] for r in disk["items"])
    lines.append(f"| **total** | | {files:,} | **{disk['total_gb']:,.1f}** | nothing is "
                 "temp(): also the run's peak |")
    biggest = sorted(disk["items"], key=lambda r: -r["bytes"])[:4]
    lines += ["", "The largest: " + ", ".join(f"`{r['output']}` {r['gb']:,.1f} GB"
                                              for r in biggest) + "."]
    return "\n".join(lines)


def scale_words(train: int, test: int, config: Mapping[str, Any]) -> str:
    """What the estimate's image counts are."""
    if (train, test) == (PAPER_TRAIN_IMAGES, PAPER_TEST_IMAGES):
        return (f"the paper's {train:,} train + {test:,} test images (SLICE-3D's "
                f"{train + test:,})")
    if (train, test) == runtime.config_images(config):
        share = config["split"]["patient_fraction"]
        return (f"{train:,} train + {test:,} test images (what split.patient_fraction = "
                f"{share:g} of SLICE-3D's patients aims at)")
    return f"{train:,} train + {test:,} test images"


def format_scope(result: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """What the estimate is, plainly: this config at its scale, not this run's time."""
    wl, a = result["workload"], result["assumptions"]
    text = (f"**An estimate, not this run's measured time.** The cost model "
            f"(`python -m skinground.cost`) estimates this config's run at its full scale: "
            f"{scale_words(wl['train_images'], wl['test_images'], config)}, Qwen2-VL-7B "
            f"and the encoders' hub models, on {a['gpus']} A6000s. It is the same whatever "
            "this run computed on; what this run's jobs took is in its `benchmarks/`.")
    if config["model"].get("build_tiny"):
        text += (" This run is a demo: tiny stand-in models on a CPU, synthetic images. "
                 "Its own numbers say nothing of the cost below.")
    return text


def format_memory(rows, workload: Mapping[str, Any]) -> list[str]:
    """The memory model's table: each rule's host peak beside its mem_mb, GPU peak beside
    the A6000's 48 GB."""
    lines = [f"Peak memory per job (skinground.cost.memory) at "
             f"{workload['train_images']:,} train x {workload['test_images']:,} test images, "
             "d = 3,584: host beside the profile's "
             f"mem_mb (which must exceed it by {memory.MARGIN:.0%}), GPU beside the A6000's "
             f"{memory.GPU_BYTES / 1e9:.0f} GB.", "",
             "| rule | host GB | mem_mb | GPU GB | fits | what it holds |",
             "|---|---:|---:|---:|---|---|"]
    for r in rows:
        gpu = f"{r['gpu_gb']:.1f}" if r["gpu_gb"] is not None else "-"
        fits = "yes" if r["host_fits"] and r["gpu_fits"] else "**no**"
        mem = f"{r['mem_mb']:,.0f}" if r["mem_mb"] is not None else "-"
        lines.append(f"| {r['rule']} | {r['host_gb']:.2f} | {mem} | {gpu} | {fits} | "
                     f"{r['terms']} |")
    return lines


def arguments(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m skinground.cost",
                                description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", default=["config.yaml"],
                   help="config files, merged in order (default: config.yaml)")
    p.add_argument("--profile", type=Path, default=None,
                   help="workflow profile with per-rule GPUs (default: "
                        "profiles/default/config.yaml beside the first config)")
    p.add_argument("--site-profile", type=Path, default=None,
                   help="site profile with default-resources (default: profiles/slurm/config.yaml "
                        "beside the first config)")
    p.add_argument("--gpu-json", type=Path, default=None,
                   help=f"the GPU check's result (default: {outputs.GPU_MEASUREMENT} beside "
                        "the first config, when it exists)")
    p.add_argument("--no-gpu-json", action="store_true", help="ignore any measurement")
    p.add_argument("--tokens-json", type=Path, default=None,
                   help=f"the 7B tokenizer's counts (default: {outputs.TOKEN_MEASUREMENT} beside "
                        "the first config, when it exists)")
    p.add_argument("--no-tokens-json", action="store_true",
                   help="use the assumed token counts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    d = Assumptions()
    p.add_argument("--train-images", type=int, default=None,
                   help="default: the paper's 282,564, or the images of the config's "
                        "patient sample (split.patient_fraction < 1)")
    p.add_argument("--test-images", type=int, default=None, help="default: as --train-images")
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
    p.add_argument("--storage-gbps", type=float, default=d.storage_bandwidth / 1e9,
                   help="GB/s a job reads its weights at (assumed; default: %(default)g)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = arguments(argv)
    root = Path(args.configs[0]).resolve().parent
    config = load(args.configs)
    train, test = runtime.config_images(config)
    a = Assumptions(train_images=train if args.train_images is None else args.train_images,
                    test_images=test if args.test_images is None else args.test_images,
                    tuples=args.tuples, storage_bandwidth=args.storage_gbps * 1e9,
                    tile_median_px=args.tile_px,
                    tile_sigma=args.tile_sigma, gpus=args.gpus, train_mfu=args.train_mfu,
                    infer_mfu=args.infer_mfu, naive_mfu=args.naive_mfu,
                    bandwidth_efficiency=args.bandwidth_efficiency)
    if not args.no_gpu_json:
        a = calibration.apply_file(a, args.gpu_json or root / outputs.GPU_MEASUREMENT,
                                required=args.gpu_json is not None)
    if not args.no_tokens_json:
        a = calibration.apply_tokens(
            a, args.tokens_json or root / outputs.TOKEN_MEASUREMENT,
            required=args.tokens_json is not None)
    result = estimate_with_profiles(
        config, a, args.profile or root / "profiles" / "default" / "config.yaml",
        args.site_profile or root / "profiles" / "slurm" / "config.yaml")
    over = [r["stage"] for r in result["stages"] if r["in_dag"] and r["over_runtime_limit"]]
    if over and not args.json:
        print(f"warning: over the profile's runtime limit: {'; '.join(over)}", file=sys.stderr)
    short = [r["rule"] for r in result["memory"] if not (r["host_fits"] and r["gpu_fits"])]
    if short and not args.json:
        print(f"warning: over the profile's memory: {'; '.join(short)}", file=sys.stderr)
    result["configs"] = [str(c) for c in args.configs]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_scope(result, config) + "\n\n" + format_table(result) + "\n\n"
              + format_disk(result["disk"]))
    return result
