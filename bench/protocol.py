"""Benchmark: what the paper's protocol choices do to the demo's finding, on two seeds.

The demo runs with two departures from ``config.yaml`` (the paper's): h_im,a read at the
prompt's end (``embed.h_ima_token: prompt_end``) and image-once batches
(``train.layout: per_image``). For each seed this runs the demo as it is, then in the same
folder (so Snakemake reruns only what each change touches):

- ``question``: h_im,a at the paper's final question token (the tuned embeddings and all that
  follows rerun; training does not);
- ``per_tuple``: the paper's shuffled batches, one sequence per tuple, at the same number of
  steps and tuples per step, so the same tuples seen (training and all that follows rerun).

Each variant's fidelity counts (its run's verdict, ``demo_targets``: (c) > (d), (a) > (c),
R² > 0, R² >= 0.5 over the 16 attributes), medians and R² go to
``bench/results/protocol.json``; the
docs/reproducing.md's table of them is generated from it. The plain demo runs
are ``bench/fidelity.py``'s runs, so they also rewrite ``bench/results/fidelity.json``.

    python bench/protocol.py [--seeds 0 1]
    python bench/protocol.py --merge A.json B.json   # runs made apart (e.g. a seed each)

About 45 min a seed on 2 cores (the per_tuple training is ~4x slower per tuple).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from skinground.core.config import deep_merge, load
from skinground.core.io import write_json

from demo_dag import copy_workflow
from fidelity import fidelity_result, run_demo, run_record, seed_overrides
from timing import machine

REPO = Path(__file__).resolve().parents[1]
#: The variants, each applied on top of the demo config (and its seed), in this order.
VARIANTS = {
    "demo": {},
    "question": {"embed": {"h_ima_token": "question"}},
    "per_tuple": {"train": {"layout": "per_tuple"}},
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "protocol.json")
    ap.add_argument("--fidelity-out", type=Path,
                    default=REPO / "bench" / "results" / "fidelity.json",
                    help="where the plain demo runs' fidelity record goes (they are the runs "
                         "of bench/fidelity.py); '-' for nowhere")
    ap.add_argument("--merge", type=Path, nargs="+",
                    help="no runs: join the runs of these protocol.json files (made apart, "
                         "e.g. one seed each) into --out, and their plain runs' fidelity "
                         "record into --fidelity-out")
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.out, a.fidelity_out)
    runs: list[dict] = []
    result = {"benchmark": "the paper's h_im,a token and sampler on the demo",
              "variants": VARIANTS, "runs": runs, "machine": machine()}
    for seed in a.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            copy_workflow(work)
            for name, change in VARIANTS.items():
                wall = run_demo(work, deep_merge(seed_overrides(seed), change),
                                f"seed {seed}, {name}")
                runs.append({"variant": name, "change": change,
                             **run_record(work, seed, wall)})
                # Written after every run: a long bench keeps what it has measured.
                write_json(a.out, result)
                print(f"seed {seed} {name}: {runs[-1]['counts']} in {wall:.0f} s", flush=True)
    write_fidelity(runs, a.fidelity_out)
    return result


def write_fidelity(runs: list[dict], path: Path) -> None:
    """The plain demo runs (one per seed) as ``bench/fidelity.py``'s record, at ``path``
    ('-': nowhere). Runs recorded before run_record gave the group share get the demo's."""
    if str(path) == "-":
        return
    share = load([REPO / "config.yaml", REPO / "profiles/demo/demo-config.yaml"]
                        )["tuples"]["group_share"]
    plain = [{"group_share": share, **{k: v for k, v in r.items()
                                       if k not in ("variant", "change")}}
             for r in runs if r["variant"] == "demo"]
    write_json(path, fidelity_result(sorted(plain, key=lambda r: r["seed"])))


def merge(paths: list[Path], out: Path, fidelity_out: Path) -> dict:
    """One protocol.json from several made apart (their runs in seed order), and the
    fidelity record of their plain runs."""
    parts = [json.loads(p.read_text()) for p in paths]
    result = {**parts[0], "runs": sorted((r for part in parts for r in part["runs"]),
                                         key=lambda r: (r["seed"], list(VARIANTS).index(
                                             r["variant"])))}
    write_json(out, result)
    write_fidelity(result["runs"], fidelity_out)
    return result


if __name__ == "__main__":
    main()
