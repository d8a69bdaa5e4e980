"""Snakemake itself on the demo: the data stage end to end, and what a change reruns."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

SMALL = {"synthetic": {"patients": 12, "images": 240}}


def snakemake(workdir: Path, *args: str, extra_config: str | None = None) -> str:
    configs = ["config.yaml", "profiles/demo/demo-config.yaml", "small.yaml"]
    if extra_config:
        configs.append(extra_config)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", *args,
           "--configfile", *configs]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out[-6000:]}")
    return out


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count (empty when nothing to do)."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A copy of the workflow that has run the data stage on a small demo dataset."""
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, work / name)
    for name in ("workflow", "profiles", "envs"):
        shutil.copytree(REPO / name, work / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (work / "small.yaml").write_text(yaml.safe_dump(SMALL))
    snakemake(work, "split", "tuples")
    return work


def test_data_stage_outputs(demo):
    res = demo / "results" / "demo"
    manifest = pl.read_parquet(res / "data/manifest.parquet")
    assert manifest.height == 240
    train = (res / "split/train.txt").read_text().split()
    test = (res / "split/test.txt").read_text().split()
    assert len(train) + len(test) == 240 and not set(train) & set(test)
    patients = dict(zip(manifest["isic_id"], manifest["patient_id"], strict=True))
    assert not {patients[i] for i in train} & {patients[i] for i in test}
    summary = json.loads((res / "split/summary.json").read_text())
    assert summary["test"]["images"] == len(test)
    tuples = pl.read_parquet(res / "tuples/train_tuples.parquet")
    available = manifest.filter(pl.col("isic_id").is_in(train)).select(
        pl.sum_horizontal(pl.col(c).is_not_null() for c in manifest.columns[3:])
    ).to_series()
    assert tuples.height == int(available.sum())  # demo: W = all
    assert set(tuples["isic_id"]) <= set(train)
    for rule in ("synthetic_data", "manifest", "split", "tuples"):
        assert (res / "logs" / f"{rule}.log").exists()
    report = json.loads((res / "data/report.json").read_text())
    assert sum(m["total"] for m in report["missing"].values()) > 0


def test_nothing_changed_nothing_to_do(demo):
    assert planned_jobs(snakemake(demo, "-n", "split", "tuples")) == {}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tuples": {"seed": 1}}, {"tuples": 1}),
        ({"split": {"seed": 7}}, {"split": 1, "tuples": 1}),
        ({"attributes": {"tbp_lv_A": {"decimals": 3}}}, {"tuples": 1}),
        ({"data": {"verify_decode": False}}, {"manifest": 1, "split": 1, "tuples": 1}),
    ],
    ids=["tuples-seed", "split-seed", "answer-decimals", "data-section"],
)
def test_config_change_reruns_exactly_what_it_touches(demo, change, expected):
    (demo / "change.yaml").write_text(yaml.safe_dump(change))
    jobs = planned_jobs(snakemake(demo, "-n", "split", "tuples", extra_config="change.yaml"))
    assert jobs == expected


def test_code_change_reruns_the_rule_that_imports_it(demo):
    lib = demo / "workflow/skinground/tuples.py"
    original = lib.read_text()
    try:
        lib.write_text(original + "\n# edited\n")
        assert planned_jobs(snakemake(demo, "-n", "split", "tuples")) == {"tuples": 1}
    finally:
        lib.write_text(original)
