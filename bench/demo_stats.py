"""Benchmark: what the statistics say on the demo — whole demo runs, one per seed.

Each run is ``snakemake --profile profiles/demo`` in a fresh copy of the workflow with the
seeds of ``bench/fidelity.py`` (model init, split, tuples, training). From each run's own
outputs it records:

- ``evaluate/claims.csv``: on how many attributes each of the paper's claims holds
  significantly (Wilcoxon signed-rank per attribute, paired per test patient, Holm-corrected);
- ``evaluate/groups_claims.csv``: the same for multi-attribute retrieval;
- both again with every query its own pair (``stats.test_unit: query``), tested by this script
  on the run's own percentile tables: how much treating a patient's queries as independent
  moves the counts;
- ``predict/probe_r2.csv``: each image-level space's ridge probe R² beside the generated
  answers' R², with intervals;
- ``predict/r2.csv``: the robust metrics beside R² (Spearman's ρ, median absolute error, the
  share off by an order of magnitude);
- ``evaluate/diagnosis.csv``: the diagnosis agreement per method and its base rate;
- ``evaluate/summary.csv``: the medians with their intervals, every method (the encoders
  included).

Writes ``bench/results/demo_stats.json``; docs/statistics.md's block is generated from it
(``python bench/readme.py``).

    python bench/demo_stats.py [--seeds 0 1]
    python bench/demo_stats.py --seeds 0 1 --from-run DIR/seed0 DIR/seed1   # kept runs
                                            # (python bench/fidelity.py --keep DIR)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import polars as pl

from skinground.core import outputs as out
from skinground.core.config import load
from skinground.core.io import write_json
from skinground.core.outputs import Results
from skinground.core.tables import read_parquet
from skinground.evaluation import group_criterion, significance

from demo_dag import copy_workflow
from fidelity import run_demo, seed_overrides
from timing import machine

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


#: The claims tested again per query: the record's key -> (the run's claims table, its
#: percentile table, the cells, the value, how the percentile table becomes the tested one).
RETESTED = {
    "claims_per_query": (out.CLAIMS_CSV, out.PERCENTILES, ["attribute"], "percentile", None),
    "group_claims_per_query": (out.GROUP_CLAIMS_CSV, out.GROUP_PERCENTILES,
                               ["group", "criterion"], "value", group_criterion.criteria_long),
}


def read_run(results: Path) -> dict:
    """A finished run's statistics tables (absent ones: None), its tests' unit and number of
    pairs, and its claims tested again with every query its own pair."""
    record = {}
    for template, key in TABLES.items():
        path = results / template
        record[key] = pl.read_csv(path).to_dicts() if path.is_file() else None
    config = load([results / out.RUN_CONFIG])
    alpha = config["stats"]["alpha"]
    record["test_unit"] = config["stats"]["test_unit"]
    record["pairs"] = int(pl.read_csv(results / out.PAIRED_TESTS)["n"].max())
    for key, (claims_csv, table, by, value, shape) in RETESTED.items():
        record[key], pairs = per_query_claims(results, claims_csv, table, by, value, shape,
                                              alpha)
        record.setdefault("query_pairs", pairs)
    return record


def per_query_claims(results: Path, claims_csv: str, table: str, by: list[str], value: str,
                     shape, alpha: float) -> tuple[list[dict], int]:
    """The run's claims (its claims table's rows) tested with every query its own pair on its
    own percentile table: the claims' counts, and the most pairs of a cell."""
    claims = [significance.Claim(*row["claim"].split(" vs "), row["kind"], row["statement"])
              for row in pl.read_csv(results / claims_csv).iter_rows(named=True)]
    frame = read_parquet(results / table)
    if shape is not None:
        frame = shape(frame)
    tests = significance.claim_tests(significance.per_query(frame, by, value), claims, by,
                                     value, alpha)
    return significance.claims_summary(tests, claims).to_dicts(), int(tests["n"].max())


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
