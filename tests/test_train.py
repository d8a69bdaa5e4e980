"""Training stage: LoRA targets, answer-only labels, DeepSpeed ZeRO-2 training through the
entry point (torchrun, one CPU process), resuming an interrupted run, loading the adapter."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from skinground.core import provenance
from skinground.core.errors import InputError
from skinground.core.sections import bookkeeping, pixel_params, tracked
from skinground.data.metadata import DataError
from skinground.demo import tiny
from skinground.model import batches, checkpoints, job, loading, lora, loss_log, train
from skinground.model.loading import ModelLoadError

from conftest import (
    ANSWERS,
    CORPUS,
    REPO,
    build_train_base,
    pids_with_argv,
    run_group,
    write_train_tuples,
)

SCRIPT = REPO / "workflow" / "scripts" / "train.py"
ZERO2 = REPO / "workflow" / "deepspeed" / "zero2.json"

N_IMAGES = 12

DECODER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
VISION = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def train_config(repo_config: dict, **overrides) -> dict:
    cfg = copy.deepcopy(repo_config["train"])
    cfg["lora"].update(r=4, alpha=8, dropout=0.0,
                       modules_to_save=["lm_head", "embed_tokens", "visual.merger"])
    cfg.update(learning_rate=1e-2, lr_scheduler="constant", epochs=1, max_steps=4,
               global_batch=4, per_device_batch=4, precision="fp32", save_steps=2,
               save_total_limit=3, logging_steps=1, dataloader_workers=0, seed=0)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_train_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """An HDF5 image store (tiles of different sizes) and its tuples parquet."""
    return write_train_tuples(tmp_path_factory.mktemp("data"), N_IMAGES)


@pytest.fixture(scope="module")
def model_cfg(repo_config) -> dict:
    return dict(repo_config["model"], image_size=56, min_pixels=None, max_pixels=None)


# --------------------------------------------------------------------------- LoRA targets


def test_config_regex_selects_decoder_and_vision_blocks_not_patch_embed(base, repo_config):
    model, _ = loading.load_mllm(base)
    regex = repo_config["train"]["lora"]["target_modules"]
    names = set(lora.target_module_names(model, regex))
    text = model.config.text_config.num_hidden_layers
    depth = model.config.vision_config.depth
    expected = {f"model.language_model.layers.{i}.{m}" for i in range(text) for m in DECODER}
    expected |= {f"model.visual.blocks.{i}.{m}" for i in range(depth) for m in VISION}
    assert names == expected
    assert "model.visual.patch_embed.proj" not in names
    assert not any("merger" in n or "lm_head" in n for n in names)


def test_lora_refuses_a_regex_that_hits_the_conv3d(base, repo_config):
    model, _ = loading.load_mllm(base)
    cfg = dict(repo_config["train"]["lora"], target_modules=r".*proj$")
    with pytest.raises(lora.LoraConfigError, match="patch_embed.proj"):
        lora.attach_lora(model, cfg)
    with pytest.raises(lora.LoraConfigError, match="matches no module"):
        lora.attach_lora(model, dict(cfg, target_modules=r"nothing\.here"))


def test_attach_lora_trains_adapters_and_modules_to_save_only(base, repo_config):
    model, _ = loading.load_mllm(base)
    peft_model = lora.attach_lora(model, train_config(repo_config)["lora"])
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("lm_head.modules_to_save" in n for n in trainable)
    assert any("merger.modules_to_save" in n for n in trainable)


# --------------------------------------------------------------------------- data + labels


def test_dataset_reads_lazily_and_caches(data):
    ds = batches.TupleDataset(data["tuples"], data["images"], cache_images=True)
    assert len(ds) == 2 * N_IMAGES and ds.n_images() == N_IMAGES
    assert ds._store is None  # nothing open until an item is read
    item = ds[0]
    assert item["image"].mode == "RGB" and item["answer"] == ANSWERS[0]
    assert ds[1]["image"] is item["image"]  # same image, decoded once
    assert ds.__getstate__()["_store"] is None  # a worker opens its own handle


def test_dataset_errors_name_the_file(data, tmp_path):
    with pytest.raises(batches.TrainError, match="tuples file not found"):
        batches.TupleDataset(tmp_path / "none.parquet", data["images"])
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"isic_id": ["x"], "question": ["q"]}).write_parquet(bad)
    with pytest.raises(batches.TrainError, match=r"bad.parquet: missing column\(s\) attribute"):
        batches.TupleDataset(bad, data["images"])
    other = tmp_path / "other.parquet"
    pl.DataFrame({"isic_id": ["ISIC_9"], "attribute": ["a"], "question": ["q"],
                  "answer": ["1"]}).write_parquet(other)
    with pytest.raises(DataError, match="no image for 1 tuple id"):
        batches.TupleDataset(other, data["images"])


@pytest.mark.parametrize("pixels", [{"image_size": 56}, {"min_pixels": 784, "max_pixels": 12544}])
def test_labels_cover_exactly_the_answer_and_end_of_turn(base, data, pixels):
    _, processor = loading.load_mllm(base, **pixels)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    items = [ds[i] for i in (0, 5, 9, 22)]  # answers of 4-6 characters, tiles 40-227 px
    items[1] = dict(items[1], answer="7")
    batch = batches.PerTupleCollator(processor)(items)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                          "mm_token_type_ids", "labels"}
    tok = processor.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert len(set(mask.sum(1).tolist())) > 1  # different lengths: there is padding
    if "min_pixels" in pixels:  # native resolution: different numbers of image tokens
        assert len(set(batch["image_grid_thw"].prod(1).tolist())) > 1
    for i, item in enumerate(items):
        labelled = labels[i] != batches.IGNORE_INDEX
        assert torch.equal(labels[i][labelled], ids[i][labelled])
        assert tok.decode(ids[i][labelled]) == item["answer"] + "<|im_end|>"
        positions = labelled.nonzero().flatten()
        # one contiguous run ending at the last real token; padding is never labelled
        assert positions.tolist() == list(range(positions[0], int(mask[i].sum())))
        assert (labels[i][mask[i] == 0] == batches.IGNORE_INDEX).all()
        assert not labelled[batch["mm_token_type_ids"][i] == 1].any()
    assert (mask == 0).any() and (ids[mask == 0] == tok.pad_token_id).all()


def test_collated_batch_runs_the_model(base, data):
    model, processor = loading.load_mllm(base)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    batch = batches.PerTupleCollator(processor)([ds[i] for i in range(3)])
    out = model(**batch)
    assert torch.isfinite(out.loss)


# --------------------------------------------------------------------------- config checks


def test_deepspeed_config_checks(tmp_path):
    assert train.load_deepspeed_config(ZERO2)["zero_optimization"]["stage"] == 2
    with pytest.raises(train.TrainError, match=r"not found: .*missing\.json"):
        train.load_deepspeed_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(train.TrainError, match=r"bad\.json is not valid JSON"):
        train.load_deepspeed_config(bad)
    stage3 = tmp_path / "z3.json"
    stage3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(train.TrainError, match=r"z3\.json: zero_optimization\.stage must be 2"):
        train.load_deepspeed_config(stage3)


def test_the_global_batch_holds_on_any_process_count():
    """per_device_batch is a process's most; the global batch is what trains. The demo's
    (128, per_device_batch 128) raised TrainError on 2 or 4 GPUs."""
    from skinground.model.global_batch import train_batch

    assert [train_batch(16, 4, n) for n in (1, 2, 4)] == [(4, 4), (4, 2), (4, 1)]  # the paper
    assert [train_batch(128, 128, n) for n in (1, 2, 4, 8)] == [(128, 1), (64, 1), (32, 1),
                                                                (16, 1)]  # the demo
    assert train_batch(16, 3, 1) == (2, 8)  # the largest divisor under the most
    assert train_batch(12, 8, 2) == (6, 1)
    for global_batch, most, n in [(16, 4, 3), (128, 128, 3), (4, 4, 8)]:
        with pytest.raises(InputError, match=rf"^train.global_batch \({global_batch}\) must "
                                             rf"be a multiple of the training processes "
                                             rf"\(GPUs: {n}\)$"):
            train_batch(global_batch, most, n)
    for global_batch, most, n in [(16, 4, 1), (128, 128, 4), (24, 5, 2), (7, 100, 7)]:
        per_device, accumulation = train_batch(global_batch, most, n)
        assert per_device <= most and per_device * accumulation * n == global_batch


def test_checkpoints_of_another_run_are_dropped(tmp_path):
    fp = {"train": {"learning_rate": 1e-3}}
    assert checkpoints.prepare_checkpoints(tmp_path, fp) is None
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()  # interrupted while saving: incomplete
    assert checkpoints.prepare_checkpoints(tmp_path, fp) == tmp_path / "checkpoint-4"
    assert checkpoints.prepare_checkpoints(tmp_path, {"train": {"learning_rate": 2e-3}}) is None
    assert not list(tmp_path.glob("checkpoint-*"))


def _checkpoint(root: Path, step: int, max_steps: int = 10) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step,
                                                         "max_steps": max_steps}))
    return path


FP = {"code": "c0de", "processes": 1, "train": {"learning_rate": 1e-3}}


def test_a_finished_runs_checkpoints_are_never_resumed(tmp_path, caplog):
    """Marked finished (its adapter written), or holding the run's last step (killed between
    the adapter and the mark): the rerun trains from the start, and nothing is left to
    resume later."""
    assert checkpoints.prepare_checkpoints(tmp_path, FP) is None
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 8)
    checkpoints.mark_finished(tmp_path, 10)
    assert checkpoints.prepare_checkpoints(tmp_path, FP) is None
    assert not list(tmp_path.glob("checkpoint-*"))
    assert not (tmp_path / checkpoints.FINISHED_FILE).exists()
    _checkpoint(tmp_path, 5)
    _checkpoint(tmp_path, 10)  # the last step, no mark
    assert checkpoints.prepare_checkpoints(tmp_path, FP) is None
    assert not list(tmp_path.glob("checkpoint-*"))
    _checkpoint(tmp_path, 5)  # an interrupted run of the same inputs: resumed
    assert checkpoints.prepare_checkpoints(tmp_path, FP) == tmp_path / "checkpoint-5"


def test_a_changed_process_count_starts_over_once(tmp_path, caplog):
    """A 2-process run's checkpoints met by 1 process (a smaller node, an edited profile): one
    warning naming both counts, the checkpoints set aside, training from the start; the next
    start finds nothing to trip over (DeepSpeed's 'DP world size of 2' error never loops)."""
    import logging

    checkpoints.prepare_checkpoints(tmp_path, dict(FP, processes=2))
    _checkpoint(tmp_path, 4)
    with caplog.at_level(logging.WARNING, logger="skinground.model.checkpoints"):
        assert checkpoints.prepare_checkpoints(tmp_path, FP) is None
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "made by 2 process(es), this run has 1" in warning
    assert not list(tmp_path.glob("checkpoint-*"))
    caplog.clear()
    _checkpoint(tmp_path, 2)  # this run's own, interrupted: resumed, no warning
    assert checkpoints.prepare_checkpoints(tmp_path, FP) == tmp_path / "checkpoint-2"
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="skinground.model.checkpoints"):
        checkpoints.prepare_checkpoints(tmp_path, dict(FP, code="edited"))
    assert "another run's (code)" in caplog.records[0].getMessage()


