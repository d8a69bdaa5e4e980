"""Benchmark: O(log N) percentile ranks (binary search) vs the O(N) brute force.

The paper's train size, N = 282,564 train values, 1,000 queries x 5 retrieved train values,
for two kinds of attribute values: continuous (lognormal, like an area in mm²) and heavily
tied (the same rounded to 0.1: ~thousands of distinct values). Both methods run in the same
process; the outputs must be IDENTICAL (np.array_equal incl. NaN positions). Times: the fast
path best of ``--repeats`` (``search`` = ranks with the train values already sorted, as
:class:`PercentileRanker` does per attribute; ``total`` = including that sort), the brute force
once (it takes seconds). Writes ``bench/results/percentile.json`` atomically.

    python bench/percentile.py [--n 282564] [--queries 1000] [--k 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from skinground.core.io import write_json
from skinground.evaluation.percentile import PercentileRanker, percentile_ranks

from reference import brute_force_percentile_ranks
from timing import best_of, machine

REPO = Path(__file__).resolve().parents[1]


def case(name: str, train: np.ndarray, q: np.ndarray, r: np.ndarray, repeats: int) -> dict:
    ranker = PercentileRanker(train)
    t_search, fast = best_of(lambda: ranker(q, r), repeats)
    t_total, fast_total = best_of(lambda: percentile_ranks(train, q, r), repeats)
    t_brute, slow = best_of(lambda: brute_force_percentile_ranks(train, q, r), 1)
    identical = bool(np.array_equal(fast, slow, equal_nan=True)
                     and np.array_equal(fast_total, slow, equal_nan=True))
    out = {
        "values": name, "distinct_train_values": int(np.unique(train[np.isfinite(train)]).size),
        "binary_search_s": t_search, "binary_search_with_sort_s": t_total,
        "brute_force_s": t_brute,
        "ratio_search": t_brute / t_search, "ratio_with_sort": t_brute / t_total,
        "identical": identical, "mean_percentile": float(np.nanmean(fast)),
    }
    print(f"{name:>10}: search {t_search * 1e3:.2f} ms, with sort {t_total * 1e3:.2f} ms, "
          f"brute force {t_brute:.2f} s -> {out['ratio_search']:.0f}x "
          f"({out['ratio_with_sort']:.0f}x with sort), identical={identical}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=282_564)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "percentile.json")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    train = rng.lognormal(2.5, 1.0, size=args.n)
    train[rng.random(args.n) < 0.01] = np.nan  # a few missing values
    q = rng.lognormal(2.5, 1.0, size=args.queries)
    cases = []
    for name, values, queries in (("continuous", train, q),
                                  ("ties", np.round(train, 1), np.round(q, 1))):
        pool = values[np.isfinite(values)]
        retrieved = rng.choice(pool, size=(args.queries, args.k))  # random retrieval: ~50
        cases.append(case(name, values, queries, retrieved, args.repeats))

    write_json(args.out, {
        "benchmark": "percentile ranks: binary search vs brute force",
        "n_train": args.n, "queries": args.queries, "k": args.k, "repeats": args.repeats,
        "cases": cases,
        "ratio": min(c["ratio_search"] for c in cases),
        "ratio_with_sort": min(c["ratio_with_sort"] for c in cases),
        "identical": all(c["identical"] for c in cases),
        "machine": machine(numpy=np.__version__),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
