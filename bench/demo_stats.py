"""Benchmark: what the statistics say on the demo — whole demo runs, one per seed.

Each run is ``snakemake --profile profiles/demo`` in a fresh copy of the workflow with the
seeds of ``bench/fidelity.py`` (model init, split, tuples, training). From each run's own
outputs it records:

- ``evaluate/claims.csv``: on how many attributes each of the paper's claims holds
  significantly (Wilcoxon signed-rank per attribute, Holm-corrected);
- ``evaluate/groups_claims.csv``: the same for multi-attribute retrieval;
- ``predict/probe_r2.csv``: each image-level space's ridge probe R² beside the generated
  answers' R², with intervals;
- ``predict/r2.csv``: the robust metrics beside R² (Spearman's ρ, median absolute error, the
  share off by an order of magnitude);
- ``evaluate/diagnosis.csv``: the diagnosis agreement per method and its base rate;
- ``evaluate/summary.csv``: the medians with their intervals, every method (the encoders
  included).

Writes ``bench/results/demo_stats.json``; the README's "Statistics" block is generated from it
(``python bench/readme.py``).

    python bench/demo_stats.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import polars as pl
from demo_dag import copy_workflow
from fidelity import run_demo, seed_overrides
from timing import machine

from skinground import outputs as out
from skinground.io import write_json
from skinground.outputs import Results

REPO = Path(__file__).resolve().parents[1]

#: What a run's record keeps: its output -> the record's key.
TABLES = {
    out.CLAIMS_CSV: "claims",
    out.GROUP_CLAIMS_CSV: "group_claims",
    out.PROBE_R2_CSV: "probe_r2",
    out.R2_CSV: "r2",
    out.DIAGNOSIS_CSV: "diagnosis",
    out.SUMMARY_CSV: "summary",
}


def read_run(results: Path) -> dict:
    """A finished run's statistics tables (absent ones: None)."""
    record = {}
    for template, key in TABLES.items():
        path = results / template
        record[key] = pl.read_csv(path).to_dicts() if path.is_file() else None
    return record


def run_seed(seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_workflow(work)
        wall = run_demo(work, seed_overrides(seed), f"seed {seed}")
        return {"seed": seed, "wall_seconds": round(wall, 1),
                **read_run(Results.of_run("demo", work).root)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path,
                    default=REPO / "bench" / "results" / "demo_stats.json")
    ap.add_argument("--from-run", type=Path, nargs="+", metavar="RESULTS",
                    help="record finished runs' results/<run> folders instead (seed order)")
    a = ap.parse_args(argv)
    if a.from_run:
        runs = [{"seed": s, "wall_seconds": None, **read_run(p)}
                for s, p in zip(a.seeds, a.from_run, strict=True)]
    else:
        runs = []
        for seed in a.seeds:
            runs.append(run_seed(seed))
            print(f"seed {seed}: {runs[-1]['wall_seconds']:.0f} s", flush=True)
    missing = [f"seed {r['seed']}: {k}" for r in runs for k in TABLES.values() if r[k] is None]
    if missing:
        sys.exit(f"tables missing from the runs: {', '.join(missing)}")
    result = {"benchmark": "the statistics of the demo: claims, probes, robust R², "
                           "diagnosis agreement, one whole demo run per seed",
              "runs": runs, "machine": machine()}
    write_json(a.out, result)
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
