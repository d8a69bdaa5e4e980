"""Benchmark: exact cosine top-k with FAISS IndexFlatIP vs numpy matmul + argpartition.

A database of ``--n`` x ``--d`` random float32 embeddings (the paper's 282,564 x 3,584 does not
fit a CPU benchmark; the defaults run in seconds), ``--queries`` queries, top ``--k``. Both
use the same L2-normalised float32 rows and run in the same process; times are best of
``--repeats`` (search only; index building and normalisation timed separately). The top-k ids
must be identical except where two candidates' float32 scores are within ``--tie-tol`` (the
two do the float32 sums in different orders, so near-ties may swap); mismatches are counted.
Writes ``bench/results/faiss_topk.json`` atomically.

    python bench/faiss_topk.py [--n 20000] [--d 512] [--queries 1000] [--k 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np

from skinground.core.io import write_json
from skinground.retrieval.index import build_index, gpu_available, normalize, search

from timing import best_of, machine

REPO = Path(__file__).resolve().parents[1]


def numpy_top_k(db_n: np.ndarray, q_n: np.ndarray, k: int, block: int = 256):
    """Top k by inner product of normalised rows: matmul per query block, argpartition, sort."""
    scores = np.empty((len(q_n), k), np.float32)
    idx = np.empty((len(q_n), k), np.int64)
    for s in range(0, len(q_n), block):
        sims = q_n[s:s + block] @ db_n.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        idx[s:s + block] = np.take_along_axis(part, order, axis=1)
        scores[s:s + block] = np.take_along_axis(part_scores, order, axis=1)
    return scores, idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tie-tol", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faiss_topk.json")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    db = rng.normal(size=(args.n, args.d)).astype(np.float32)
    queries = rng.normal(size=(args.queries, args.d)).astype(np.float32)

    t_build, index = best_of(lambda: build_index(db), 1)
    t_norm, db_n = best_of(lambda: normalize(db), 1)
    q_n = normalize(queries)
    t_faiss, (f_scores, f_idx) = best_of(lambda: search(index, queries, args.k), args.repeats)
    t_numpy, (n_scores, n_idx) = best_of(lambda: numpy_top_k(db_n, q_n, args.k), args.repeats)

    rows_differ = np.flatnonzero((f_idx != n_idx).any(axis=1))
    # A differing row is a near-tie if its k+1 best exact scores have a gap below tie_tol.
    exact = np.sort(q_n[rows_differ].astype(np.float64) @ db_n.astype(np.float64).T,
                    axis=1)[:, ::-1][:, :args.k + 1]
    near_tie = (np.diff(exact, axis=1) > -args.tie_tol).any(axis=1)
    identical = bool(rows_differ.size == 0)
    result = {
        "benchmark": "cosine top-k: faiss IndexFlatIP vs numpy matmul+argpartition",
        "n": args.n, "d": args.d, "queries": args.queries, "k": args.k,
        "repeats": args.repeats, "faiss_gpu": gpu_available(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_search_s": t_faiss, "numpy_search_s": t_numpy, "ratio": t_numpy / t_faiss,
        "faiss_build_s": t_build, "numpy_normalize_s": t_norm,
        "identical_ids": identical,
        "rows_differing": int(rows_differ.size),
        "rows_differing_not_near_tie": int((~near_tie).sum()),
        "max_abs_score_diff": float(np.abs(f_scores - n_scores)[f_idx == n_idx].max()),
        "machine": machine(numpy=np.__version__, faiss=faiss.__version__),
    }
    print(f"faiss {t_faiss * 1e3:.1f} ms, numpy {t_numpy * 1e3:.1f} ms -> ratio "
          f"{result['ratio']:.2f}x (numpy/faiss); identical ids: {identical} "
          f"({rows_differ.size} rows differ, {result['rows_differing_not_near_tie']} not near "
          f"ties); build {t_build:.2f} s")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    if result["rows_differing_not_near_tie"]:
        raise SystemExit("top-k ids differ beyond near-ties")


if __name__ == "__main__":
    main()
