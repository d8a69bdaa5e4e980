"""Configs refused before any job runs, by Snakemake itself (a dry run), naming the key.

A run writes only what it owns: the demo's generators (synthetic data, tiny models) may write
only under results/<run>/, and run is a plain name, so no config points a rule at a user's
real data, weights or the workflow's own files. And values the schema lets through but the
rules would trip on later: 2.0 where a whole number is meant, a zero_is_missing column that
is not an attribute, min_pixels above max_pixels."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import copy_workflow, planned_jobs
from test_config import REFUSED

DEMO = ["config.yaml", "profiles/demo/demo-config.yaml"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("own"))


def dry_run(work, change: dict) -> subprocess.CompletedProcess:
    (work / "change.yaml").write_text(yaml.safe_dump(change))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                           "--configfile", *DEMO, "change.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("change", "named"), [
    ({"data": {"metadata": "/data/slice3d/train-metadata.csv"}}, "data.metadata"),
    ({"data": {"images": "../train-image.hdf5"}}, "data.images"),
    ({"model": {"base": "/models/Qwen2-VL-7B-Instruct"}}, "model.base"),
    ({"model": {"encoders": {"monet": {"path": "results/other/monet"}}}},
     "model.encoders.monet.path"),
    ({"model": {"encoders": {"medsiglip": {"path": "/models/medsiglip-448"}}}},
     "model.encoders.medsiglip.path"),  # every encoder the demo builds
    ({"run": "other"}, "data.metadata"),  # the demo's paths are results/demo/'s
])
def test_a_generator_pointed_outside_its_run_is_refused(work, change, named):
    proc = dry_run(work, change)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert named in out and "must lie under results/" in out, out[-2000:]
    assert not (work / "results").exists()


#: The Snakefile refuses with the config loader's own words (tests/test_config.py holds every
#: case to its message); dry runs of one case of each kind: the schema's, a whole number, values
#: that must agree, a key the rules would trip on hours later, the run's name.
PLANNING_CASES = [(change, message) for change, message in REFUSED if message.startswith((
    "config attributes:", "embed.shards:", "model.min_pixels", "retrieve.methods lacks",
    "retrieve.group_methods is empty", "run: "))]


@pytest.mark.parametrize(("change", "named"), PLANNING_CASES,
                         ids=[m.split(":")[0].split(" ")[0] for _, m in PLANNING_CASES])
def test_a_value_the_rules_would_trip_on_is_refused(work, change, named):
    proc = dry_run(work, change)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and named in out, out[-2000:]
    assert not (work / "results").exists()


def test_an_empty_map_in_an_overlay_empties_its_section(work):
    """`retrieve.groups: {}` in an overlay means no groups (Snakemake's merge dropped it, and
    the run kept config.yaml's three), in a config file as in --config."""
    jobs = planned_jobs((dry_run(work, {"retrieve": {"groups": {}}})).stdout)
    assert jobs and not {"embed_groups", "retrieve_groups", "evaluate_groups"} & set(jobs)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                           "--configfile", *DEMO, "--config", "retrieve={'groups': {}}"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "embed_groups" not in planned_jobs(proc.stdout)
    # a later overlay that names groups again wins over an earlier empty one
    (work / "again.yaml").write_text(yaml.safe_dump(
        {"retrieve": {"groups": {"size": {"attributes": ["tbp_lv_areaMM2", "tbp_lv_perimeterMM"],
                                          "question": "How large and how long around?"}}}}))
    (work / "change.yaml").write_text(yaml.safe_dump({"retrieve": {"groups": {}}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                           "--configfile", *DEMO, "change.yaml", "again.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert planned_jobs(proc.stdout)["merge_embeddings"] == planned_jobs(
        dry_run(work, {}).stdout)["merge_embeddings"] - 2 * 2  # 1 group of 3, per split
    assert not (work / "results").exists()


def test_k_above_the_train_set_is_refused_once_the_split_exists(work, tmp_path):
    """retrieve.k over the split's train images: refused at planning once the split exists
    (the retrieve job refuses it too, for a split made in the same run)."""
    split = work / "results" / "demo" / "split"
    split.mkdir(parents=True)
    try:
        (split / "train.txt").write_text("".join(f"ISIC_{i:07d}\n" for i in range(7)))
        proc = dry_run(work, {"retrieve": {"k": 8, "b": 8}})
        assert proc.returncode != 0
        assert ("retrieve.k = 8 is more than the 7 train images of results/demo/split/"
                "train.txt" in proc.stdout + proc.stderr)
        assert dry_run(work, {"retrieve": {"k": 7, "b": 8}}).returncode == 0
    finally:
        shutil.rmtree(work / "results")


def test_real_paths_are_fine_without_the_generators(work, tmp_path):
    data = tmp_path / "slice3d"
    data.mkdir()
    for name in ("train-metadata.csv", "train-image.hdf5"):
        (data / name).touch()
    for name in ("qwen", "monet", "medsiglip"):
        (tmp_path / name).mkdir()
    change = {
        "synthetic": {"enabled": False},
        "data": {"metadata": str(data / "train-metadata.csv"),
                 "images": str(data / "train-image.hdf5")},
        "model": {"build_tiny": False, "base": str(tmp_path / "qwen"),
                  "encoders": {name: {"path": str(tmp_path / name)}
                               for name in ("monet", "medsiglip")}}}
    proc = dry_run(work, change)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    # An encoder's folder missing: the plan goes on and warns with its name and the command
    # that fetches it from its hub repo; a run stops on it before any job starts.
    (tmp_path / "medsiglip").rmdir()
    named = f"model.encoders.medsiglip.path: the folder {tmp_path / 'medsiglip'} does not exist"
    fetch = f"hf download google/medsiglip-448 --local-dir {tmp_path / 'medsiglip'}"
    proc = dry_run(work, change)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert named in out and fetch in out, out[-2000:]
    assert "monet.path" not in out
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1",
                           "--configfile", *DEMO, "change.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "missing_weights_stop" in out, out[-2000:]
    assert named in out and fetch in out
    assert not (work / "results").exists()


def test_the_demo_as_it_is_passes(work):
    assert dry_run(work, {}).returncode == 0


def test_the_train_job_takes_every_path_as_it_is(work, tmp_path):
    """A data path with a space or a ';' reaches the train job as it is: the rule runs no shell
    command (its script writes the job's file, skinground.model.job), so a path can never
    become a second command."""
    data = tmp_path / "my data; touch pwned"
    data.mkdir()
    for name in ("train-metadata.csv", "train-image.hdf5"):
        (data / name).touch()
    models = tmp_path / "models dir"
    for name in ("qwen", "monet", "medsiglip"):
        (models / name).mkdir(parents=True)
    change = {"synthetic": {"enabled": False},
              "data": {"metadata": str(data / "train-metadata.csv"),
                       "images": str(data / "train-image.hdf5")},
              "model": {"build_tiny": False, "base": str(models / "qwen"),
                        "encoders": {name: {"path": str(models / name)}
                                     for name in ("monet", "medsiglip")}}}
    (work / "change.yaml").write_text(yaml.safe_dump(change))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1",
                           "--configfile", *DEMO, "change.yaml", "--", "results/demo/train/"
                           "summary.json"], cwd=work, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert "rule train:" in out and str(data / "train-image.hdf5") in out
    assert not [line for line in out.splitlines() if "scripts/train.py" in line]  # no shell
    assert not (work / "pwned").exists()
