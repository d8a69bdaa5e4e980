"""Benchmark: the statistics at paper scale — how long the evaluation's intervals and tests
and the ridge probe take on the paper's sizes, beside the workflow profile's runtime limits.

``bench/scale.py`` rehearsed the retrieval rules before the statistics existed; this times
what they added, on paper-shaped inputs, through the workflow's own functions:

- **evaluate** (``significance.tested_evaluation``, as ``workflow/scripts/percentile.py`` calls
  it): one attribute's percentile table at the paper's size — config.yaml's split of a
  SLICE-3D-shaped cohort (``reference.paper_shaped_cohort``: 240 test patients, ~118,495
  test queries), k = ``retrieve.k``, config.yaml's methods — its medians' bootstrap intervals
  (``stats.bootstrap`` replicates over the test patients) and the claims' Wilcoxon tests
  (``stats.test_unit``); and one cell's median replicates by the binned
  ``stats.bootstrap_median`` beside the plain count of every item, side by side (the speedup,
  and that they are identical). Each attribute is its own cells, so the rule's time is 16 times one
  attribute's (the table's reading and the percentiles themselves: ``bench/scale.py``).
- **probe** (``probe.fit_probes`` + ``probe.probe_rows``, as ``workflow/scripts/probe.py``):
  random float16 spaces of width 3,584 (Qwen2-VL-7B's h_im), targets with 1% missing values,
  at ``--probe-sizes`` train rows and 1 and 2 targets. A least-squares ``t = a + b n + c T``
  (the Gram sums grow with the rows n; the (folds + 1) eigendecompositions per target T do
  not) is evaluated at the paper's 282,564 x 16.

Times are this machine's (``machine``: 2 cores); a cluster job has the profile's threads
(``set-threads``), so the paper-scale numbers are upper bounds for one job.

    python bench/stats_scale.py [--probe-sizes 20000 40000]

Writes ``bench/results/stats_scale.json``; ``python bench/readme.py`` puts it in the paper-scale
section of docs/cost-and-scale.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from skinground.core.config import load, load_profile, runtime_limits
from skinground.core.io import write_json
from skinground.core.plan import probed_models
from skinground.cost.memory import PAPER_TEST, PAPER_TRAIN
from skinground.data.attributes import ID_COLUMN, PATIENT_COLUMN
from skinground.data.split import split_patients
from skinground.evaluation import percentile, probe, significance, stats

from reference import cumsum_bootstrap_median, paper_shaped_cohort
from timing import machine

REPO = Path(__file__).resolve().parents[1]
WIDTH = 3584  # Qwen2-VL-7B's hidden size: h_im and h_im,a


def test_cohort(config: dict) -> tuple[pl.DataFrame, list[str]]:
    """config.yaml's split of a SLICE-3D-shaped cohort: the manifest (id, patient) and the
    test images' ids."""
    cohort = paper_shaped_cohort(seed=0)
    assigned = split_patients(cohort, **config["split"])
    test = assigned.filter(pl.col("split") == "test")[ID_COLUMN].to_list()
    return cohort.select(ID_COLUMN, PATIENT_COLUMN), test


def percentile_table(test: list[str], methods: list[str], k: int,
                     seed: int = 0) -> pl.DataFrame:
    """One attribute's percentile rows: every test query x method x rank, a method's
    percentiles shifted by its place in the list (so the claims' tests have something to
    find), about 1% without a value (an excluded retrieved image)."""
    rng = np.random.default_rng(seed)
    n = len(test) * k
    parts = []
    for i, method in enumerate(methods):
        values = np.clip(rng.normal(30 + 3 * i, 20, n), 0, 100)
        values[rng.random(n) < 0.01] = np.nan
        parts.append(pl.DataFrame({
            "method": method, "attribute": "a", "query_id": np.repeat(test, k),
            "rank": np.tile(np.arange(1, k + 1), len(test)), "percentile": values,
        }).with_columns(pl.col("percentile").fill_nan(None)))
    return pl.concat(parts)


def time_evaluate(config: dict) -> dict:
    manifest, test = test_cohort(config)
    methods = list(config["retrieve"]["methods"])
    table = percentile_table(test, methods, config["retrieve"]["k"])
    st = config["stats"]
    start = time.perf_counter()
    boot = significance.patient_bootstrap(manifest, test, st["bootstrap"], st["seed"])
    claims = significance.paper_claims(methods, {})
    tested = significance.tested_evaluation(
        table, percentile.summarize(table), ["attribute"], "percentile", claims, boot, manifest,
        confidence=st["confidence"], alpha=st["alpha"], unit=st["test_unit"])
    seconds = time.perf_counter() - start
    attributes = len(config["attributes"])
    return {**median_ratio(table, boot, manifest, methods[0]),
            "test_queries": len(test), "test_patients": len(boot.patients),
            "rows_per_attribute": table.height, "methods": methods,
            "claims_tested": tested.claims.height, "replicates": st["bootstrap"],
            "test_unit": st["test_unit"], "seconds_per_attribute": round(seconds, 2),
            "attributes": attributes, "paper_seconds": round(seconds * attributes, 1)}


