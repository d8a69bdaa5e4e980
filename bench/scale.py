"""Benchmark: the paper's run rehearsed at scale through the real rules: time and peak memory
per rule at several sizes, fitted and extrapolated to the paper's 282,564 x 3,584.

Two halves, each in a fresh copy of the workflow (``--workdir``, default a temporary folder):

- **Data** (``manifest``, ``split``, ``tuples``): a SLICE-3D-shaped cohort
  (``synthetic.paper_shaped_cohort``: 1,042 patients, heavy-tailed images per patient) with
  all 55 CSV columns and one tiny JPEG per image in the HDF5, at ``--data-sizes`` images (the
  last is SLICE-3D's 401,059), run through the rules with ``config.yaml``'s split and tuples.
- **Retrieval** (``merge_embeddings``, ``build_index``, ``retrieve`` for all five methods,
  ``retrieve_groups`` for every group method, ``evaluate``, ``evaluate_groups``, ``figures``,
  ``figure_groups``): at ``--sizes`` train images (test images in the paper's ratio,
  118,495 / 282,564), from embedding shards written in the DAG's own shard format
  (``shards.write_shard``: random float16 vectors, d = 3,584 for Qwen2-VL-7B and each
  encoder's own, 768 for MONET), ``config.yaml``'s 64 shards per (model, split). Only the
  upstream rules are left out (``--allowed-rules``): Snakemake takes the shards as given.

``--attributes`` of the 16 (default 2, with one group of them) keep the searches within a
session on 2 cores: every retrieval job holds one space at a time, so its peak does not depend
on the number of attributes (``tests/test_spaces.py`` checks it), while its time is one search
per space and scales with them.

Per rule: the largest peak of its jobs (each job's own high-water mark, ``VmHWM``, logged by
``script.run``; Snakemake's sampled ``max_rss`` is recorded beside it) and the wall time of its
slowest job, then a least-squares line ``peak = a + b x`` over the sizes, with ``x`` what the
rule's memory grows with (``skinground.cost.memory``), evaluated at the paper's ``x``. The memory
model's own prediction is written beside each measurement.

    python bench/scale.py [--sizes 25000 50000 100000] [--data-sizes 100000 200000 401059]

Writes ``bench/results/scale.json``; ``python bench/readme.py`` regenerates the paper-scale
section of docs/cost-and-scale.md from it.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import yaml
from PIL import Image

from skinground.core import outputs
from skinground.core.config import load
from skinground.core.io import read_lines, write_json
from skinground.core.outputs import IMAGE_SPACE, Results
from skinground.core.plan import embed_models, group_space
from skinground.cost import memory
from skinground.cost.flops import encoder_specs
from skinground.cost.memory import (
    GPU_BYTES,
    PAPER_TEST,
    PAPER_TRAIN,
    MiB,
    Workload,
    evaluation_rows,
    group_rows,
    profile_mem_mb,
    rule_peaks,
)
from skinground.data.attributes import ID_COLUMN, METADATA_COLUMNS, PAPER_ATTRIBUTES
from skinground.data.shards import shard_ids, write_shard
from skinground.demo.synthetic import SLICE3D_IMAGES, SLICE3D_PATIENTS

from demo_dag import copy_workflow
from reference import paper_shaped_cohort
from timing import machine

REPO = Path(__file__).resolve().parents[1]
QWEN_WIDTH = 3584
RETRIEVAL_RULES = ["merge_embeddings", "build_index", "retrieve", "retrieve_groups", "evaluate",
                   "evaluate_groups", "figures", "figure_groups"]
DATA_RULES = ["manifest", "split", "tuples"]
PEAK = re.compile(r"peak memory \(max RSS\): ([\d.]+) MiB")


# --------------------------------------------------------------------------- inputs


def driver(rule: str, w: Workload) -> float:
    """What a measured rule's memory grows with (the fit's x)."""
    base = rule.split(":")[0]
    if base in ("manifest", "split"):
        return w.images
    if base == "tuples":
        return w.train_images
    if base in ("evaluate", "figures"):
        return evaluation_rows(w)
    if base in ("evaluate_groups", "figure_groups"):
        return group_rows(w)
    return w.train_images


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (180, 120, 100)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def write_dataset(folder: Path, n_images: int, seed: int) -> tuple[Path, Path]:
    """A SLICE-3D-shaped cohort of ``n_images`` (patients in SLICE-3D's proportion) as
    ``train-metadata.csv`` (55 columns, random attribute values) and ``train-image.hdf5``."""
    folder.mkdir(parents=True, exist_ok=True)
    n_patients = max(20, round(SLICE3D_PATIENTS * n_images / SLICE3D_IMAGES))
    cohort = paper_shaped_cohort(seed, n_patients=n_patients, n_images=n_images,
                                 n_malignant=max(3, round(393 * n_images / SLICE3D_IMAGES)))
    rng = np.random.default_rng(seed)
    columns = {}
    for col in METADATA_COLUMNS:
        if col in cohort.columns:
            columns[col] = cohort[col]
        elif col in PAPER_ATTRIBUTES:
            columns[col] = pl.Series(col, np.round(rng.lognormal(2.0, 0.6, n_images), 4))
        else:
            columns[col] = pl.Series(col, [""] * n_images)
    csv_path = folder / "train-metadata.csv"
    pl.DataFrame(columns).select(METADATA_COLUMNS).write_csv(csv_path)
    h5_path = folder / "train-image.hdf5"
    jpeg = np.bytes_(tiny_jpeg())
    with h5py.File(h5_path, "w") as h5:
        for isic_id in cohort[ID_COLUMN].to_list():
            h5.create_dataset(isic_id, data=jpeg)
    return csv_path, h5_path


def bench_config(run: str, csv_path: Path, h5_path: Path, stand_in: Path,
                 attributes: list[str] | None, repo_config: dict) -> dict:
    """config.yaml's run on these files, models at stand-in folders (never loaded: the model
    rules do not run). ``attributes``: only these (one group of them), else all 16 and the
    configured groups. Written over the work copy's config.yaml: a second --configfile can
    add keys but not remove attributes."""
    config = copy.deepcopy(repo_config)
    config["run"] = run
    config["data"].update(metadata=str(csv_path), images=str(h5_path))
    config["model"]["base"] = str(stand_in)
    for encoder in config["model"]["encoders"].values():
        encoder["path"] = str(stand_in)
    if attributes is not None:
        attrs = {a: repo_config["attributes"][a] for a in attributes}
        labels = " and ".join(spec["label"] for spec in attrs.values())
        config["attributes"] = attrs
        config["data"]["zero_is_missing"] = [a for a in config["data"]["zero_is_missing"]
                                             if a in attrs]
        config["retrieve"]["groups"] = {"pair": {
            "attributes": attributes, "question": f"What are the {labels} of the lesion?"}}
        config["figures"]["fig3_attribute"] = attributes[0]
    return config


def encoder_width_table(config: Mapping[str, Any]) -> dict[str, int]:
    """Each encoder's embedding width (its known architecture: the stand-in folders hold none)."""
    return {name: spec.embedding for name, spec in encoder_specs(config["model"]).items()}


