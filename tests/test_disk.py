"""The disk model (skinground.cost.disk), the model loading and the recommended runtimes
(skinground.cost.runtime): each output's size at paper scale from the config and the shapes,
the adapter's parameters against peft's, every job's time holding its weights' load, and a
recommended runtime never below the estimate."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from skinground.core import config, outputs, plan
from skinground.cost import disk, estimate, flops, runtime

from conftest import REPO

N, Q = flops.PAPER_TRAIN_IMAGES, flops.PAPER_TEST_IMAGES
PILOT = [REPO / "config.yaml", REPO / "profiles" / "pilot" / "pilot-config.yaml"]
PROFILE = REPO / "profiles" / "default" / "config.yaml"
SITE = REPO / "profiles" / "slurm" / "config.yaml"


@pytest.fixture(scope="module")
def paper() -> dict:
    return config.load([REPO / "config.yaml"])


def by_output(table: dict) -> dict[str, dict]:
    return {r["output"]: r for r in table["items"]}


def test_the_paper_runs_disk_from_the_shapes(paper):
    """float16 spaces and shards, float32 indexes, d = 3,584 (MONET's 768): the three
    largest outputs to the byte (but the ids), and a total of ~210 GB."""
    items = by_output(disk.table(paper, N, Q))
    d, monet, images = 3584, 768, N + Q
    spaces = items[outputs.SPACE]
    # 1 + 16 attributes + 3 groups per split for the tuned model, h_im for untuned and MONET
    assert spaces["files"] == 44
    assert spaces["bytes"] == pytest.approx(images * (20 * d + d + monet) * 2, rel=0.01)
    index = items[outputs.INDEX]
    assert index["files"] == 22
    assert index["bytes"] == 21 * N * d * 4 + N * monet * 4  # exact: no ids
    shards = items[outputs.EMBED_SHARD]["bytes"] + items[outputs.GROUP_SHARD]["bytes"]
    assert shards == pytest.approx(spaces["bytes"], rel=0.01)  # the same vectors, kept
    assert items[outputs.EMBED_SHARD]["files"] == 384
    total = disk.table(paper, N, Q)["total_gb"]
    assert 200 < total < 225
    small = total - (spaces["gb"] + index["gb"] + shards / 1e9)
    assert 1 < small < 5  # the tables, the adapter and the checkpoints


def test_every_output_is_a_results_tree_template_of_a_planned_rule(paper):
    templates = {v for k, v in vars(outputs).items() if k.isupper() and isinstance(v, str)}
    jobs = plan.planned_jobs(paper)
    for item in disk.items(paper, N, Q):
        assert item["output"] in templates, item["output"]
        assert item["rule"] in jobs, item["rule"]
        assert item["files"] >= 1 and item["bytes"] > 0, item


def test_the_disk_follows_the_config(paper):
    """Fewer methods, fewer spaces and indexes; W tuples a train image; more checkpoints kept,
    more disk; a pilot's sample a few GB."""
    fewer = config.deep_merge(paper, {"retrieve": {"methods": ["image_only", "monet"],
                                                   "group_methods": ["image_only"]}})
    small = by_output(disk.table(fewer, N, Q))
    assert small[outputs.INDEX]["files"] == 2 and outputs.GROUP_SHARD not in small
    assert small[outputs.SPACE]["files"] == 4
    more = config.deep_merge(paper, {"train": {"save_total_limit": 4}})
    two, four = (by_output(disk.table(c, N, Q))[outputs.CHECKPOINTS]["bytes"]
                 for c in (paper, more))
    assert four == pytest.approx(2 * two)
    pilot = config.load(PILOT)
    train, test = runtime.config_images(pilot)
    assert (train, test) == (5651, 2370)  # split.target_images of 2% of SLICE-3D
    assert 2 < disk.table(pilot, train, test)["total_gb"] < 10


def test_a_config_without_bookkeeping_counts_one_checkpoint(paper):
    """The cost rule's config lacks train's bookkeeping keys (save_total_limit among them):
    its disk table counts one checkpoint and says so."""
    from skinground.core.sections import tracked

    given = by_output(disk.table(paper, N, Q))[outputs.CHECKPOINTS]
    rule_config = {**paper, "train": tracked("train", paper["train"])}  # report.smk's cost
    tracked = by_output(disk.table(rule_config, N, Q))[outputs.CHECKPOINTS]
    assert given["files"] == paper["train"]["save_total_limit"] == 2
    assert tracked["files"] == 1 and tracked["bytes"] == pytest.approx(given["bytes"] / 2)
    assert "save_total_limit not given" in tracked["terms"]


def test_the_adapter_holds_the_parameters_peft_trains(paper):
    """flops.lora_parameters against peft on the 7B's shape (meta tensors: no memory), with
    config.yaml's LoRA and with the demo's (r = 16, lm_head, embed_tokens and the merger
    trained in full)."""
    from test_cost import _hf_config
    from transformers import Qwen2VLForConditionalGeneration

    from skinground.model.lora import attach_lora

    demo = config.load([REPO / "config.yaml", REPO / "profiles/demo/demo-config.yaml"])
    for lora in (paper["train"]["lora"], demo["train"]["lora"]):
        with torch.device("meta"):
            model = attach_lora(Qwen2VLForConditionalGeneration(
                _hf_config(flops.QWEN2VL_7B, [16, 24, 24])), lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert flops.lora_parameters(flops.QWEN2VL_7B, lora) == trainable
    assert flops.lora_parameters(flops.QWEN2VL_7B, paper["train"]["lora"]) == 25_427_968


def test_every_model_job_loads_its_weights(paper):
    """Each model job's time holds its weights read at storage_bandwidth: at half the
    bandwidth the loads take twice as long, the compute is the same."""
    fast = estimate.estimate(paper, estimate.Assumptions())
    slow = estimate.estimate(paper, estimate.Assumptions(storage_bandwidth=0.5e9))
    qwen = flops.param_counts(flops.QWEN2VL_7B)["total"] * 2
    assert 16e9 < qwen < 17e9  # the 7B in bf16
    for f, s in zip(fast["stages"], slow["stages"], strict=True):
        assert f["compute_gpu_hours"] == s["compute_gpu_hours"]
        assert s["load_seconds_per_job"] == pytest.approx(2 * f["load_seconds_per_job"])
        if f["rule"] in plan.MODEL_RULES:
            assert f["load_seconds_per_job"] >= 1.7, f["stage"]  # MONET's 1.7 GB at 1 GB/s
            loads = f["load_jobs"] * f["load_seconds_per_job"] * f["gpus_per_job"] / 3600
            assert f["gpu_hours"] == pytest.approx(f["compute_gpu_hours"] + loads)
        elif f["in_dag"]:
            assert f["load_seconds_per_job"] == 0, f["stage"]
    tuned = next(r for r in fast["stages"] if r["stage"].startswith("embed tuned"))
    assert tuned["load_seconds_per_job"] == pytest.approx(
        (qwen + runtime.adapter_bytes(paper)) / 1e9)
    loading = {m["model"]: m for m in fast["loading"]["models"]}
    assert loading["MONET, float32"]["gb"] == pytest.approx(1.71, abs=0.01)
    # 392 Qwen2-VL jobs (train, 8 predict, 256 embed, 128 group) and MONET's 128
    assert sum(m["jobs"] for m in loading.values()) == 1 + 8 + 256 + 128 + 128
    assert 1.5 < sum(m["gpu_hours"] for m in loading.values()) < 2.5


@pytest.mark.parametrize("hours", [0.0, 0.001, 0.07, 0.25, 0.42, 1.0, 5.6, 48.0])
def test_a_recommended_runtime_is_at_least_the_estimate(hours):
    minutes = runtime.recommend(hours)
    assert minutes >= hours * 60 * runtime.SAFETY and minutes >= runtime.FLOOR_MIN
    assert minutes % runtime.STEP_MIN == 0
    assert minutes - runtime.STEP_MIN < max(hours * 60 * runtime.SAFETY, runtime.FLOOR_MIN)


def test_each_model_rule_gets_a_runtime_beside_the_profiles(paper):
    profile = yaml.safe_load(PROFILE.read_text())
    result = estimate.estimate_with_profiles(paper, estimate.Assumptions(), PROFILE, SITE)
    rows = {r["rule"]: r for r in result["runtimes"]}
    assert set(rows) == set(plan.MODEL_RULES)
    for rule, r in rows.items():
        slowest = max(s["hours_per_job"] for s in result["stages"]
                      if s["in_dag"] and s["rule"] == rule)
        assert r["hours_per_job"] == slowest
        assert r["recommended_min"] >= slowest * 60  # never below the estimate
        assert r["profile_min"] == profile["set-resources"][rule]["runtime"]
        # the profile asks for what the model recommends (short shards: not a flat 6 h)
        assert r["profile_min"] == r["recommended_min"], rule
    # the untuned and MONET shards compute for seconds, the tuned ones for minutes: the floor
    assert rows["embed_shard"]["recommended_min"] == runtime.FLOOR_MIN


def test_the_estimate_is_for_the_configs_scale(paper):
    assert runtime.config_images(paper) == (N, Q)
    pilot = config.load(PILOT)
    a = estimate.Assumptions(*runtime.config_images(pilot))
    result = estimate.estimate(pilot, a)
    assert result["disk"]["train_images"] == 5651
    assert result["total"]["gpu_hours"] < 2  # the pilot: about an hour of one GPU


def test_no_rule_output_is_temp():
    """The disk model's total is the run's peak because nothing is temp(); the shards are kept
    on purpose (docs/cost-and-scale.md, Disk): a later merge would re-extract them all."""
    for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        assert not re.search(r"\btemp\(", path.read_text(encoding="utf-8")), path


def test_the_cost_command_prints_the_disk_and_the_loading():
    proc = subprocess.run([sys.executable, "-m", "skinground.cost", "config.yaml",
                           "--no-gpu-json", "--storage-gbps", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("**An estimate, not this run's measured time.**")
    assert re.search(r"Model loading: \d+ jobs x 8\.3 s \(Qwen2-VL-7B, bf16, 16\.6 GB\)", out)
    assert "at an assumed 2 GB/s" in out
    assert re.search(r"\| embed_shard \| [\d.]+ \| 15 \| 15 \|", out)
    assert re.search(r"\| \*\*total\*\* \| \| [\d,]+ \| \*\*2\d\d\.\d\*\* \|", out)
    assert "| `index/{model}/{space}.faiss` | build_index | 22 |" in out


def test_the_width_comes_from_the_spec(paper):
    """A wider model (d = 2 x 3,584) doubles the Qwen2-VL spaces and indexes."""
    wide = replace(flops.QWEN2VL_7B, text_hidden=2 * 3584, heads=56)
    one, two = (by_output(disk.table(paper, N, Q, spec)) for spec in (flops.QWEN2VL_7B, wide))
    monet = N * 768 * 4
    assert two[outputs.INDEX]["bytes"] - monet == 2 * (one[outputs.INDEX]["bytes"] - monet)


def test_docs_hold_the_generated_disk_block():
    text = (REPO / "docs" / "cost-and-scale.md").read_text(encoding="utf-8")
    assert "<!-- generated: disk " in text and "<!-- end: disk -->" in text
    assert Path(REPO / "bench" / "readme.py").read_text().count('"disk": disk_block') == 1
