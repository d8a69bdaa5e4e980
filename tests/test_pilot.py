"""The pilot (profiles/pilot): config.yaml's run on a 2% sample of the patients, every GPU job
on one GPU. Its config is the paper's but for the sample and the shard counts; it is planned
with the site profile before data and weights are in place; the cost model puts it under an
hour and a half of one GPU; and the sample is the split rule's, by its params."""

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from skinground.core import config as cfg
from skinground.core import plan
from skinground.cost.flops import PAPER_TEST_IMAGES, PAPER_TRAIN_IMAGES
from skinground.data.split import target_images

from conftest import REPO, copy_workflow, make_rows, planned_jobs, write_slice3d

OVERLAY = "profiles/pilot/pilot-config.yaml"
PILOT = ["config.yaml", OVERLAY]
GPU_RULES = ("train", "predict_shard", "embed_shard", "embed_groups", "retrieve",
             "retrieve_groups")


def load(*paths: str) -> dict:
    return cfg.load([REPO / p for p in paths])


def test_the_pilot_is_the_papers_run_on_a_patient_sample():
    paper, pilot = load("config.yaml"), load(*PILOT)
    assert paper["split"]["patient_fraction"] == 1.0  # the paper's run: every patient
    assert pilot["run"] == "pilot" != paper["run"]
    assert pilot["split"] == {**paper["split"], "patient_fraction": 0.02}
    # the same method: only the run's name, the sample and the shard counts differ
    assert {key for key in paper if paper[key] != pilot[key]} == {"run", "split", "predict",
                                                                   "embed"}
    assert pilot["predict"] == {**paper["predict"], "shards": 1}
    assert pilot["embed"] == {**paper["embed"], "shards": 1}
    profile = yaml.safe_load((REPO / "profiles/pilot/config.yaml").read_text())
    assert profile["configfile"] == PILOT
    assert profile["resources"] == {"gpu": 1}


def test_the_pilot_costs_under_an_hour_and_a_half_of_one_gpu(tmp_path):
    """``python -m skinground.cost`` on the pilot's config, at the images its sample aims at
    (2% of SLICE-3D's, split by config.yaml's image fraction), on one GPU; the full run's
    ~40 GPU-hours beside it."""
    train, test = target_images(PAPER_TRAIN_IMAGES + PAPER_TEST_IMAGES,
                                **load(*PILOT)["split"])
    assert (train, test) == (5651, 2370)
    proc = subprocess.run(
        [sys.executable, "-m", "skinground.cost", *PILOT, "--train-images", str(train),
         "--test-images", str(test), "--gpus", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pilot = json.loads(proc.stdout)
    assert pilot["workload"]["train_images"] == train
    assert 0.3 < pilot["total"]["gpu_hours"] < 1.5
    assert pilot["jobs"]["embed_shard"] == 3 * 2  # tuned, untuned, MONET x train, test
    assert pilot["jobs"]["predict_shard"] == 1


def stand_ins(work: Path) -> str:
    """Empty files for SLICE-3D (a plan reads neither) and weights folders that do not exist,
    as .ci/run's dry run has them; the overlay's name."""
    data = work.parent / "slice3d"
    data.mkdir()
    (data / "train-metadata.csv").touch()
    (data / "train-image.hdf5").touch()
    (work / "stand-ins.yaml").write_text(yaml.safe_dump({
        "data": {"metadata": str(data / "train-metadata.csv"),
                 "images": str(data / "train-image.hdf5")},
        "model": {"base": str(work.parent / "no-qwen"),
                  "encoders": {"monet": {"path": str(work.parent / "no-monet")}}}}))
    return "stand-ins.yaml"


def test_the_pilot_is_planned_with_the_site_profile_before_data_and_weights(tmp_path):
    """The README's pilot command as a dry run (the overlays given on the command line, to
    add the stand-ins): the whole DAG, the plan's jobs, results/pilot/, every GPU job on one
    GPU of the site's model."""
    work = copy_workflow(tmp_path / "wf")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--profile",
         "profiles/pilot", "-n", "--configfile", *PILOT, stand_ins(work)],
        cwd=work, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert planned_jobs(out) == plan.planned_jobs(load(*PILOT))
    outputs = [path for line in out.splitlines() if line.startswith("    output: ")
               for path in line.split(": ", 1)[1].split(", ")]
    assert outputs and all(path.startswith("results/pilot/") for path in outputs)
    for rule in GPU_RULES:
        block = out.split(f"\nrule {rule}:\n", 1)[1].split("\n\n", 1)[0]
        assert re.search(r"\bgpu=1\b", block) and "gpu_model=a6000" in block, (rule, block)


@pytest.mark.slow
def test_the_sample_is_the_split_rules_and_reaches_its_params(tmp_path):
    """The manifest and split rules on a small SLICE-3D-format dataset (20 patients) with
    split.patient_fraction 0.5: whole patients, about half of them, in the split's lists
    only; another fraction replans the split (its params) and not the manifest."""
    work = copy_workflow(tmp_path / "wf")
    rows = make_rows(200, 20)
    csv_path, images = write_slice3d(tmp_path / "slice3d", rows)
    change = {"run": "sample", "split": {"patient_fraction": 0.5},
              "data": {"metadata": str(csv_path), "images": str(images)}}
    (work / "sample.yaml").write_text(yaml.safe_dump(change))

    def snakemake(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "1", *args, "--configfile",
             "config.yaml", "sample.yaml"], cwd=work, capture_output=True, text=True,
            timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return out

    snakemake("split")
    split = work / "results/sample/split"
    ids = {s: (split / f"{s}.txt").read_text().split() for s in ("train", "test")}
    patient = {r["isic_id"]: r["patient_id"] for r in rows}
    kept = {patient[i] for s in ids.values() for i in s}
    assert 8 <= len(kept) <= 12 and ids["test"]
    every = pl.DataFrame(rows).filter(pl.col("patient_id").is_in(list(kept)))["isic_id"]
    assert sorted(ids["train"] + ids["test"]) == sorted(every)  # whole patients
    assert "Nothing to be done" in snakemake("split", "-n")
    (work / "sample.yaml").write_text(yaml.safe_dump(
        {**change, "split": {"patient_fraction": 0.6}}))
    replanned = snakemake("split", "-n")
    assert planned_jobs(replanned) == {"split": 1}
    assert "Params have changed" in replanned
