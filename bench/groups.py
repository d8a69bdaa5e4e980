"""Benchmark: multi-attribute retrieval on the demo, zero-shot and trained composition.

For each ``tuples.group_share`` in ``--shares`` and each seed, a whole demo run (the seeds of
``bench/fidelity.py``; a fidelity run of the same seed and share in
``bench/results/fidelity.json`` is reused instead of run again) gives, per group and method,
the median of the group criterion: the max and the mean over the group's attributes of the
retrieved images' percentile ranks (lower is better). Methods: (f) composed h_im,G, (f')
hierarchical composed, and the baselines (c) image-only, (g) per-attribute spaces fused, (h)
reciprocal-rank fusion, and k random train images. Writes ``bench/results/groups.json``.

    python bench/groups.py [--shares 0 0.25] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from skinground.core.io import write_json

from fidelity import run_seed
from timing import machine

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "groups.json")
    a = ap.parse_args(argv)
    fidelity_path = REPO / "bench" / "results" / "fidelity.json"
    reuse = json.loads(fidelity_path.read_text())["runs"] if fidelity_path.is_file() else []
    runs = []
    for share in a.shares:
        for seed in a.seeds:
            known = [r for r in reuse if r["seed"] == seed and r.get("group_share") == share
                     and r.get("groups")]
            run = known[0] if known else run_seed(seed, {"tuples": {"group_share": share}})
            runs.append({"seed": seed, "group_share": share, "groups": run["groups"],
                         "counts": run["counts"], "wall_seconds": run.get("wall_seconds"),
                         "reused_fidelity_run": bool(known)})
            print(f"share {share}, seed {seed}: done", flush=True)
    result = {"benchmark": "multi-attribute retrieval on the demo: the group criterion's "
                           "median per group x method, by tuples.group_share and seed",
              "runs": runs,
              "machine": machine()}
    write_json(a.out, result)
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