def write_shards(results: Path, config: dict) -> dict:
    """Random float16 embedding shards, in the DAG's format and paths, for every (model, split,
    shard) and the group shards; returns the widths."""
    n_shards = int(config["embed"]["shards"])
    attributes = list(config["attributes"])
    groups = [group_space(g) for g in config["retrieve"]["groups"]]
    rng = np.random.default_rng(0)
    widths = encoder_width_table(config)
    for split in ("train", "test"):
        ids = read_lines(results / "split" / f"{split}.txt")
        for s in range(n_shards):
            part = shard_ids(ids, n_shards, s)

            def random(d, part=part):
                return rng.standard_normal((len(part), d), dtype=np.float32).astype(np.float16)

            for model in embed_models(config):
                d = widths.get(model, QWEN_WIDTH)
                spaces = [IMAGE_SPACE, *attributes] if model == "tuned" else [IMAGE_SPACE]
                write_shard(results / outputs.fill(outputs.EMBED_SHARD, model=model, split=split,
                                               shard=s),
                            part, {sp: random(d) for sp in spaces})
            write_shard(results / outputs.fill(outputs.GROUP_SHARD, split=split, shard=s), part,
                        {g: random(QWEN_WIDTH) for g in groups})
    return {"qwen": QWEN_WIDTH, **widths}


# --------------------------------------------------------------------------- running


def snakemake(work: Path, config: dict, targets: list[str], *, allowed=None,
              timeout: float = 7200) -> float:
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                                      encoding="utf-8")
    cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--quiet", "rules"]
    if allowed:
        cmd += ["--allowed-rules", *allowed]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"snakemake failed in {work}:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-6000:]}")
    return time.perf_counter() - t0


