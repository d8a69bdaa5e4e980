"""The train job's file (skinground.model.job): every field as the rule gave it, and a damaged
or incomplete file named in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from skinground.core.errors import InputError
from skinground.model import job


def rule_job(tmp_path):
    """A Snakemake job of the ``train`` rule as the script sees it (params, input, output,
    resources), with paths a shell would split."""
    odd = tmp_path / "my data; touch pwned"
    return SimpleNamespace(
        params=SimpleNamespace(base=str(odd / "qwen"), checkpoints="results/x/train/ckpt",
                               train={"learning_rate": 1e-4, "lora": {"r": 8}},
                               bookkeeping={"save_steps": 5}, pixels={"image_size": 224}),
        input=SimpleNamespace(tuples="t.parquet", images=str(odd / "train-image.hdf5"),
                              deepspeed="zero2.json"),
        output=SimpleNamespace(adapter="a", loss_csv="l.csv", loss_plot="l.png",
                               summary="s.json"),
        resources={"gpu": 4})


def test_the_job_file_holds_the_rule_s_fields_as_they_are(tmp_path):
    written = job.from_rule(rule_job(tmp_path))
    path = job.write_job(tmp_path / "job.json", written)
    read = job.read_job(path)
    assert read == written
    assert read["images"] == str(tmp_path / "my data; touch pwned" / "train-image.hdf5")
    assert (read["train"], read["bookkeeping"], read["gpus"]) == (
        {"learning_rate": 1e-4, "lora": {"r": 8}}, {"save_steps": 5}, 4)


def test_an_incomplete_or_damaged_job_file_is_named(tmp_path):
    path = tmp_path / "job.json"
    written = job.from_rule(rule_job(tmp_path))
    path.write_text(json.dumps({k: v for k, v in written.items() if k != "train"}))
    with pytest.raises(InputError, match=r"job.json: the train job file lacks train$"):
        job.read_job(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="job.json: not a train job file"):
        job.read_job(path)
    with pytest.raises(InputError, match="no such train job file"):
        job.read_job(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="lacks gpus"):
        job.write_job(path, {k: v for k, v in written.items() if k != "gpus"})
