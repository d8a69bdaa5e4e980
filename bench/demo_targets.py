"""Does a demo run show what the demo is built to show? Its verdict says (the workflow's
``verdict`` rule, ``results/<run>/verdict/verdict.csv``): the demo's targets are expectations
of ``resources/expected/demo.yaml``, counted over the attributes by the run itself:

- ``c_beats_d``: tuned image-only (c) has a lower median percentile than untuned (d);
- ``a_beats_c``: image+text (a) lower than image-only (c);
- ``r2_positive`` / ``r2_half``: tuned test R² (unparsable answers at the train mean) > 0 /
  >= 0.5.

``TARGETS`` are that file's (``bench/fidelity.py`` records them per seed; the workflow test
asserts them with some slack). Nothing here recomputes a count: they are the verdict's.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from skinground.core import outputs as out
from skinground.core.config import load
from skinground.core.plan import QWEN_METHODS, methods
from skinground.evaluation import expected
from skinground.evaluation.verdict import ALL

REPO = Path(__file__).resolve().parents[1]
#: The demo's own expectation file.
DEMO_EXPECTED = REPO / "resources" / "expected" / "demo.yaml"
TARGETS = {e["id"]: e["at_least"] for e in expected.read(DEMO_EXPECTED)}
#: A verdict's own rows, as a record keeps them.
VERDICT_COLUMNS = ("expectation", "file", "source", "expected", "measured", "verdict")


def verdict(results: Path) -> pl.DataFrame:
    """The own row of every expectation of a run's verdict (``results``: its folder)."""
    table = pl.read_csv(Path(results) / out.VERDICT_CSV, infer_schema_length=0)
    return table.filter(pl.col("unit") == ALL)


def counts(table: pl.DataFrame) -> dict[str, int]:
    """The demo's counts (:data:`TARGETS`' ids) as the verdict measured them."""
    values = dict(zip(table["expectation"], table["value"], strict=True))
    missing = [k for k in TARGETS if k not in values]
    if missing:
        raise KeyError(f"the verdict has no {', '.join(missing)}: is the run judged against "
                       f"{DEMO_EXPECTED.relative_to(REPO)} (config verdict.expected)?")
    return {k: int(float(values[k])) for k in TARGETS}


def read_run(results: Path) -> dict:
    """Medians per method and attribute (a Qwen2-VL method keyed by its letter, an image
    encoder by its name), the methods' legends, the tuned R², the attributes' labels, from
    the outputs in a run's folder ``results`` (``skinground.core.outputs``; the encoders'
    titles from the run's config); and its verdict: the demo's counts and every
    expectation's own row."""
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
    judged = verdict(results)
    return {"medians": medians, "titles": titles, "r2": r2, "labels": labels,
            "counts": counts(judged),
            "verdict": judged.select(VERDICT_COLUMNS).to_dicts()}