def measured_jobs(results: Path) -> list[dict]:
    """Every job with a benchmark file: its rule (from the path), wildcards-ish name, seconds,
    Snakemake's sampled max_rss (MiB), and the exact peak from its log (MiB)."""
    jobs = []
    for tsv in sorted((results / outputs.BENCHMARKS).rglob("*.tsv")):
        rel = tsv.relative_to(results / outputs.BENCHMARKS).with_suffix("").as_posix()
        with open(tsv, newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rule, name = rule_of(rel)
        log = log_of(results, rule, name)
        peaks = PEAK.findall(log.read_text()) if log and log.exists() else []
        jobs.append({"rule": rule, "job": name, "seconds": float(row["s"]),
                     "max_rss_mib_sampled": _num(row.get("max_rss")),
                     "peak_mib": float(peaks[-1]) if peaks else None})
    return jobs


def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def rule_of(rel: str) -> tuple[str, str]:
    """benchmarks/<rel>.tsv -> (rule, job name), as the rules name their benchmark files."""
    head, _, tail = rel.partition("/")
    if head == "merge":
        return "merge_embeddings", tail
    if head == "index":
        return "build_index", tail
    if head == "retrieve":
        return ("retrieve_groups", tail[len("groups_"):]) if tail.startswith("groups_") \
            else ("retrieve", tail)
    return rel, rel


def log_of(results: Path, rule: str, name: str) -> Path | None:
    logs = results / "logs"
    return {
        "merge_embeddings": logs / "embed" / f"merge_{name}.log",
        "build_index": logs / "index" / f"{name}.log",
        "retrieve": logs / "retrieve" / f"{name}.log",
        "retrieve_groups": logs / "retrieve" / f"groups_{name}.log",
    }.get(rule, logs / f"{rule}.log")


def fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares ``y = a + b x``; with its largest relative residual."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(x, y, 1) if len(set(xs)) > 1 else (0.0, float(y.mean()))
    resid = np.abs(a + b * x - y) / np.maximum(y, 1e-9)
    return {"a": float(a), "b": float(b), "max_rel_residual": float(resid.max())}


def check_measured(measured: Mapping[str, Mapping], config: Mapping[str, Any],
                   attributes: Sequence[str], *, width: int, encoder_widths: Mapping[str, int],
                   paper: Workload, profile: Mapping[str, Any] | None = None,
                   site: Mapping[str, Any] | None = None) -> dict:
    """Each rule's measured peaks beside the model's at the same sizes,
    the linear fit of the measurements extrapolated to the paper's workload, and the model's
    paper-scale peak (host, and GPU for the GPU rules), each beside the profile's mem_mb and the
    A6000's 48 GB. ``measured``: rule -> {"sizes": [...], "peak_mib": [...], ...} (sizes:
    train images for the retrieval rules, images for the data rules)."""
    gpu_rules = {r for r, v in ((profile or {}).get("set-resources") or {}).items()
                 if (v or {}).get("gpu")}
    paper_peaks = rule_peaks(paper)
    bench = replace(paper, attributes=len(attributes), group_sizes=(len(attributes),),
                    width=width, encoder_widths=encoder_widths)
    ratio = PAPER_TEST / PAPER_TRAIN
    out = {}
    for rule, entry in measured.items():
        data_rule = rule in ("manifest", "split", "tuples")
        workloads = []
        for size in entry["sizes"]:
            if data_rule:  # sizes are all images; the paper's 16 attributes
                train = round(size * PAPER_TRAIN / (PAPER_TRAIN + PAPER_TEST))
                workloads.append(replace(paper, train_images=train, test_images=size - train))
            else:
                workloads.append(replace(bench, train_images=size,
                                         test_images=round(size * ratio)))
        peaks = rule_peaks(workloads[0])
        if rule not in peaks:
            continue
        model = [rule_peaks(x)[rule].host / MiB for x in workloads]
        xs = [driver(rule, x) for x in workloads]
        ys = list(entry["peak_mib"])
        line = fit(xs, ys)
        b, a = line["b"], line["a"]
        paper_x = driver(rule, paper)
        fitted = a + b * paper_x
        model_paper = paper_peaks[rule].host / MiB
        mem_mb = profile_mem_mb(profile, site, rule.split(":")[0])
        on_gpu = rule.split(":")[0] in gpu_rules
        out[rule] = {
            **entry,
            "model_mib": model,
            "measured_over_model": [y / m for y, m in zip(ys, model, strict=True)],
            "driver": xs,
            "fit_mib": {"a": a, "b_per_unit": b, "paper_driver": paper_x, "paper_mib": fitted},
            "model_paper_mib": model_paper,
            "model_paper_gpu_gb": paper_peaks[rule].gpu / 1e9 if on_gpu else None,
            "mem_mb": mem_mb,
            "fits": (mem_mb is not None and mem_mb * 1e6 >= max(fitted, model_paper) * MiB
                     and (not on_gpu or paper_peaks[rule].gpu <= GPU_BYTES)),
        }
    return out


# --------------------------------------------------------------------------- the halves


def data_half(work: Path, sizes: list[int], repo_config: dict) -> list[dict]:
    out = []
    for n in sizes:
        run = f"scale_data_{n}"
        csv_path, h5_path = write_dataset(work / "data" / run, n, seed=0)
        stand_in = work / "models"
        stand_in.mkdir(exist_ok=True)
        cfg = bench_config(run, csv_path, h5_path, stand_in, None, repo_config)
        results = Results.of_run(run, work).root
        wall = snakemake(work, cfg, [str(Results.of_run(run) / outputs.TUPLES)])
        split = yaml.safe_load((results / outputs.SPLIT_SUMMARY).read_text())
        tuples = yaml.safe_load((results / outputs.TUPLES_SUMMARY).read_text())
        jobs = measured_jobs(results)
        out.append({"images": n, "wall_seconds": wall, "split": split,
                    "tuples": tuples["tuples"], "jobs": jobs})
        print(f"data {n}: {wall:.0f} s, test images {split['test']['images']}, "
              f"tuples {tuples['tuples']}", flush=True)
    return out


def retrieval_half(work: Path, sizes: list[int], attributes: list[str],
                   repo_config: dict) -> list[dict]:
    out = []
    for n_train in sizes:
        run = f"scale_{n_train}"
        n_images = round(n_train * (PAPER_TRAIN + PAPER_TEST) / PAPER_TRAIN)
        csv_path, h5_path = write_dataset(work / "data" / run, n_images, seed=1)
        stand_in = work / "models"
        stand_in.mkdir(exist_ok=True)
        cfg = bench_config(run, csv_path, h5_path, stand_in, attributes, repo_config)
        results = Results.of_run(run, work).root
        snakemake(work, cfg, [str(Results.of_run(run) / outputs.SPLIT_SUMMARY)])
        t0 = time.perf_counter()
        write_shards(results, cfg)
        shards_seconds = time.perf_counter() - t0
        targets = [str(Results.of_run(run) / t) for t in (
            outputs.SUMMARY_CSV, outputs.fill(outputs.FIGURE, name="fig4_percentiles", ext="png"),
            outputs.GROUP_SUMMARY_CSV, outputs.fill(outputs.FIGURE, name="fig5_groups", ext="png"))]
        wall = snakemake(work, cfg, targets, allowed=RETRIEVAL_RULES)
        split = yaml.safe_load((results / outputs.SPLIT_SUMMARY).read_text())
        jobs = measured_jobs(results)
        disk = sum(p.stat().st_size for p in results.rglob("*") if p.is_file())
        out.append({"train_images": split["train"]["images"],
                    "test_images": split["test"]["images"], "wall_seconds": wall,
                    "shards_seconds": shards_seconds, "disk_bytes": disk, "jobs": jobs})
        print(f"retrieval {n_train}: {wall:.0f} s, {len(jobs)} jobs", flush=True)
        # keep the disk bounded: the next size needs its own
        shutil.rmtree(results / "embed")
        shutil.rmtree(results / "index")
    return out


def per_rule(runs: list[dict], size_key: str) -> dict:
    """Per rule (retrieve: per method): the sizes, the largest peak and slowest job at each."""
    table: dict[str, dict] = {}
    for run in runs:
        for job in run["jobs"]:
            key = job["rule"] if job["rule"] not in ("retrieve", "retrieve_groups") \
                else f"{job['rule']}:{job['job']}"
            entry = table.setdefault(key, {"sizes": [], "peak_mib": [], "seconds": [],
                                           "max_rss_mib_sampled": []})
            if not entry["sizes"] or entry["sizes"][-1] != run[size_key]:
                entry["sizes"].append(run[size_key])
                entry["peak_mib"].append(job["peak_mib"] or 0.0)
                entry["seconds"].append(job["seconds"])
                entry["max_rss_mib_sampled"].append(job["max_rss_mib_sampled"] or 0.0)
            else:
                entry["peak_mib"][-1] = max(entry["peak_mib"][-1], job["peak_mib"] or 0.0)
                entry["seconds"][-1] = max(entry["seconds"][-1], job["seconds"])
                entry["max_rss_mib_sampled"][-1] = max(entry["max_rss_mib_sampled"][-1],
                                                       job["max_rss_mib_sampled"] or 0.0)
    return table


def collect(work: Path) -> tuple[list[dict], list[dict]]:
    """The data and retrieval runs already in ``work`` (their benchmark files and logs), for
    ``--collect``; wall times are not known there (None)."""
    data, retrieval = [], []
    for results in sorted((work / "results").glob("scale_data_*"),
                          key=lambda p: int(p.name.rsplit("_", 1)[1])):
        split = json.loads((results / "split" / "summary.json").read_text())
        tuples = json.loads((results / "tuples" / "summary.json").read_text())
        data.append({"images": int(results.name.rsplit("_", 1)[1]), "wall_seconds": None,
                     "split": split, "tuples": tuples["tuples"],
                     "jobs": measured_jobs(results)})
    for results in sorted((work / "results").glob("scale_[0-9]*"),
                          key=lambda p: int(p.name.split("_")[1])):
        split = json.loads((results / "split" / "summary.json").read_text())
        retrieval.append({"train_images": split["train"]["images"],
                          "test_images": split["test"]["images"], "wall_seconds": None,
                          "jobs": measured_jobs(results)})
    return data, retrieval


def check(data: list[dict], retrieval: list[dict], attributes: list[str],
          repo_config: dict) -> dict:
    """Per rule: the measurements beside the memory model's, fitted and extrapolated."""
    rules = {**per_rule(data, "images"),
             **{r: v for r, v in per_rule(retrieval, "train_images").items()
                if r not in DATA_RULES}}
    load = lambda path: yaml.safe_load(path.read_text())  # noqa: E731
    return check_measured(rules, repo_config, attributes, width=QWEN_WIDTH,
                                 encoder_widths=encoder_width_table(repo_config),
                                 paper=memory.Workload.paper(repo_config),
                                 profile=load(REPO / "profiles" / "default" / "config.yaml"),
                                 site=load(REPO / "profiles" / "slurm" / "config.yaml"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000],
                   help="train images of the retrieval half")
    p.add_argument("--data-sizes", type=int, nargs="+", default=[100_000, 200_000, 401_059],
                   help="images of the data half")
    p.add_argument("--attributes", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    p.add_argument("--skip-data", action="store_true")
    p.add_argument("--recheck", action="store_true",
                   help="only recompute the model's check of the measurements in --out")
    p.add_argument("--collect", action="store_true",
                   help="write --out from the runs already in --workdir (no new runs)")
    p.add_argument("--note", action="append", default=[],
                   help="a remark on how the measurement was made (repeatable; kept in --out)")
    args = p.parse_args(argv)
    repo_config = load([REPO / "config.yaml"])
    if args.recheck:
        bench = json.loads(args.out.read_text())
        bench["rules"] = check(bench["data"], bench["retrieval"], bench["attributes"],
                               repo_config)
        bench["notes"] = [*bench.get("notes", []), *args.note]
        write_json(args.out, bench)
        print(f"rewrote {args.out}")
        return
    if args.collect:
        data, retrieval = collect(args.workdir)
        write_json(args.out, {
            "attributes": list(repo_config["attributes"])[:args.attributes],
            "width": QWEN_WIDTH, "retrieval": retrieval, "data": data,
            "rules": check(data, retrieval, list(repo_config["attributes"])[:args.attributes],
                           repo_config),
            "seconds": None, "notes": args.note, "machine": machine(),
            "command": "python bench/scale.py " + " ".join(sys.argv[1:] if argv is None
                                                          else argv)})
        print(f"wrote {args.out}")
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="skinground-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_workflow(work)
    attributes = list(repo_config["attributes"])[:args.attributes]
    t0 = time.perf_counter()
    data = [] if args.skip_data else data_half(work, args.data_sizes, repo_config)
    retrieval = retrieval_half(work, args.sizes, attributes, repo_config)
    bench = {
        "attributes": attributes,
        "width": QWEN_WIDTH,
        "retrieval": retrieval,
        "data": data,
        "rules": check(data, retrieval, attributes, repo_config),
        "seconds": time.perf_counter() - t0,
        "notes": args.note,
        "machine": machine(),
        "command": "python bench/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    write_json(args.out, bench)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
