"""Benchmark: the wall time of the whole demo DAG from a clean ``results/`` (goal <= 10 min on
2 CPU cores), with the time of each rule's jobs from Snakemake's ``benchmark:`` files.

Runs ``snakemake --profile profiles/demo`` in a fresh copy of the workflow (the checkout's own
``results/`` is left alone) and writes ``bench/results/demo_dag.json``.

    python bench/demo_dag.py
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from skinground.core import outputs as out
from skinground.core.io import write_json
from skinground.core.outputs import Results

REPO = Path(__file__).resolve().parents[1]


def copy_workflow(dest: Path) -> None:
    """The whole checkout as a commit holds it (git's tracked and not-ignored files, times
    kept; tests/conftest.py's ``copy_workflow`` for the tests), without results/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for name in {n.decode() for n in listed.stdout.split(b"\0") if n}:
        if (REPO / name).is_file():  # a deleted file is still "cached"
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


#: A benchmark file's folder under results/<run>/benchmarks/ -> its rule (the rules'
#: ``benchmark()`` names; a file at the top is named as its rule). ``groups_`` files of embed/
#: and retrieve/ are the group rules'.
FOLDER_RULES = {"embed": "embed_shard", "predict": "predict_shard", "index": "build_index",
                "merge": "merge_embeddings", "probe": "probe", "retrieve": "retrieve"}
GROUP_RULES = {"embed": "embed_groups", "retrieve": "retrieve_groups"}


def rule_of(tsv: Path, benchmarks: Path) -> str:
    """The rule whose job wrote the benchmark file ``tsv``."""
    folder = tsv.parent.relative_to(benchmarks).as_posix()
    if folder == ".":
        return tsv.stem
    if folder in GROUP_RULES and tsv.stem.startswith("groups_"):
        return GROUP_RULES[folder]
    return FOLDER_RULES[folder]


def rule_seconds(benchmarks: Path) -> dict[str, dict]:
    """Per rule: jobs and summed seconds, from results/demo/benchmarks/**.tsv."""
    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "seconds": 0.0})
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        rule = rule_of(tsv, benchmarks)
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        per_rule[rule]["jobs"] += 1
        per_rule[rule]["seconds"] += float(row["s"])
    return {rule: {"jobs": v["jobs"], "seconds": round(v["seconds"], 1)}
            for rule, v in sorted(per_rule.items())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_dag.json")
    ap.add_argument("--keep-results", type=Path, default=None,
                    help="move the run's results/demo here afterwards (replacing it), e.g. "
                         "results/demo for bench/predict.py --run")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_workflow(work)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/demo"],
                              cwd=work, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"the demo DAG failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        jobs = sum(1 for line in proc.stderr.splitlines() if line.startswith("Finished jobid"))
        result = {
            "benchmark": "whole demo DAG from a clean results/ (snakemake --profile profiles/demo)",
            "wall_seconds": round(wall, 1), "goal_seconds": 600, "jobs": jobs,
            "rules": rule_seconds(Results.of_run("demo", work) / out.BENCHMARKS),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average_after": list(os.getloadavg()),
        }
        if a.keep_results:
            shutil.rmtree(a.keep_results, ignore_errors=True)
            shutil.move(Results.of_run("demo", work).root, a.keep_results)
    write_json(a.out, result)
    print(f"demo DAG: {wall:.0f} s for {jobs} jobs (goal <= 600 s) -> {a.out}")
    return result


if __name__ == "__main__":
    main()
