"""Snakemake itself on the demo: the whole DAG end to end, the demo's effects, and exactly
which jobs a config or code change reruns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import copy_workflow, planned_jobs

pytestmark = pytest.mark.slow

ATTRIBUTES = 16
SHARDS = 2  # profiles/demo/demo-config.yaml: embed.shards


def snakemake(workdir: Path, *args: str, extra_config: str | None = None) -> str:
    configs = ["config.yaml", "profiles/demo/demo-config.yaml"]
    if extra_config:
        configs.append(extra_config)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", *args,
           "--configfile", *configs]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out[-8000:]}")
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A copy of the workflow that has run the whole demo DAG (the default demo size)."""
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    snakemake(work)
    return work


def res(demo: Path) -> Path:
    return demo / "results" / "demo"


def test_every_figure_and_table(demo):
    out = res(demo)
    for name in ("fig2_r2", "fig3_retrievals", "fig4_percentiles"):
        for ext in ("pdf", "png"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    for path in ("predict/r2.csv", "predict/r2.md", "evaluate/summary.csv",
                 "evaluate/summary.md", "train/loss.csv", "train/loss.png",
                 "train/adapter/adapter_config.json"):
        assert (out / path).exists(), path
    assert (out / "logs" / "train.log").exists()


def test_data_stage(demo):
    out = res(demo)
    manifest = pl.read_parquet(out / "data/manifest.parquet")
    train = (out / "split/train.txt").read_text().split()
    test = (out / "split/test.txt").read_text().split()
    assert len(train) + len(test) == manifest.height == 1500
    patients = dict(zip(manifest["isic_id"], manifest["patient_id"], strict=True))
    assert not {patients[i] for i in train} & {patients[i] for i in test}
    tuples = pl.read_parquet(out / "tuples/train_tuples.parquet")
    available = manifest.filter(pl.col("isic_id").is_in(train)).select(
        pl.sum_horizontal(pl.col(c).is_not_null() for c in manifest.columns[3:])
    ).to_series()
    assert tuples.height == int(available.sum())  # demo: W = all
    report = json.loads((out / "data/report.json").read_text())
    assert sum(m["total"] for m in report["missing"].values()) > 0


def test_training_loss_falls(demo):
    loss = pl.read_csv(res(demo) / "train/loss.csv").drop_nulls("loss")
    first, last = loss["loss"].head(3).mean(), loss["loss"].tail(3).mean()
    assert last < 0.5 * first


def test_r2_counts_unparsable_answers_for_both_models(demo):
    r2 = pl.read_csv(res(demo) / "predict/r2.csv")
    assert r2.height == 2 * ATTRIBUTES
    tuned, untuned = (r2.filter(pl.col("model") == m) for m in ("tuned", "untuned"))
    assert (tuned["n"] > 0).all() and (tuned["n"] == untuned["n"]).all()
    # Fine-tuning taught the answer format: the tuned model's answers parse as numbers,
    # the random untuned model's do not — and they are counted, not dropped.
    assert (tuned["n_unparsable"] <= 0.05 * tuned["n"]).all(), tuned
    assert untuned["n_unparsable"].sum() > 0.5 * untuned["n"].sum(), untuned
    assert untuned["r2_filled"].is_not_null().all()


def test_retrieval_methods_and_evaluation(demo):
    summary = pl.read_csv(res(demo) / "evaluate/summary.csv")
    assert set(summary["method"]) == {"image_text", "hierarchical", "image_only",
                                      "image_untuned", "monet"}
    assert summary.height == 5 * ATTRIBUTES
    n_test = len((res(demo) / "split/test.txt").read_text().split())
    assert ((summary["n"] + summary["excluded"]) == 5 * n_test).all()  # k = 5 per query
    assert summary["median"].is_between(0, 100).all()
    retrieved = pl.read_parquet(res(demo) / "retrieve/hierarchical.parquet")
    test_ids = set((res(demo) / "split/test.txt").read_text().split())
    assert set(retrieved["query_id"]) == test_ids
    assert not set(retrieved["retrieved_id"]) & test_ids


def test_nothing_changed_nothing_to_do(demo):
    assert planned_jobs(snakemake(demo, "-n")) == {}


TUNED_SPACES = 1 + ATTRIBUTES
DOWNSTREAM_OF_TRAINING = {
    "train": 1, "predict_shard": 1, "merge_predictions": 1, "r2": 1,  # tuned x 1 shard
    "embed_shard": 2 * SHARDS,  # tuned x {train, test} x shards
    "merge_embeddings": 2 * TUNED_SPACES, "build_index": TUNED_SPACES,
    "retrieve": 3,  # image_text, hierarchical, image_only
    "evaluate": 1, "figures": 1, "all": 1,
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": {"learning_rate": 0.002}}, DOWNSTREAM_OF_TRAINING),
        ({"retrieve": {"b": 150}}, {"retrieve": 1, "evaluate": 1, "figures": 1, "all": 1}),
        ({"predict": {"max_new_tokens": 12}},
         {"predict_shard": 2, "merge_predictions": 2, "r2": 1, "all": 1}),
        ({"figures": {"fig3_queries": 3}}, {"figures": 1, "all": 1}),
    ],
    ids=["train-hyperparameter", "retrieve-b", "predict", "figures"],
)
def test_config_change_reruns_exactly_what_it_touches(demo, change, expected):
    (demo / "change.yaml").write_text(yaml.safe_dump(change))
    assert planned_jobs(snakemake(demo, "-n", extra_config="change.yaml")) == expected


def test_code_change_reruns_the_rules_that_import_it(demo):
    lib = demo / "workflow/skinground/evaluate.py"
    original = lib.read_text()
    try:
        lib.write_text(original + "\n# edited\n")
        assert planned_jobs(snakemake(demo, "-n")) == {"evaluate": 1, "figures": 1, "all": 1}
    finally:
        lib.write_text(original)
