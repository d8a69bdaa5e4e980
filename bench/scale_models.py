"""Benchmark: the model rules' host memory against the memory model, at three model sizes.

The 7B cannot run here (no GPU, no weights), but what its jobs hold on the host can be checked
where it grows: the weights, loaded once. Qwen2-VL models of three widths (random weights,
the real classes, a 32,768-row vocabulary; built with ``tiny.build_tiny_qwen2vl``) run the
real ``embed_shard`` and ``predict_shard`` rules (the untuned model: no training needed) on a
small SLICE-3D-shaped dataset, in fp32 on CPU; each job's exact peak (its log) is compared
with ``memory.model_job_host`` for that model's parameter count at 4 bytes each.

    python bench/scale_models.py

Writes ``bench/results/scale_models.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from scale import PEAK, bench_config, snakemake, write_dataset

from skinground.core.config import load
from skinground.core.io import write_json
from skinground.cost import memory
from skinground.cost.flops import QwenSpec, param_counts
from skinground.demo import tiny

from demo_dag import copy_workflow
from timing import machine

REPO = Path(__file__).resolve().parents[1]
VOCAB = 32_768
#: Decoder width, MLP, layers, heads, KV heads; vision depth, width, heads (head dims 64).
SIZES = [
    dict(text_hidden=256, intermediate=1024, layers=4, heads=4, kv_heads=2,
         vision_depth=2, vision_embed=128, vision_heads=2),
    dict(text_hidden=512, intermediate=2048, layers=8, heads=8, kv_heads=2,
         vision_depth=4, vision_embed=256, vision_heads=4),
    dict(text_hidden=1024, intermediate=4096, layers=12, heads=16, kv_heads=4,
         vision_depth=8, vision_embed=512, vision_heads=8),
]


def spec_of(dims: dict) -> QwenSpec:
    return QwenSpec(vocab_size=VOCAB, mrope_section=(8, 12, 12), **dims)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale_models.json")
    a = ap.parse_args(argv)
    repo_config = load([REPO / "config.yaml"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_workflow(work)
        for k, dims in enumerate(SIZES):
            run = f"scale_model_{k}"
            base = tiny.build_tiny_qwen2vl(work / "models" / run, corpus=["0.1 1.2 ?"],
                                           vocab_rows=VOCAB, mrope_section=(8, 12, 12),
                                           image_size=None, min_pixels=3136,
                                           max_pixels=262144, **dims)
            csv_path, h5_path = write_dataset(work / "data" / run, a.images, seed=k)
            cfg = bench_config(run, csv_path, h5_path, base, None, repo_config)
            cfg["predict"].update(models=["tuned", "untuned"], shards=1, max_new_tokens=4)
            cfg["embed"].update(shards=1)
            targets = [f"results/{run}/embed/untuned/test/shard0.npz",
                       f"results/{run}/predict/untuned/shard0.parquet"]
            t0 = time.perf_counter()
            snakemake(work, cfg, targets, allowed=["manifest", "split", "embed_shard",
                                                   "predict_shard"])
            wall = time.perf_counter() - t0
            spec = spec_of(dims)
            params = param_counts(spec)["total"]
            logs = work / "results" / run / "logs"
            for rule, log in (("embed_shard", logs / "embed" / "untuned_test_shard0.log"),
                              ("predict_shard", logs / "predict" / "untuned_shard0.log")):
                peak = float(PEAK.findall(log.read_text())[-1])
                model = memory.model_job_host(spec, 4) / memory.MiB
                rows.append({"rule": rule, "size": k, "dims": dims, "parameters": params,
                             "peak_mib": peak, "model_mib": model,
                             "measured_over_model": peak / model})
                print(f"{rule} {params / 1e6:.0f} M parameters: {peak:.0f} MiB measured, "
                      f"{model:.0f} MiB model", flush=True)
            print(f"size {k}: {wall:.0f} s", flush=True)
    result = {"benchmark": "model rules' host peak vs skinground.cost.memory, three model sizes "
                           "(fp32, CPU)", "vocab_rows": VOCAB, "jobs": rows,
              "machine": machine(),
              "command": "python bench/scale_models.py " + " ".join(
                  sys.argv[1:] if argv is None else argv)}
    write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
