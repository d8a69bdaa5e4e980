"""Multi-attribute retrieval: composed embeddings, group tuples and answers, the baselines
(fused spaces, reciprocal-rank fusion) and the group criterion; config checks."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from skinground.core import plan
from skinground.core.config import ConfigError, check
from skinground.data import answers, groups
from skinground.data.answers import parse_group_answer
from skinground.demo import tiny
from skinground.evaluation.group_criterion import evaluate_groups, summarize_groups
from skinground.evaluation.metrics import group_r2
from skinground.evaluation.percentile import evaluate
from skinground.model import embed, loading
from skinground.retrieval.search import fused_top_k, fused_vectors, reciprocal_rank_fusion

from conftest import REPO, copy_workflow
from reference import naive_embeddings

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


@pytest.fixture(scope="module")
def group_config(repo_config) -> dict:
    return repo_config["retrieve"]["groups"]


# --------------------------------------------------------------------------- h_im,G


def test_composed_embeddings_equal_a_full_forward(tmp_path, group_config):
    """h_im,G from the prefix-shared pass equals one full forward of [image, Q(G)] (1e-5)."""
    questions = [g["question"] for g in group_config.values()]
    base = tiny.build_tiny_qwen2vl(tmp_path / "q", corpus=questions, image_size=112)
    model, processor = loading.load_mllm(base, min_pixels=56 * 56, max_pixels=224 * 224)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
              for s in (61, 131, 239)]
    ref_im, ref = naive_embeddings(model, processor, images, questions)
    h_im, shared = embed.prefix_shared_embeddings(model, processor, images, questions,
                                                  batch_images=2, token="question")
    assert shared.shape == (3, len(questions), model.config.text_config.hidden_size)
    assert (shared - ref).abs().max() < 1e-5
    assert (h_im - ref_im).abs().max() < 1e-5
    assert (shared[:, 0] - shared[:, 1]).abs().max() > 1e-3  # the question matters


# --------------------------------------------------------------------------- answers, tuples


def test_group_answer_round_trip():
    text = answers.group_answer([12.345, -0.5, 250.0], [2, 1, 0])
    assert text == "12.35; -0.5; 250"
    assert parse_group_answer(text, 3) == [12.35, -0.5, 250.0]
    assert parse_group_answer("1.5; x", 3) == [1.5, None, None]
    assert parse_group_answer(None, 2) == [None, None]


def _train_and_tuples(attributes, n=40, seed=0):
    from skinground.data.tuples import sample_tuples

    rng = np.random.default_rng(seed)
    cols = {a: rng.uniform(1, 30, n) for a in attributes}
    cols["tbp_lv_A"][3] = np.nan  # image 3 lacks A: no complete colour group
    train = pl.DataFrame({"isic_id": [f"ISIC_{i:07d}" for i in range(n)], **cols}).with_columns(
        pl.col(a).fill_nan(None) for a in attributes)
    return train, sample_tuples(train, attributes, w=3, seed=seed)


def test_group_tuples_replace_a_share_and_keep_the_count(repo_config, group_config):
    attributes = repo_config["attributes"]
    train, base = _train_and_tuples(attributes)
    out = groups.add_group_tuples(base, train, group_config, attributes, share=0.25, seed=1)
    assert out.height == base.height and out.columns == base.columns
    tagged = out.filter(pl.col("attribute").str.starts_with(groups.GROUP_ATTRIBUTE_PREFIX))
    assert 0.2 * base.height <= tagged.height <= 0.25 * base.height
    values = {r["isic_id"]: r for r in train.iter_rows(named=True)}
    for row in tagged.iter_rows(named=True):
        g = row["attribute"].removeprefix(groups.GROUP_ATTRIBUTE_PREFIX)
        members = group_config[g]["attributes"]
        assert row["question"] == group_config[g]["question"]
        expected = [round(values[row["isic_id"]][a], attributes[a]["decimals"]) for a in members]
        assert parse_group_answer(row["answer"], len(members)) == pytest.approx(expected)
    assert not tagged.filter((pl.col("isic_id") == "ISIC_0000003")
                             & (pl.col("attribute") == "group:colour")).height
    kept = out.filter(~pl.col("attribute").str.starts_with(groups.GROUP_ATTRIBUTE_PREFIX))
    assert kept.join(base, on=list(base.columns), how="anti").height == 0  # untouched rows
    again = groups.add_group_tuples(base, train, group_config, attributes, share=0.25, seed=1)
    assert again.equals(out)
    assert groups.add_group_tuples(base, train, group_config, attributes, share=0.0,
                                   seed=1).equals(base)


def test_group_answers_give_r2_per_member_attribute(repo_config, group_config):
    attributes = repo_config["attributes"]
    members = group_config["size"]["attributes"]
    ids = [f"ISIC_{i:07d}" for i in range(12)]
    rng = np.random.default_rng(2)
    truth = pl.DataFrame({"isic_id": ids, **{a: rng.uniform(1, 30, 12) for a in members}})
    texts = [answers.group_answer([r[a] + 0.1 for a in members], [2, 2, 2])
             for r in truth.iter_rows(named=True)]
    texts[0] = "no numbers here"
    predictions = pl.DataFrame({"model": "tuned", "isic_id": ids, "attribute": "group:size",
                                "answer": texts, "value": None},
                               schema_overrides={"value": pl.Float64})
    means = {a: 15.0 for a in attributes}
    table = group_r2(predictions, truth, means, {"size": group_config["size"]})
    assert table["attribute"].to_list() == members and (table["group"] == "size").all()
    assert (table["n_unparsable"] == 1).all() and (table["r2_parsed"] > 0.99).all()


# --------------------------------------------------------------------------- baselines


def test_fused_space_ranks_by_the_mean_cosine():
    rng = np.random.default_rng(3)
    db = [rng.normal(size=(200, 8)).astype(np.float32) for _ in range(3)]
    q = [rng.normal(size=(7, 8)).astype(np.float32) for _ in range(3)]

    def cos(a, b):
        return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ \
            (b / np.linalg.norm(b, axis=1, keepdims=True)).T

    mean_cos = sum(cos(qa, da) for qa, da in zip(q, db, strict=True)) / 3
    hits = fused_top_k(db, q, 5)
    assert np.array_equal(hits.idx, np.argsort(-mean_cos, axis=1)[:, :5])
    np.testing.assert_allclose(hits.scores, np.sort(mean_cos, axis=1)[:, ::-1][:, :5],
                               atol=1e-5)
    assert fused_vectors(db).shape == (200, 24)


def test_reciprocal_rank_fusion():
    lists = [np.array([[5, 1, 2, 3]]), np.array([[1, 7, 5, 9]])]
    hits = reciprocal_rank_fusion(lists, 3, k0=60)
    # 1: 1/62 + 1/61, 5: 1/61 + 1/63, then 7 (1/62) before 2 (1/63)
    assert hits.idx.tolist() == [[1, 5, 7]]
    assert hits.scores[0, 0] == pytest.approx(1 / 62 + 1 / 61)
    with pytest.raises(ValueError, match="fewer than k"):
        reciprocal_rank_fusion([np.array([[1, 2]])], 3)


# --------------------------------------------------------------------------- criterion


def test_group_criterion_is_the_max_and_mean_of_the_percentiles():
    attrs = ["a1", "a2"]
    ids = [f"T{i}" for i in range(30)]
    rng = np.random.default_rng(4)
    truth = pl.DataFrame({"isic_id": [*ids, "Q0", "Q1"],
                          "a1": [*rng.uniform(0, 10, 30), 5.0, 1.0],
                          "a2": [*rng.uniform(0, 10, 30), 2.0, None]})
    results = pl.DataFrame({"method": ["composed"] * 4 + ["image_only"] * 2,
                            "attribute": ["group_g"] * 4 + [None] * 2,
                            "query_id": ["Q0", "Q0", "Q1", "Q1", "Q0", "Q1"],
                            "rank": [1, 2, 1, 2, 1, 1], "retrieved_id": ["T1", "T2", "T3",
                                                                         "T4", "T5", "T6"],
                            "score": [0.9, 0.8, 0.9, 0.8, 0.5, 0.5]},
                           schema_overrides={"rank": pl.Int32, "score": pl.Float32})
    table = evaluate_groups(results, truth, ids, {"g": attrs})
    per = evaluate(results.with_columns(attribute=pl.lit(None, pl.String)), truth, ids, attrs)
    for row in table.filter(~pl.col("excluded")).iter_rows(named=True):
        p = per.filter((pl.col("method") == row["method"])
                       & (pl.col("query_id") == row["query_id"])
                       & (pl.col("rank") == row["rank"]))["percentile"].to_list()
        assert row["max"] == pytest.approx(max(p)) and row["mean"] == pytest.approx(sum(p) / 2)
    q1 = table.filter(pl.col("query_id") == "Q1")  # no a2 value: excluded, criteria null
    assert q1["excluded"].all() and q1["max"].is_null().all()
    assert table["method"].unique(maintain_order=True).to_list() == ["composed", "image_only"]
    summary = summarize_groups(table)
    assert summary.filter(pl.col("method") == "composed")["n"].to_list() == [2, 2]
    assert summary.filter(pl.col("method") == "composed")["excluded"].to_list() == [2, 2]
    assert set(summary["criterion"]) == {"max", "mean"}


# --------------------------------------------------------------------------- config


def test_plan_counts_group_jobs(repo_config):
    jobs = plan.planned_jobs(repo_config)
    n = len(repo_config["retrieve"]["groups"])
    assert jobs["embed_groups"] == 2 * repo_config["embed"]["shards"]
    assert jobs["retrieve_groups"] == 4  # image_only reuses method (c)'s hits
    none = copy.deepcopy(repo_config)
    none["retrieve"]["groups"] = {}
    fewer = plan.planned_jobs(none)
    assert "embed_groups" not in fewer and "evaluate_groups" not in fewer
    assert jobs["merge_embeddings"] - fewer["merge_embeddings"] == 2 * n  # train + test
    assert jobs["build_index"] - fewer["build_index"] == n


@pytest.mark.parametrize("bad", [{"attributes": ["tbp_lv_A"], "question": "?"},
                                 {"attributes": ["tbp_lv_A", "tbp_lv_A"], "question": "?"},
                                 {"attributes": ["tbp_lv_A", "tbp_lv_B"]}])
def test_schema_rejects_bad_groups(repo_config, bad):
    cfg = copy.deepcopy(repo_config)
    cfg["retrieve"]["groups"]["bad"] = bad
    with pytest.raises(ConfigError, match="retrieve.groups.bad"):
        check(cfg)


def test_a_group_of_unconfigured_attributes_stops_the_workflow(tmp_path):
    work = copy_workflow(tmp_path / "w")
    change = {"retrieve": {"groups": {"odd": {"attributes": ["tbp_lv_A", "tbp_lv_L"],
                                              "question": "What?"}}}}
    (work / "change.yaml").write_text(yaml.safe_dump(change))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile",
                           "profiles/demo", "--configfile", "config.yaml",
                           "profiles/demo/demo-config.yaml", "change.yaml"], cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "retrieve.groups.odd: tbp_lv_L is not one of the configured attributes" in \
        proc.stdout + proc.stderr