def test_the_fingerprint_is_content_not_paths(tmp_path, base, data, model_cfg, repo_config):
    """The same base, tuples and images elsewhere (a moved run folder) give the same
    fingerprint; a changed byte of any of them, or another process count, another."""
    cfg = train_config(repo_config)

    def fingerprint(root: Path, **kw) -> dict:
        args = dict(code="c", base=root / "base", tuples=root / "tuples.parquet",
                    images=root / "train-image.hdf5", pixels=model_cfg,
                    train_cfg=tracked("train", cfg),
                    deepspeed_cfg={"zero_optimization": {"stage": 2}}, processes=1)
        return checkpoints.run_fingerprint(**{**args, **kw})

    for root in (tmp_path / "a", tmp_path / "moved" / "b"):
        shutil.copytree(base, root / "base")
        shutil.copy2(data["tuples"], root / "tuples.parquet")
        shutil.copy2(data["images"], root / "train-image.hdf5")
    a, b = fingerprint(tmp_path / "a"), fingerprint(tmp_path / "moved" / "b")
    assert a == b and str(tmp_path) not in json.dumps(a)
    assert fingerprint(tmp_path / "a", processes=2) != a
    with open(tmp_path / "a" / "base" / "config.json", "a") as f:
        f.write(" ")
    assert provenance.differing(a, fingerprint(tmp_path / "a")) == ["content_sha256.base"]


