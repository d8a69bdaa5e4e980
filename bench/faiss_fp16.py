"""Benchmark: would a float16 FAISS index (half the GPU memory) return the same top-k?

faiss-gpu can hold a flat index in float16 (``GpuClonerOptions.useFloat16``): vectors and
queries are rounded to float16, the products accumulated in float32. This simulates it on
the CPU — the normalised float32 vectors rounded through float16, then the exact search — and
counts the queries whose top-k (set, and order) differs from the float32 index's, on:

- random spaces at the 7B's width (d = 3,584; ``--train`` x ``--queries``), and
- the demo run's stored embeddings (``--run``, every space of the tuned model, when present).

    python bench/faiss_fp16.py [--train 100000] [--queries 2000] [--run results/demo]

Writes ``bench/results/faiss_fp16.json``. The index stays float32 (``skinground.retrieval.index``):
one space of the paper's run is 4.05 GB, which fits a 48 GB A6000 with room to spare, so the
float16 index would buy nothing that is needed, and this measures what it would cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faiss
import numpy as np

from skinground.core.io import write_json
from skinground.retrieval.index import normalize
from skinground.retrieval.spaces import Space

from timing import machine

REPO = Path(__file__).resolve().parents[1]


def through_fp16(x: np.ndarray) -> np.ndarray:
    return normalize(x).astype(np.float16).astype(np.float32)


def compare(db: np.ndarray, queries: np.ndarray, k: int) -> dict:
    """Top-k of the float32 index vs the float16-rounded one."""
    exact = faiss.IndexFlatIP(db.shape[1])
    exact.add(normalize(db))
    half = faiss.IndexFlatIP(db.shape[1])
    half.add(through_fp16(db))
    s32, i32 = exact.search(normalize(queries), k + 1)
    _, i16 = half.search(through_fp16(queries), k)
    i32 = i32[:, :k]
    same_set = np.array([set(a) == set(b) for a, b in zip(i32, i16, strict=True)])
    gap = s32[:, k - 1] - s32[:, k]  # how close the k-th and (k+1)-th were
    return {"train": int(db.shape[0]), "queries": int(queries.shape[0]), "d": int(db.shape[1]),
            "k": k, "same_top_k_set": float(same_set.mean()),
            "same_top_k_order": float((i32 == i16).all(axis=1).mean()),
            "median_gap_k_to_k1": float(np.median(gap))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--run", type=Path, default=REPO / "results" / "demo")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faiss_fp16.json")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    # Random, and random with a shared direction (cosines far from 0, as real embeddings).
    db = rng.standard_normal((args.train, 3584), dtype=np.float32)
    q = rng.standard_normal((args.queries, 3584), dtype=np.float32)
    shared = rng.standard_normal(3584, dtype=np.float32) * 3
    cases = {"random d=3584": compare(db, q, args.k),
             "random + shared direction d=3584": compare(db + shared, q + shared, args.k)}
    embed = args.run / "embed" / "tuned"
    for path in sorted((embed / "train").glob("*.npz")) if embed.is_dir() else []:
        test = embed / "test" / path.name
        if not test.exists() or path.name.startswith("shard"):
            continue
        train_space, test_space = Space(path), Space(test)
        cases[f"demo tuned {path.stem} d={train_space.dim}"] = compare(
            train_space.rows(0, len(train_space)).astype(np.float32),
            test_space.rows(0, len(test_space)).astype(np.float32), args.k)
    demo = [c for name, c in cases.items() if name.startswith("demo")]
    result = {
        "cases": cases,
        "demo_spaces": len(demo),
        "demo_same_top_k_set_min": min((c["same_top_k_set"] for c in demo), default=None),
        "decision": "float32 (one space of the paper's run is 4.05 GB: it fits a 48 GB GPU)",
        "machine": machine(faiss=faiss.__version__),
        "command": "python bench/faiss_fp16.py " + " ".join(sys.argv[1:] if argv is None
                                                           else argv),
    }
    write_json(args.out, result)
    for name, c in cases.items():
        print(f"{name}: same set {c['same_top_k_set']:.4f}, same order "
              f"{c['same_top_k_order']:.4f}")


if __name__ == "__main__":
    main()
