"""bench/gpu_check.py's training on several GPUs (--gpus N): the ranks' records made one result
(per-rank and total throughput, MFU against N GPUs' peak, the global batch checked), and
--tiny --gpus 2 run on CPU with the CUDA path emulated (tests/emulate_cuda)."""

from __future__ import annotations

import json
import os
import sys
import time

import gpu_check as G
import pytest

from skinground.model.global_batch import train_batch

from conftest import REPO, run_group

EMULATE_CUDA = REPO / "tests" / "emulate_cuda"


def rank_records(n: int, *, global_batch: int = 16, cap: int = 4, steps: int = 3,
                 seconds=(1.0, 0.5)) -> list[dict]:
    """What ``phase_train`` writes for each of ``n`` ranks that split ``global_batch`` as
    ``train_batch`` says: rank r's step s takes ``seconds[r]``, 100 tokens and 1 GFLOP a
    tuple, tuples numbered through the epoch."""
    per_device, accumulation = train_batch(global_batch, cap, n)
    share = per_device * accumulation
    return [{
        "rank": r, "processes": n, "accelerate_processes": n, "warmup_steps": 1,
        "per_device_batch": per_device, "gradient_accumulation": accumulation,
        "losses": [2.0, 1.5, 1.0], "layout": "per_tuple", "parameters": {"match": True},
        "step_records": [{
            "seconds": seconds[r], "micro_batches": [per_device] * accumulation,
            "tuples": list(range(s * global_batch + r * share,
                                 s * global_batch + (r + 1) * share)),
            "sequences": share, "images": share, "tokens": 100 * share,
            "padded_tokens": 120 * share, "image_tokens": 50 * share, "flops": 1e9 * share,
        } for s in range(steps)],
    } for r in range(n)]


def test_the_ranks_throughput_adds_up_and_mfu_is_against_all_gpus():
    parts = rank_records(2)
    out = G.combine_train(parts, global_batch=16, per_device_cap=4, peak_tflops=1.0)
    assert (out["processes"], out["per_device_batch"], out["gradient_accumulation"]) == (2, 4, 2)
    assert out["sequences_per_step"] == 16 and out["timed_steps"] == 2
    # a step lasts as long as its slowest rank (1 s); each rank over its own time
    assert out["step_time_s"] == 1.0 and out["step_times_s"] == [1.0] * 3
    assert [(r["rank"], r["tuples_per_s"], r["tokens_per_s"]) for r in out["ranks"]] == [
        (0, 8.0, 800.0), (1, 16.0, 1600.0)]
    assert out["total"] == {"tuples_per_s": 16.0, "tokens_per_s": 1600.0}
    assert out["sequences_per_s"] == 16.0 and out["tokens_per_s"] == 1600.0
    assert out["mfu"] == pytest.approx(16e9 / 2e12) and out["mfu_gpus"] == 2
    assert out["batch"]["ok"] and out["batch"]["tuples_per_step"] == [16, 16, 16]
    assert not {"step_records", "losses", "rank"} & set(out)
    assert (out["loss_first"], out["loss_last"], out["finite_loss"]) == (2.0, 1.0, True)
    assert G.phase_summary("train", out)["ok"]


def test_one_rank_accumulates_what_four_split():
    one = G.combine_train(rank_records(1), global_batch=16, per_device_cap=4, peak_tflops=1.0)
    assert (one["per_device_batch"], one["gradient_accumulation"]) == (4, 4)
    assert one["batch"]["ok"] and one["mfu"] == pytest.approx(16e9 / 1e12)
    four = G.combine_train(rank_records(4, seconds=(1.0,) * 4), global_batch=16,
                           per_device_cap=4, peak_tflops=1.0)
    assert (four["per_device_batch"], four["gradient_accumulation"]) == (4, 1)
    assert four["batch"]["ok"] and four["mfu"] == pytest.approx(16e9 / 4e12)


def test_a_broken_global_batch_fails_the_phase_naming_the_check():
    parts = rank_records(2)
    parts[1]["step_records"][0]["tuples"] = parts[0]["step_records"][0]["tuples"]  # twice
    parts[1]["step_records"][2].update(micro_batches=[4, 4, 4], sequences=12)
    out = G.combine_train(parts, global_batch=16, per_device_cap=4, peak_tflops=1.0)
    checks = out["batch"]["checks"]
    assert not out["batch"]["ok"] and out["batch"]["tuples_per_step"] == [16, 16, 20]
    assert {k for k, v in checks.items() if not v} == {"distinct_tuples", "tuples_per_step",
                                                       "gradient_accumulation"}
    summary = G.phase_summary("train", out)
    assert not summary["ok"] and summary["exact"]["global_batch"] is False
    assert summary["why"] == ("the global batch of 16 over 2 rank(s) failed: tuples_per_step, "
                              "gradient_accumulation, distinct_tuples")


def test_a_gpu_count_that_does_not_divide_the_global_batch_is_refused(tmp_path, capsys):
    assert G.main(["--tiny", "--gpus", "3", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "train.global_batch (16) must be a multiple" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()
    with pytest.raises(SystemExit):
        G.arguments(["--gpus", "0"])


@pytest.mark.slow
def test_tiny_two_ranks_train_the_global_batch_on_cpu(tmp_path, repo_config):
    """``--tiny --gpus 2``: both layouts on 2 ranks (gloo on CPU as nccl on GPUs, the real
    DeepSpeed/Accelerate path); embedding and prediction are one-process phases whatever
    --gpus (tests/test_cost.py runs them)."""
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EMULATE_CUDA),
                                                      env.get("PYTHONPATH")]))
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "torch_extensions")  # nothing compiled
    t0 = time.perf_counter()
    proc = run_group([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--tiny",
                      "--gpus", "2", "--skip", "embed", "--skip", "predict", "--out", str(out)],
                     cwd=REPO, env=env, timeout=600)
    print(f"gpu_check --tiny --gpus 2 (train phases): {time.perf_counter() - t0:.1f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "built successfully" not in proc.stderr + proc.stdout

    result = json.loads(out.read_text())
    assert result["ok"] and result["failed"] == {} and result["gpus"] == 2
    assert set(result["phases"]) == {"train", "train_per_image"}
    assert all(p["ok"] and p["exact"]["global_batch"] for p in result["phases"].values())
    global_batch = repo_config["train"]["global_batch"]
    split = train_batch(global_batch, repo_config["train"]["per_device_batch"], 2)
    for key in ("train", "train_per_image"):
        run = result[key]
        assert run["processes"] == 2 and run["process"]["ranks"] == 2
        assert run["sequences_per_step"] == global_batch
        assert (run["per_device_batch"], run["gradient_accumulation"]) == split
        batch = run["batch"]
        assert batch["ok"] and all(batch["checks"].values())
        assert (batch["global_batch"], batch["processes"]) == (global_batch, 2)
        assert batch["tuples_per_step"] == [global_batch] * run["steps"]
        assert [r["rank"] for r in run["ranks"]] == [0, 1]
        for r in run["ranks"]:
            assert r["tuples_per_s"] > 0 and r["tokens_per_s"] > 0
            assert r["tuples_per_step"] == global_batch / 2
        total = run["total"]
        assert total["tuples_per_s"] > 0 and total["tokens_per_s"] > 0
        # each rank over its own time, the total over the slowest rank's
        assert sum(r["tuples_per_s"] for r in run["ranks"]) >= total["tuples_per_s"]
        assert run["mfu_gpus"] == 2 and run["mfu"] == pytest.approx(
            run["achieved_tflops"] / (2 * result["peak_tflops"]))
        assert run["finite_loss"] and run["parameters"]["match"]
