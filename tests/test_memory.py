"""The memory model (skinground.cost.memory): every job of the paper's run fits what its profile
asks for, the A6000 holds every GPU job, and the model agrees with the peaks bench/scale.py
measured through the real rules."""

import json
from dataclasses import replace

import pytest
import yaml

from skinground.core.plan import planned_jobs
from skinground.cost import memory, report

from conftest import REPO

PROFILE = REPO / "profiles" / "default" / "config.yaml"
SITE = REPO / "profiles" / "slurm" / "config.yaml"
SCALE = REPO / "bench" / "results" / "scale.json"


def profiles():
    return (yaml.safe_load(PROFILE.read_text()), yaml.safe_load(SITE.read_text()))


def test_every_rule_of_the_paper_run_has_a_model(repo_config):
    modelled = {r["rule"].split(":")[0] for r in memory.table(repo_config, *profiles())}
    assert set(planned_jobs(repo_config)) - {"all"} <= modelled


def test_every_job_fits_its_profile_at_paper_scale(repo_config):
    """A profile's mem_mb below the model's host peak plus MARGIN, or a GPU job over the
    A6000's 48 GB, fails here."""
    rows = memory.table(repo_config, *profiles())
    short = [(r["rule"], round(r["host_gb"], 2), r["mem_mb"]) for r in rows if not r["host_fits"]]
    assert not short, f"profile mem_mb below the model (+{memory.MARGIN:.0%}): {short}"
    over = [(r["rule"], r["gpu_gb"]) for r in rows if not r["gpu_fits"]]
    assert not over, f"over the A6000's memory: {over}"
    # The retrieval jobs hold one space: ~4 GB at paper scale, not the 16 spaces' ~160 GB.
    image_text = next(r for r in rows if r["rule"] == "retrieve:image_text")
    assert 4.0 < image_text["host_gb"] < 8.0 and image_text["gpu_gb"] < 8.0


def test_a_short_profile_is_caught(repo_config):
    profile, site = profiles()
    profile["set-resources"]["retrieve"]["mem_mb"] = 4000
    site["default-resources"]["mem_mb"] = 100
    bad = {r["rule"] for r in memory.table(repo_config, profile, site) if not r["host_fits"]}
    assert {"retrieve:image_text", "retrieve:hierarchical", "split", "r2"} <= bad
    profile["set-resources"]["train"]["gpu"] = 4
    big = replace(memory.Workload.paper(repo_config), width=3584 * 12)  # a 12x wider space
    assert not all(r["gpu_fits"] for r in memory.table(repo_config, profile, site, big))


def test_retrieval_peaks_do_not_grow_with_the_attributes(repo_config):
    w = memory.Workload.paper(repo_config)
    few, many = (memory.rule_peaks(replace(w, attributes=a)) for a in (2, 16))
    for rule in ("retrieve:image_text", "retrieve:hierarchical", "build_index",
                 "merge_embeddings"):
        assert few[rule].host == many[rule].host, rule
    assert many["evaluate"].host > few["evaluate"].host  # its table is per attribute


def test_the_cost_command_prints_memory_beside_the_profile(capsys):
    result = report.main([str(REPO / "config.yaml"), "--no-gpu-json"])
    out = capsys.readouterr().out
    assert "Peak memory per job" in out and "| retrieve:image_text |" in out
    assert all(r["host_fits"] and r["gpu_fits"] for r in result["memory"])


MODELS = REPO / "bench" / "results" / "scale_models.json"


@pytest.mark.skipif(not MODELS.exists(), reason="bench/scale_models.py has not been run")
def test_the_model_rules_host_memory_covers_the_measured_peaks():
    """bench/scale_models.py ran the embed and predict rules on three model sizes: the model
    (the weights WEIGHT_COPIES times) is never below a measured peak, and its growth per
    parameter covers the measured growth."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from scale_models import spec_of

    bench = json.loads(MODELS.read_text())
    by_rule: dict[str, list] = {}
    for job in bench["jobs"]:
        model = memory.model_job_host(spec_of(job["dims"]), 4) / memory.MiB
        assert model >= job["peak_mib"], job
        by_rule.setdefault(job["rule"], []).append((job["parameters"], job["peak_mib"], model))
    assert set(by_rule) == {"embed_shard", "predict_shard"}
    for rule, rows in by_rule.items():
        rows.sort()
        assert len(rows) >= 3, rule
        (_, m0, f0), (_, m1, f1) = rows[0], rows[-1]
        assert (f1 - f0) >= (m1 - m0), rule  # the model grows at least as fast


@pytest.mark.skipif(not SCALE.exists(), reason="bench/scale.py has not been run")
def test_the_model_covers_the_measured_peaks():
    """bench/scale.py ran the rules at three sizes up to 100k train images (d = 3,584): the
    model never predicts less than 90% of a measured peak, nor more than 3x it (past the
    smallest size, where fixed buffers dominate)."""
    bench = json.loads(SCALE.read_text())
    checked = 0
    for rule, entry in bench["rules"].items():
        assert len(entry["sizes"]) >= 3, rule
        for measured, model in zip(entry["peak_mib"], entry["model_mib"], strict=True):
            assert model >= 0.9 * measured, (rule, measured, model)
        assert entry["model_mib"][-1] <= 3 * entry["peak_mib"][-1], rule
        checked += 1
    assert checked >= 15
    assert max(r["train_images"] for r in bench["retrieval"]) >= 100_000
    assert bench["width"] == 3584