def median_ratio(table: pl.DataFrame, boot: stats.Bootstrap, manifest: pl.DataFrame,
                 method: str) -> dict:
    """One cell's bootstrap median (a method's rows of the attribute), the binned
    ``stats.bootstrap_median`` beside the plain count of every item
    (``reference.cumsum_bootstrap_median``), side by side: seconds and equality."""
    cell = table.filter(pl.col("method") == method)
    codes = significance.patient_codes(boot, manifest, cell["query_id"])
    values = cell["percentile"].to_numpy()
    seconds, results = {}, {}
    for name, fn in (("binned", stats.bootstrap_median), ("plain", cumsum_bootstrap_median)):
        start = time.perf_counter()
        results[name] = fn(boot, codes, values)
        seconds[name] = time.perf_counter() - start
    return {"median_cell_items": int(np.isfinite(values).sum()),
            "median_seconds": {k: round(v, 3) for k, v in seconds.items()},
            "median_speedup": round(seconds["plain"] / seconds["binned"], 1),
            "median_identical": bool(np.array_equal(results["binned"], results["plain"],
                                                    equal_nan=True))}


def time_probe(n: int, targets: int, folds: int, alphas: list[float], config: dict,
               seed: int = 0) -> float:
    """One probe job's fit and test rows on random spaces: ``n`` train rows, ``targets``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, WIDTH), dtype=np.float32).astype(np.float16)
    y = x[:, :targets].astype(np.float64) @ rng.standard_normal((targets, targets)) \
        + rng.standard_normal((n, targets))
    y[rng.random(y.shape) < 0.01] = np.nan
    patients = [f"P{i}" for i in rng.integers(0, 800, n)]
    n_test = round(n * PAPER_TEST / PAPER_TRAIN)  # the paper's ratio
    test_x = rng.standard_normal((n_test, WIDTH), dtype=np.float32).astype(np.float16)
    test_y = rng.standard_normal((n_test, targets))
    test_patients = [f"T{i}" for i in rng.integers(0, 240, n_test)]
    st = config["stats"]
    start = time.perf_counter()
    fits = probe.fit_probes(x, y, patients, alphas, folds)
    boot = stats.Bootstrap.draw(test_patients, st["bootstrap"], st["seed"])
    probe.probe_rows("tuned", [f"a{t}" for t in range(targets)], fits, test_x, test_y,
                     boot.codes(test_patients), boot, st["confidence"],
                     {f"a{t}": n for t in range(targets)})
    return time.perf_counter() - start


def probe_fit(points: list[dict]) -> dict:
    """Least squares t = a + b n + c T over the measured points."""
    design = np.array([[1.0, p["train_rows"], p["targets"]] for p in points])
    t = np.array([p["seconds"] for p in points])
    (a, b, c), *_ = np.linalg.lstsq(design, t, rcond=None)
    return {"a": float(a), "b_per_row": float(b), "c_per_target": float(c)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe-sizes", type=int, nargs="+", default=[20_000, 40_000])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stats_scale.json")
    a = ap.parse_args(argv)
    config = load([REPO / "config.yaml"])
    limits = runtime_limits(load_profile(REPO / "profiles" / "default" / "config.yaml"))

    ev = time_evaluate(config)
    print(f"evaluate: {ev['seconds_per_attribute']} s per attribute", flush=True)

    pr = config["probe"]
    points = []
    for n in a.probe_sizes:
        for targets in (1, 2):
            seconds = time_probe(n, targets, pr["folds"], pr["alphas"], config)
            points.append({"train_rows": n, "targets": targets, "seconds": round(seconds, 2)})
            print(f"probe: {n} rows, {targets} targets: {seconds:.1f} s", flush=True)
    fit = probe_fit(points)
    attributes = len(config["attributes"])
    paper = fit["a"] + fit["b_per_row"] * PAPER_TRAIN + fit["c_per_target"] * attributes
    result = {
        "benchmark": "the statistics at paper scale: evaluate's bootstrap intervals and "
                     "claims' tests, the ridge probe of one 3,584-wide space",
        "evaluate": {**ev, "runtime_limit_minutes": limits.get("evaluate")},
        "probe": {"width": WIDTH, "folds": pr["folds"], "alphas": len(pr["alphas"]),
                  "points": points, "fit": fit, "paper_train_rows": PAPER_TRAIN,
                  "paper_test_rows": PAPER_TEST, "attributes": attributes,
                  "paper_seconds": round(paper, 1),
                  "probed_spaces": probed_models(config),
                  "runtime_limit_minutes": limits.get("probe")},
        "machine": machine(),
    }
    write_json(a.out, result)
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
