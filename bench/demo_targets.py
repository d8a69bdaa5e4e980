"""Does a run show the paper's finding? Counts over the attributes, from a run's own outputs
(``evaluate/summary.csv``, ``predict/r2.csv``):

- ``c_beats_d``: tuned image-only (c) has a lower median percentile than untuned (d);
- ``a_beats_c``: image+text (a) lower than image-only (c);
- ``r2_positive`` / ``r2_half``: tuned test R² (unparsable answers at the train mean) > 0 /
  >= 0.5.

``TARGETS`` are the demo's (``bench/fidelity.py`` measures them per seed; the workflow test
asserts them with some slack).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from skinground.core import outputs as out
from skinground.core.config import load
from skinground.core.plan import QWEN_METHODS, methods

TARGETS = {"c_beats_d": 12, "a_beats_c": 10, "r2_positive": 12, "r2_half": 6}


def counts(medians: Mapping[str, Mapping[str, float]], r2: Mapping[str, float]) -> dict[str, int]:
    """The fidelity counts over the attributes of ``r2``; ``medians``: method letter ->
    attribute -> median percentile."""
    attrs = list(r2)
    return {
        "c_beats_d": sum(medians["c"][a] < medians["d"][a] for a in attrs),
        "a_beats_c": sum(medians["a"][a] < medians["c"][a] for a in attrs),
        "r2_positive": sum(r2[a] > 0 for a in attrs),
        "r2_half": sum(r2[a] >= 0.5 for a in attrs),
    }


def read_run(results: Path) -> dict:
    """Medians per method and attribute (a Qwen2-VL method keyed by its letter, an image
    encoder by its name), the methods' legends, the tuned R², the attributes' labels and the
    counts, from the outputs in a run's folder ``results`` (``skinground.core.outputs``; the
    encoders' titles from the run's config)."""
    run_config = Path(results) / out.RUN_CONFIG
    table = methods(load([run_config]) if run_config.is_file() else None)
    summary = pl.read_csv(Path(results) / out.SUMMARY_CSV)
    medians: dict[str, dict[str, float]] = {}
    titles: dict[str, str] = {}
    for row in summary.iter_rows(named=True):
        name = row["method"]
        key = QWEN_METHODS[name].letter if name in QWEN_METHODS else name
        m = table.get(name)
        titles[key] = f"({m.letter}) {m.title}" if m else name
        medians.setdefault(key, {})[row["attribute"]] = row["median"]
    table = pl.read_csv(Path(results) / out.R2_CSV).filter(pl.col("model") == "tuned")
    r2 = dict(zip(table["attribute"], table["r2_filled"], strict=True))
    labels = dict(zip(table["attribute"], table["label"], strict=True))
    return {"medians": medians, "titles": titles, "r2": r2, "labels": labels,
            "counts": counts(medians, r2)}