# --------------------------------------------------------------------------- training


def script_command(tmp: Path, base: Path, data: dict, model_cfg: dict, train_cfg: dict,
                   deepspeed: Path = ZERO2) -> tuple[list[str], dict]:
    """The train script's command line on a job file written as the rule writes it (outputs
    under ``tmp``; ``train_cfg`` the whole section, split as the rule splits it) and its
    environment."""
    out = {name: tmp / name for name in ("ckpt", "adapter", "loss.csv", "loss.png",
                                         "summary.json")}
    job_file = job.write_job(tmp / "job.json", {
        "base": base, "tuples": data["tuples"], "images": data["images"],
        "deepspeed": deepspeed, "checkpoints": out["ckpt"], "adapter": out["adapter"],
        "loss_csv": out["loss.csv"], "loss_plot": out["loss.png"],
        "summary": out["summary.json"], "pixels": pixel_params(model_cfg),
        "train": tracked("train", train_cfg), "bookkeeping": bookkeeping("train", train_cfg),
        "gpus": 1})
    cmd = [sys.executable, str(SCRIPT), str(job_file)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow"), env.get("PYTHONPATH", "")])
    # A fresh extension cache: training must not JIT-compile any DeepSpeed op.
    env["TORCH_EXTENSIONS_DIR"] = str(tmp / "torch_extensions")
    return cmd, env


def run_script(tmp: Path, base: Path, data: dict, model_cfg: dict, train_cfg: dict,
               deepspeed: Path = ZERO2) -> subprocess.CompletedProcess:
    cmd, env = script_command(tmp, base, data, model_cfg, train_cfg, deepspeed)
    return run_group(cmd, timeout=600, env=env)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module", params=["per_image", "per_tuple"])
def trained(request, tmp_path_factory, base, data, model_cfg, repo_config):
    """A 4-step DeepSpeed run (checkpoints at steps 2 and 4) in each layout, through the entry
    point. Returns (output folder, process, train config)."""
    tmp = tmp_path_factory.mktemp(f"run_{request.param}")
    cfg = train_config(repo_config, layout=request.param)
    proc = run_script(tmp, base, data, model_cfg, cfg)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return tmp, proc, cfg


def test_training_writes_adapter_loss_log_and_plot(trained):
    tmp, proc, cfg = trained
    assert "built successfully" not in proc.stderr  # no DeepSpeed op was compiled
    summary = json.loads((tmp / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from_step"] == 0
    assert summary["processes"] == 1 and summary["precision"] == "fp32"
    assert summary["layout"] == cfg["layout"] and summary["tuples"] == 2 * N_IMAGES
    rows = read_csv(tmp / "loss.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == list(loss_log.LOSS_COLUMNS)
    assert all(float(r["loss"]) > 0 and float(r["grad_norm"]) > 0 for r in rows)
    assert summary["first_loss"] == pytest.approx(float(rows[0]["loss"]))
    assert (tmp / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp / "adapter").iterdir()}
    # the adapter says what made it: its checkpoints' fingerprint, no path in it
    record = provenance.read_record(tmp / "adapter")
    assert record == json.loads((tmp / "ckpt" / checkpoints.FINGERPRINT_FILE).read_text())
    assert record["train"]["layout"] == cfg["layout"] and record["processes"] == 1
    assert str(tmp) not in json.dumps(record)
    assert not list(tmp.glob(".*.tmp"))  # atomic writes left nothing behind
    assert {p.name for p in (tmp / "ckpt").glob("checkpoint-*")} == {"checkpoint-2",
                                                                    "checkpoint-4"}


def test_adapter_changes_the_model(trained, base, data):
    tmp, _, _ = trained
    model, processor = loading.load_mllm(base)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    batch = batches.PerTupleCollator(processor)([ds[i] for i in range(2)])
    with torch.no_grad():
        before = model(**batch).logits
        tuned = lora.attach_adapter(loading.load_mllm(base)[0], tmp / "adapter")
        assert type(tuned) is type(model)  # merged: a plain model again
        after = tuned(**batch).logits
        unmerged = lora.attach_adapter(loading.load_mllm(base)[0], tmp / "adapter",
                                       merge=False)(**batch).logits
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, unmerged, atol=1e-4, rtol=1e-4)


def test_interrupted_run_resumes_from_its_last_checkpoint(trained, base, data, model_cfg,
                                                         repo_config, tmp_path):
    done, _, cfg = trained
    full = read_csv(done / "loss.csv")
    # The same run, killed after checkpoint-2 was written: no checkpoint-4, no outputs, not
    # marked finished.
    shutil.copytree(done / "ckpt", tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "ckpt" / "checkpoint-4")
    (tmp_path / "ckpt" / checkpoints.FINISHED_FILE).unlink()
    proc = run_script(tmp_path, base, data, model_cfg, cfg)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "checkpoint-2 (step 2)" in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps_this_run"], summary["steps"]) == (2, 2, 4)
    state = json.loads((tmp_path / "ckpt" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Steps 1-2 come from the checkpoint's log, 3-4 continue it: same losses as without the
    # interruption (model, optimizer, data order and RNG all restored).
    resumed = read_csv(tmp_path / "loss.csv")
    assert [int(r["step"]) for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(resumed, full, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)


def test_a_rerun_of_a_finished_run_recomputes_the_same_adapter(trained, base, data, model_cfg,
                                                              tmp_path):
    """The training run again over a finished run's folders (a ``--forcerun train``, or a
    rerun after its inputs were regenerated byte for byte): it trains from the start, never
    one step past the end, and gives the same adapter bytes (CPU training is deterministic)."""
    done, _, cfg = trained
    for name in ("ckpt", "adapter"):
        shutil.copytree(done / name, tmp_path / name)
    proc = run_script(tmp_path, base, data, model_cfg, cfg)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "resuming from" not in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps"]) == (0, 4)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (tmp_path / "adapter" / name).read_bytes() == (done / "adapter" / name).read_bytes()


def test_a_code_change_reaches_an_interrupted_runs_resume(trained, base, data, model_cfg,
                                                         tmp_path):
    """An interrupted run's checkpoints, and then the training code changed: the rerun of the
    changed code trains from the start (its checkpoints name the old code), so the change
    reaches the adapter; the unchanged code resumes."""
    done, _, cfg = trained
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "workflow", copy / "workflow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    lib = copy / "workflow" / "skinground" / "model" / "batches.py"
    lib.write_text(lib.read_text() + "\nCHANGED = True\n")
    for changed in (True, False):
        out = tmp_path / ("changed" if changed else "same")
        shutil.copytree(done / "ckpt", out / "ckpt")
        shutil.rmtree(out / "ckpt" / "checkpoint-4")
        (out / "ckpt" / checkpoints.FINISHED_FILE).unlink()
        cmd, env = script_command(out, base, data, model_cfg, cfg)
        if changed:
            cmd[1] = str(copy / "workflow" / "scripts" / "train.py")
            env["PYTHONPATH"] = str(copy / "workflow")
        proc = run_group(cmd, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-5000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["resumed_from_step"] == (0 if changed else 2), changed
        assert ("another run's (code)" in proc.stderr) is changed


def test_script_rejects_bad_deepspeed_config_before_launching(tmp_path, base, data, model_cfg,
                                                             repo_config):
    stage3 = tmp_path / "zero3.json"
    stage3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    proc = run_script(tmp_path, base, data, model_cfg, train_config(repo_config), stage3)
    assert proc.returncode == 1
    assert "zero3.json: zero_optimization.stage must be 2" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr


# --------------------------------------------------------------------------- attach_adapter


def test_attach_adapter_errors_name_the_path(trained, base, tmp_path):
    done, _, _ = trained
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match=f"does not exist: {missing}"):
        lora.attach_adapter(loading.load_mllm(base)[0], missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=f"no adapter_config.json in adapter directory "
                                             f"{empty}"):
        lora.attach_adapter(loading.load_mllm(base)[0], empty)
    # a pickled adapter (adapter_model.bin, read by torch.load) is never accepted
    pickled = tmp_path / "pickled"
    shutil.copytree(done / "adapter", pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match=r"no adapter_model.safetensors in .*pickled "
                                             r"\(found: adapter_model.bin\)"):
        lora.attach_adapter(loading.load_mllm(base)[0], pickled)
    # an adapter whose target modules do not exist in this base
    odd = tmp_path / "odd"
    shutil.copytree(done / "adapter", odd)
    cfg = json.loads((odd / "adapter_config.json").read_text())
    cfg["target_modules"] = r".*no_such_module$"
    (odd / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"adapter {odd} does not fit"):
        lora.attach_adapter(loading.load_mllm(base)[0], odd)


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_adapter_is_named_in_one_line(trained, base, tmp_path, damage):
    """A truncated adapter_model.safetensors raised SafetensorError through the query and the
    tuned jobs; it is a one-line error naming the file and the fix."""
    done, _, _ = trained
    cut = tmp_path / "adapter"
    shutil.copytree(done / "adapter", cut)
    weights = cut / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100] if damage == "truncated" else b"\xff" * 8 + data[8:])
    with pytest.raises(ModelLoadError) as err:
        lora.attach_adapter(loading.load_mllm(base)[0], cut)
    message = str(err.value)
    assert message.startswith(f"{weights}: damaged (") and "\n" not in message
    assert message.endswith(f"delete {cut} and rerun the workflow to retrain it")


def test_attach_adapter_rejects_an_adapter_for_another_base(trained, tmp_path):
    done, _, _ = trained
    other = tiny.build_tiny_qwen2vl(tmp_path / "other", corpus=CORPUS, image_size=56,
                                      text_hidden=32, intermediate=64, mrope_section=(1, 1, 2))
    with pytest.raises(ModelLoadError, match=f"adapter {done / 'adapter'} does not fit"):
        lora.attach_adapter(loading.load_mllm(other)[0], done / "adapter")


# --------------------------------------------------------------------------- reliability


def trainers_of(checkpoints: Path) -> list[int]:
    """Pids of live processes whose command line names this checkpoint directory."""
    return pids_with_argv(lambda argv: str(checkpoints).encode() in argv
                          and any(a.endswith(b"train.py") for a in argv))


@pytest.mark.slow
def test_a_killed_training_leaves_no_worker_and_resumes_to_the_same_adapter(
        tmp_path, base, data, model_cfg, repo_config):
    """kill -9 of the job's process group mid-training (as Snakemake's group is killed): no
    training process outlives it, and the rerun resumes to the uninterrupted run's adapter."""
    import signal
    import time

    cfg = train_config(repo_config, max_steps=300, save_steps=10, save_total_limit=2,
                       logging_steps=10)
    whole = tmp_path / "whole"
    proc = run_script(whole, base, data, model_cfg, cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    cmd, env = script_command(killed, base, data, model_cfg, cfg)
    job = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "ckpt" / "checkpoint-10" / "trainer_state.json").exists():
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint-10"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    time.sleep(3)
    assert not trainers_of(killed / "ckpt"), "a training process outlived its job"
    assert not (killed / "adapter").exists()  # killed before the end

    proc = run_script(killed, base, data, model_cfg, cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    summary = json.loads((killed / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < 300 and summary["steps"] == 300
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (killed / "adapter" / name).read_bytes() == (whole / "adapter" / name).read_bytes()


def test_a_second_trainer_on_the_same_checkpoints_stops(tmp_path, base, data, model_cfg,
                                                        repo_config):
    held = checkpoints.lock_checkpoints(tmp_path / "ckpt")  # another trainer's lock
    try:
        proc = run_script(tmp_path, base, data, model_cfg, train_config(repo_config))
    finally:
        held.close()
    assert proc.returncode == 1
    assert f"{tmp_path / 'ckpt'}: another training process (pid {os.getpid()})" in proc.stderr
    assert "Traceback" not in proc.stderr and "launching" not in proc.stderr


@pytest.mark.parametrize("errno_name", ["ENOSYS", "EOPNOTSUPP"])
def test_a_file_system_without_flock_trains_unlocked_with_a_warning(tmp_path, monkeypatch,
                                                                    caplog, errno_name):
    import errno
    import fcntl
    import logging

    def no_flock(f, op):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING, logger="skinground.model.checkpoints"):
        held = checkpoints.lock_checkpoints(tmp_path / "ckpt")
    held.close()
    assert "does not support flock" in caplog.text and "unlocked" in caplog.text
    assert str(tmp_path / "ckpt") in caplog.text


@pytest.mark.slow
def test_a_corrupt_image_stops_training_naming_it(tmp_path, base, repo_config, model_cfg):
    """With data.verify_decode off the manifest does not decode; a corrupt JPEG met by a
    training step stops the job with the id, not a traceback."""
    import h5py
    import numpy as np

    (tmp_path / "data").mkdir()
    data = write_train_tuples(tmp_path / "data", 6)
    with h5py.File(data["images"], "a") as h5:
        good = h5["ISIC_0000004"][()].tobytes()
        del h5["ISIC_0000004"]
        h5.create_dataset("ISIC_0000004", data=np.bytes_(good[:300]))  # truncated
    cfg = train_config(repo_config, max_steps=20, dataloader_workers=1)
    proc = run_script(tmp_path / "run", base, data, model_cfg, cfg)
    assert proc.returncode != 0
    assert "image ISIC_0000004: not a readable image" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


# --------------------------------------------------------------------------- several processes

#: Test-only: Accelerate picks gloo on the CPU as it picks nccl on CUDA (its sitecustomize).
EMULATE_CUDA = REPO / "tests" / "emulate_cuda"


def launch_ranks(tmp: Path, base: Path, data: dict, model_cfg: dict, train_cfg: dict,
                 processes: int) -> subprocess.CompletedProcess:
    """The train script under torchrun with ``processes`` training processes, as on a node
    with that many GPUs (the CUDA path emulated on CPU, tests/emulate_cuda); each rank's
    batches recorded in ``tmp/batches.rank<R>``."""
    cmd, env = script_command(tmp, base, data, model_cfg, train_cfg)
    cmd[1:2] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(processes), str(SCRIPT)]
    env["PYTHONPATH"] = os.pathsep.join([str(EMULATE_CUDA), env["PYTHONPATH"]])
    env["SKINGROUND_TEST_BATCHES"] = str(tmp / "batches")
    proc = run_group(cmd, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "built successfully" not in proc.stderr  # no DeepSpeed op compiled
    return proc


def rank_batches(tmp: Path, rank: int) -> list[list[tuple[str, str]]]:
    """The batches rank ``rank`` collated, in order: lists of (isic_id, question)."""
    path = tmp / f"batches.rank{rank}"
    return [[tuple(t) for t in json.loads(line)] for line in path.read_text().splitlines()]


def interrupted(done: Path, to: Path, last: int) -> Path:
    """``done``'s checkpoints as an interrupted run would have left them: without its last
    checkpoint (step ``last``) and the finished mark."""
    shutil.copytree(done / "ckpt", to / "ckpt")
    shutil.rmtree(to / "ckpt" / f"checkpoint-{last}")
    (to / "ckpt" / checkpoints.FINISHED_FILE).unlink()
    return to


EPOCH_STEPS = 3  # 24 tuples, 8 a step


@pytest.fixture(scope="module", params=batches.LAYOUTS)
def ranks(request, tmp_path_factory, base, data, model_cfg, repo_config):
    """One epoch (3 steps of 8 tuples; a checkpoint at step 2) on 2 processes of 4 tuples,
    and on 1 process of 4 tuples with gradient accumulation 2. Returns (folder, config)."""
    cfg = train_config(repo_config, layout=request.param, global_batch=8, per_device_batch=4,
                       max_steps=EPOCH_STEPS, save_steps=2)
    root = tmp_path_factory.mktemp(f"ranks_{request.param}")
    for n in (1, 2):
        launch_ranks(root / f"p{n}", base, data, model_cfg, cfg, n)
    return root, cfg


@pytest.mark.slow
def test_two_processes_train_distinct_tuples_that_make_the_epoch(ranks, data):
    root, cfg = ranks
    for n, accumulation in ((1, 2), (2, 1)):
        summary = json.loads((root / f"p{n}" / "summary.json").read_text())
        assert (summary["processes"], summary["per_device_batch"],
                summary["gradient_accumulation"], summary["global_batch"]) == (
                    n, 4, accumulation, 8)
    r0, r1 = (rank_batches(root / "p2", r)[:EPOCH_STEPS] for r in (0, 1))
    assert [len(b) for b in r0 + r1] == [4] * 2 * EPOCH_STEPS
    seen0, seen1 = ({t for b in r for t in b} for r in (r0, r1))
    assert not seen0 & seen1  # no tuple on both ranks
    tuples = pl.read_parquet(data["tuples"])
    assert seen0 | seen1 == set(zip(tuples["isic_id"], tuples["question"], strict=True))
    # Step s of the 2 ranks is the 2 micro-batches of step s of 1 process, rank by rank.
    one = rank_batches(root / "p1", 0)[:2 * EPOCH_STEPS]
    assert one[0::2] == r0 and one[1::2] == r1
    if cfg["layout"] == "per_image":  # a batch's tuples come image by image
        assert all(len({t[0] for t in b}) == 2 for b in r0 + r1)


@pytest.mark.slow
def test_two_processes_learn_as_one_with_gradient_accumulation(ranks):
    """The same losses to the last bit; the gradient norms to the order of a sum over ranks
    (the all-reduce adds the ranks' gradients in another order than accumulation does)."""
    root, _ = ranks
    one, two = (read_csv(root / f"p{n}" / "loss.csv") for n in (1, 2))
    assert [r["step"] for r in two] == [str(s) for s in range(1, EPOCH_STEPS + 1)]
    assert [r["loss"] for r in two] == [r["loss"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert float(b["grad_norm"]) == pytest.approx(float(a["grad_norm"]), rel=1e-6)


@pytest.mark.slow
def test_two_processes_resume_to_the_same_adapter(ranks, base, data, model_cfg, tmp_path):
    root, cfg = ranks
    again = interrupted(root / "p2", tmp_path / "again", EPOCH_STEPS)
    proc = launch_ranks(again, base, data, model_cfg, cfg, 2)
    assert "checkpoint-2 (step 2)" in proc.stderr
    summary = json.loads((again / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps"]) == (2, EPOCH_STEPS)
    assert read_csv(again / "loss.csv") == read_csv(root / "p2" / "loss.csv")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (again / "adapter" / name).read_bytes() == (root / "p2" / "adapter" /
                                                            name).read_bytes()


@pytest.mark.slow
def test_a_changed_process_count_trains_from_the_start(ranks, base, data, model_cfg, tmp_path):
    """An interrupted run's checkpoints and another process count (a profile's gpu edited, a
    smaller node): DeepSpeed failed on every retry ("used a DP world size of 2 but the current
    world size is 1"). The checkpoints are set aside with one warning naming both counts, and
    the run is the fresh run of the new count."""
    root, cfg = ranks
    for before, after in ((2, 1), (1, 2)):
        out = interrupted(root / f"p{before}", tmp_path / f"{before}to{after}", EPOCH_STEPS)
        proc = launch_ranks(out, base, data, model_cfg, cfg, after)
        warning = (f"made by {before} process(es), this run has {after}: a ZeRO checkpoint is "
                   "cut per rank; setting them aside")
        assert proc.stderr.count(warning) == 1, proc.stderr[-3000:]
        assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 0
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            assert (out / "adapter" / name).read_bytes() == (root / f"p{after}" / "adapter" /
                                                              name).read_bytes()


@pytest.mark.slow
def test_the_demo_config_trains_its_global_batch_on_one_and_two_processes(
        tmp_path, base, model_cfg, repo_config):
    """The demo's train section (per_image, global_batch = per_device_batch = 128) raised
    TrainError on a node with several GPUs; it trains the same 128 tuples a step on 1 process
    (128 at once) and on 2 (64 each)."""
    import yaml

    from skinground.core.config import deep_merge

    demo = yaml.safe_load((REPO / "profiles" / "demo" / "demo-config.yaml").read_text())
    cfg = dict(deep_merge(repo_config, demo)["train"], max_steps=1, save_steps=1,
               logging_steps=1, precision="fp32")
    assert (cfg["global_batch"], cfg["per_device_batch"]) == (128, 128)
    data = write_train_tuples(tmp_path, 64)  # 128 tuples: one step
    runs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n, out in runs.items():
        launch_ranks(out, base, data, model_cfg, cfg, n)
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["global_batch"], summary["per_device_batch"],
                summary["gradient_accumulation"], summary["steps"]) == (128, 128 // n, 1, 1)
    first = rank_batches(runs[1], 0)[0]
    halves = [rank_batches(runs[2], r)[0] for r in (0, 1)]
    assert len(first) == 128 and [len(h) for h in halves] == [64, 64]
    assert set(halves[0]) | set(halves[1]) == set(first) and not set(halves[0]) & set(halves[1])
    losses = [float(read_csv(out / "loss.csv")[0]["loss"]) for out in runs.values()]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
