"""Snakemake itself on the demo: the whole DAG end to end, the demo's effects, and exactly
which jobs a config or code change reruns."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from skinground.core.config import load
from skinground.core.sections import bookkeeping, pixel_params, tracked
from skinground.model import job

import demo_targets
from conftest import (
    DEMO_RUN,
    REPO,
    copy_finished_run,
    copy_workflow,
    pids_with_argv,
    planned_jobs,
    run_group,
)

pytestmark = pytest.mark.slow

ATTRIBUTES = 16
SHARDS = 1  # profiles/demo/demo-config.yaml: embed.shards


def snakemake(workdir: Path, *args: str, extra_config: str | None = None) -> str:
    configs = ["config.yaml", "profiles/demo/demo-config.yaml"]
    if extra_config:
        configs.append(extra_config)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", *args,
           "--configfile", *configs]
    proc = run_group(cmd, cwd=workdir, timeout=1800)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out[-8000:]}")
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A copy of the workflow that has run the whole demo DAG (the default demo size): the
    README's demo run of ``$SKINGROUND_DEMO_RUN`` where CI made one, copied, else a new one.
    Either way the first tests below hold it to the checkout: nothing left to do."""
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    finished = os.environ.get(DEMO_RUN)
    if finished:
        copy_finished_run(Path(finished), work, "demo")
    else:
        snakemake(work)
    return work


def res(demo: Path) -> Path:
    return demo / "results" / "demo"


def test_every_figure_and_table(demo):
    out = res(demo)
    for name in ("fig2_r2", "fig2_probe", "fig3_retrievals", "fig4_percentiles",
                 "fig5_groups"):
        for ext in ("pdf", "png"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    panels = sorted(p.name for p in (out / "figures" / "fig4_attributes").glob("*.png"))
    assert panels == sorted(f"{a}.png" for a in DEMO_ATTRIBUTES)
    for path in ("predict/r2.csv", "predict/r2.md", "evaluate/summary.csv",
                 "evaluate/summary.md", "train/loss.csv", "train/loss.png",
                 "train/adapter/adapter_config.json", "predict/probe_r2.csv",
                 "evaluate/claims.csv", "evaluate/paired_tests.csv",
                 "evaluate/groups_claims.csv", "evaluate/diagnosis.csv",
                 "verdict/verdict.csv", "verdict/verdict.md", "verdict/verdict.rst"):
        assert (out / path).exists(), path


def test_the_run_records_its_package_versions(demo):
    """results/<run>/versions.csv, beside the run's config: the packages that shape the
    numbers at the versions installed here, each at its pin (CI installs with
    constraints.txt), torch's build as it is, and the interpreter."""
    from importlib.metadata import version

    from skinground.core.versions import CONSTRAINTS, read_pins

    table = pl.read_csv(res(demo) / "versions.csv", schema_overrides={"pin": pl.String})
    rows = {r["package"]: r for r in table.iter_rows(named=True)}
    pins = read_pins(REPO / CONSTRAINTS)
    for name in ("transformers", "peft", "deepspeed", "accelerate", "faiss-cpu", "polars"):
        assert rows[name]["version"] == version(name), name
        assert rows[name]["pin"] == pins[name] and rows[name]["state"] == "pinned", name
    assert rows["torch"]["version"] == version("torch") and rows["torch"]["state"] == "unpinned"
    assert rows["python"]["state"] == "environment"


def test_the_statistics_tables(demo):
    """Every median and R² has an interval, the claims table counts every attribute, the
    probe covers every image-level space (the SigLIP encoder's included), and the diagnosis
    table has random's base rate beside each method."""
    out = res(demo)
    summary = pl.read_csv(out / "evaluate/summary.csv")
    assert {"medsiglip", "monet"} <= set(summary["method"])
    assert summary["median_lo"].null_count() == 0
    assert ((summary["median_lo"] <= summary["median"])
            & (summary["median"] <= summary["median_hi"])).all()
    groups = pl.read_csv(out / "evaluate/groups_summary.csv")
    assert groups["median_lo"].null_count() == 0
    r2 = pl.read_csv(out / "predict/r2.csv")
    for name in ("r2_parsed", "r2_filled", "spearman", "median_abs_error", "magnitude_share"):
        assert r2[f"{name}_lo"].null_count() == 0, name
    claims = pl.read_csv(out / "evaluate/claims.csv")
    assert (claims["tested"] == ATTRIBUTES).all()
    assert {"image_text vs image_only", "image_only vs medsiglip"} <= set(claims["claim"])
    probes = pl.read_csv(out / "predict/probe_r2.csv")
    assert set(probes["space"]) == {"tuned", "untuned", "monet", "medsiglip"}
    assert probes.height == ATTRIBUTES * 5 and probes["r2_lo"].null_count() == 0
    diagnosis = pl.read_csv(out / "evaluate/diagnosis.csv")
    assert set(diagnosis["label"]) == {"iddx_1", "target"}
    assert diagnosis.filter(pl.col("method") == "random").height == 2
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
    """Fig. 2's table is the tuned model's (the paper's); the untuned model's answers, which
    the demo asks for, have a table of their own, strict and lenient."""
    tuned = pl.read_csv(res(demo) / "predict/r2.csv")
    assert tuned.height == ATTRIBUTES and (tuned["model"] == "tuned").all()
    untuned = pl.read_csv(res(demo) / "predict/r2_untuned.csv")
    assert untuned.height == ATTRIBUTES and (untuned["model"] == "untuned").all()
    assert (tuned["n"] > 0).all() and (tuned["n"] == untuned["n"]).all()
    # Fine-tuning taught the answer format: the tuned model's answers parse as numbers,
    # the random untuned model's do not — and they are counted, not dropped.
    assert (tuned["n_unparsable"] <= 0.05 * tuned["n"]).all(), tuned
    assert untuned["n_unparsable_strict"].sum() > 0.5 * untuned["n"].sum(), untuned
    assert (untuned["n_unparsable_lenient"] <= untuned["n_unparsable_strict"]).all()
    assert untuned["r2_filled_strict"].is_not_null().all()


def test_retrieval_methods_and_evaluation(demo):
    summary = pl.read_csv(res(demo) / "evaluate/summary.csv")
    assert set(summary["method"]) == {"image_text", "hierarchical", "image_only",
                                      "image_untuned", "monet", "medsiglip"}
    assert summary.height == 6 * ATTRIBUTES
    n_test = len((res(demo) / "split/test.txt").read_text().split())
    assert ((summary["n"] + summary["excluded"]) == 5 * n_test).all()  # k = 5 per query
    assert summary["median"].is_between(0, 100).all()
    retrieved = pl.read_parquet(res(demo) / "retrieve/hierarchical.parquet")
    test_ids = set((res(demo) / "split/test.txt").read_text().split())
    assert set(retrieved["query_id"]) == test_ids
    assert not set(retrieved["retrieved_id"]) & test_ids


#: How far below bench/fidelity.py's targets this demo run may fall. Training is
#: bit-reproducible on CPU now, and this run is fidelity.py's seed 0 (every seed 0): on the
#: machine that measured bench/results/fidelity.json it gave 16/15/13/8 against targets of
#: 12/10/12/6. The slack covers another CPU's float kernels (a different instruction set
#: sums in another order), not run-to-run noise; it was 4 while training was not
#: reproducible (the same config then spread by 3 in R² > 0).
FIDELITY_SLACK = 2


def test_the_demo_shows_the_papers_finding(demo):
    """Directions, as counts over the 16 attributes (never per attribute): tuned image-only
    beats untuned, image+text beats image-only, and tuned test R² is positive / >= 0.5; as the
    run's verdict counted them."""
    counts = demo_targets.read_run(res(demo))["counts"]
    short = {k: (counts[k], t) for k, t in demo_targets.TARGETS.items()
             if counts[k] < t - FIDELITY_SLACK}
    assert not short, f"counts below target - {FIDELITY_SLACK} (count, target): {short}"


def test_the_verdicts_counts_are_the_benchs(demo):
    """The verdict counts what bench/fidelity.py counted from the run's tables before the
    verdict existed (the medians of evaluate/summary.csv, the tuned R² of predict/r2.csv),
    and, the demo being seed 0, what bench/results/fidelity.json recorded for seed 0."""
    out = res(demo)
    summary = pl.read_csv(out / "evaluate/summary.csv")
    med = {(r["method"], r["attribute"]): r["median"] for r in summary.iter_rows(named=True)}
    r2 = pl.read_csv(out / "predict/r2.csv").filter(pl.col("model") == "tuned")
    r2 = dict(zip(r2["attribute"], r2["r2_filled"], strict=True))
    counted = {"c_beats_d": sum(med["image_only", a] < med["image_untuned", a] for a in r2),
               "a_beats_c": sum(med["image_text", a] < med["image_only", a] for a in r2),
               "r2_positive": sum(v > 0 for v in r2.values()),
               "r2_half": sum(v >= 0.5 for v in r2.values())}
    assert demo_targets.read_run(out)["counts"] == counted
    config = load([out / "config.yaml"])
    bench = json.loads((REPO / "bench/results/fidelity.json").read_text())
    (seed0,) = [r for r in bench["runs"] if r["seed"] == 0]
    assert config["train"]["seed"] == config["split"]["seed"] == 0
    assert seed0["counts"] == counted


def test_the_demos_verdict_holds_a_held_a_not_held_and_a_not_measurable_row(demo):
    """Against the paper: SLICE-3D's counts are not measurable on synthetic data, k and b
    hold, the tiny random MONET does not beat (d); the demo's own targets hold."""
    table = pl.read_csv(res(demo) / "verdict/verdict.csv", infer_schema_length=0)
    own = {r["expectation"]: r for r in table.filter(pl.col("unit") == "all")
           .iter_rows(named=True)}
    assert own["images"]["verdict"] == "not measurable here"
    assert "synthetic" in own["images"]["note"] and own["images"]["measured"] == "1,500"
    assert own["k"]["verdict"] == own["b"]["verdict"] == "held"
    assert own["fig4_e_beats_d"]["verdict"] == "not held"
    assert {own[k]["verdict"] for k in demo_targets.TARGETS} == {"held"}
    units = table.filter(pl.col("expectation") == "fig2_r2")
    assert units.height == 1 + ATTRIBUTES
    md = (res(demo) / "verdict/verdict.md").read_text()
    assert md.startswith("# Verdict: did run demo reproduce the paper?")
    assert "- Against resources/expected/demo.yaml: 4 held (of 4 expectations)." in md
    proc = subprocess.run([sys.executable, "-m", "skinground.cli", "verdict", "--run", "demo"],
                          cwd=demo / "results", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == md


def _job_processes(work: Path) -> list[int]:
    """Live processes running one of ``work``'s Snakemake job scripts."""
    scripts = f"{work}/.snakemake/scripts/".encode()
    return pids_with_argv(lambda argv: any(scripts in a for a in argv))


def _until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_kill_between_a_job_and_its_bookkeeping_reruns_with_the_same_command(tmp_path):
    """kill -9 after a job has written its output but before Snakemake recorded it done (the
    moment bench/kill_resume.py hit in an embed_shard): the demo profile's rerun-incomplete
    makes the user's same command (after --unlock) rerun the job, where Snakemake otherwise
    stops with IncompleteFilesException."""
    work = copy_workflow(tmp_path / "wf")
    (work / "small.yaml").write_text(yaml.safe_dump({"synthetic": {"patients": 12,
                                                                   "images": 120}}))
    target = "results/demo/synthetic/summary.json"
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", target,
           "--configfile", "config.yaml", "profiles/demo/demo-config.yaml", "small.yaml"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _until(lambda: _job_processes(work), "the synthetic_data job to start")
        os.kill(proc.pid, signal.SIGSTOP)  # Snakemake stops; its job runs to the end
        _until(lambda: not _job_processes(work), "the synthetic_data job to end")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (work / target).is_file()  # written, never recorded as done
    rerun = run_group(cmd, cwd=work, timeout=600)
    if rerun.returncode != 0 and "--unlock" in rerun.stdout + rerun.stderr:
        subprocess.run([*cmd, "--unlock"], cwd=work, capture_output=True, check=True)
        rerun = run_group(cmd, cwd=work, timeout=600)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-4000:]
    assert "IncompleteFilesException" not in out
    assert "rule synthetic_data" in out  # the incomplete job ran again


def test_training_is_bit_reproducible(demo, tmp_path):
    """Two runs of the train entry point on the demo's own base model, tuples and images (150
    steps of the demo recipe) give byte-identical adapters. Before deterministic algorithms
    were switched on for CPU training, such runs ended a few ulp apart."""
    out = res(demo)
    # the config files the run was made with (its results/<run>/config.yaml leaves out the
    # bookkeeping keys the train script also needs)
    config = load([demo / "config.yaml", demo / "profiles/demo/demo-config.yaml"])
    train = dict(config["train"], max_steps=150, save_steps=1000, logging_steps=50)
    adapters = []
    for run in ("first", "second"):
        d = tmp_path / run
        job_file = job.write_job(d / "job.json", {
            "base": out / "models/qwen2vl-tiny", "tuples": out / "tuples/train_tuples.parquet",
            "images": out / "synthetic/train-image.hdf5",
            "deepspeed": demo / config["train"]["deepspeed"], "checkpoints": d / "ckpt",
            "adapter": d / "adapter", "loss_csv": d / "loss.csv", "loss_plot": d / "loss.png",
            "summary": d / "summary.json", "pixels": pixel_params(config["model"]),
            "train": tracked("train", train), "bookkeeping": bookkeeping("train", train),
            "gpus": 0})
        cmd = [sys.executable, str(demo / "workflow/scripts/train.py"), str(job_file)]
        proc = run_group(cmd, timeout=900, cwd=demo)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((d / "summary.json").read_text())["deterministic"] is True
        adapters.append((d / "adapter" / "adapter_model.safetensors").read_bytes())
    assert adapters[0] == adapters[1]


def test_a_rerun_of_train_recomputes(demo, tmp_path):
    """Snakemake's reruns of ``train`` on a finished run (a short run of the demo recipe, in a
    copy of the finished demo): ``--forcerun train`` gives the same adapter bytes, trained from
    the start; a kill -9 of the whole run once the adapter is written, then the user's same
    command, gives them again; and a changed training module reaches the adapter."""
    work = tmp_path / "run"
    shutil.copytree(demo, work, symlinks=True)
    (work / "short.yaml").write_text(yaml.safe_dump(
        {"train": {"max_steps": 12, "save_steps": 5, "logging_steps": 4}}))
    adapter = res(work) / "train" / "adapter" / "adapter_model.safetensors"
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "train",
           "--configfile", "config.yaml", "profiles/demo/demo-config.yaml", "short.yaml"]

    def train(*args: str) -> tuple[bytes, dict]:
        proc = run_group([*cmd, *args], cwd=work, timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return adapter.read_bytes(), json.loads((res(work) / "train/summary.json").read_text())

    first, summary = train()  # the changed max_steps reruns it
    assert (summary["steps"], summary["resumed_from_step"]) == (12, 0)
    again, summary = train("--forcerun", "train")
    assert again == first and (summary["steps"], summary["resumed_from_step"]) == (12, 0)

    before = adapter.stat().st_mtime_ns
    proc = subprocess.Popen([*cmd, "--forcerun", "train"], cwd=work, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: adapter.exists() and adapter.stat().st_mtime_ns != before,
               "the rerun's adapter", timeout=600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run([*cmd, "--unlock"], cwd=work, capture_output=True, check=True)
    after_kill, summary = train()
    assert after_kill == first and summary["steps"] == 12

    lib = work / "workflow" / "skinground" / "model" / "train.py"
    lib.write_text(lib.read_text().replace(
        'learning_rate=float(train_cfg["learning_rate"]),',
        'learning_rate=2 * float(train_cfg["learning_rate"]),', 1))
    changed, summary = train()
    assert changed != first and summary["resumed_from_step"] == 0


def test_nothing_changed_nothing_to_do(demo):
    assert planned_jobs(snakemake(demo, "-n")) == {}


GROUPS = 3  # config.yaml: retrieve.groups
TUNED_SPACES = 1 + ATTRIBUTES + GROUPS
CONFIG_READERS = {"run_config": 1, "cost": 1, "all": 1}  # every config change reruns these
FINISH = {"run_config": 1, "all": 1}  # written last: every rerun rewrites the run's config
GROUP_EVALUATION = {"evaluate_groups": 1, "figure_groups": 1}
DOWNSTREAM_OF_TRAINING = {
    "train": 1, "predict_shard": 1, "merge_predictions": 1, "r2": 1,  # tuned x 1 shard
    "embed_shard": 2 * SHARDS,  # tuned x {train, test} x shards
    "embed_groups": 2 * SHARDS,
    "merge_embeddings": 2 * TUNED_SPACES, "build_index": TUNED_SPACES,
    "retrieve": 3,  # image_text, hierarchical, image_only
    "retrieve_groups": 4,  # composed, composed_hierarchical, fused, rrf
    "evaluate": 1, "figures": 1, **GROUP_EVALUATION, **CONFIG_READERS,
    "probe": 1, "probe_r2": 1, "diagnosis": 1,  # the tuned h_im's probe; the hits' labels
    "verdict": 1,  # reads R², the evaluation and the hits
}
SIZE_QUESTION = "How large, how long and how long around is the lesion, in mm², mm and mm?"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": {"learning_rate": 0.002}}, DOWNSTREAM_OF_TRAINING),
        ({"retrieve": {"b": 150}},
         {"retrieve": 1, "retrieve_groups": 2, "evaluate": 1, "figures": 1, "diagnosis": 1,
          "verdict": 1, **GROUP_EVALUATION, **CONFIG_READERS}),
        ({"predict": {"max_new_tokens": 12}},
         {"predict_shard": 2, "merge_predictions": 2, "r2": 1, "r2_untuned": 1,
          "probe_r2": 1, "verdict": 1, **CONFIG_READERS}),
        ({"embed": {"h_ima_token": "question"}},
         {r: n for r, n in DOWNSTREAM_OF_TRAINING.items()
          if r not in ("train", "predict_shard", "merge_predictions", "r2")}),
        # Fig. 3's queries: the figure, and the verdict that measures them
        ({"figures": {"fig3_queries": 3}}, {"figures": 1, "verdict": 1, **CONFIG_READERS}),
        ({"train": {"logging_steps": 7, "save_steps": 3, "dataloader_workers": 1}}, {}),
        ({"predict": {"batch_images": 3}, "embed": {"batch_images": 5}}, {"cost": 1, **FINISH}),
        ({"retrieve": {"groups": {"size": {"question": SIZE_QUESTION}}}},
         {"embed_groups": 2 * SHARDS, "merge_embeddings": 2 * GROUPS, "build_index": GROUPS,
          "retrieve_groups": 2, **GROUP_EVALUATION, **CONFIG_READERS}),
        # one encoder's preprocessing: its own embeddings, index and hits, not the other's
        ({"model": {"encoders": {"medsiglip": {"preprocessing": {"size": 56}}}}},
         {"embed_shard": 2 * SHARDS, "merge_embeddings": 2, "build_index": 1, "retrieve": 1,
          "evaluate": 1, "figures": 1, "diagnosis": 1, "probe": 1, "probe_r2": 1,
          "verdict": 1, **CONFIG_READERS}),
        # the bootstrap: every table with intervals, not the models or the retrieval
        ({"stats": {"bootstrap": 200}},
         {"evaluate": 1, "figures": 1, **GROUP_EVALUATION, "r2": 1, "probe": 4,
          "probe_r2": 1, "diagnosis": 1, "verdict": 1, **CONFIG_READERS}),
        # the tests' level and unit: the claims (the evaluations' outputs), no interval
        ({"stats": {"alpha": 0.01, "test_unit": "query"}},
         {"evaluate": 1, "figures": 1, "verdict": 1, **GROUP_EVALUATION, **CONFIG_READERS}),
    ],
    ids=["train-hyperparameter", "retrieve-b", "predict", "h_ima-token", "figures",
         "train-bookkeeping", "batch-sizes", "group-question", "encoder-preprocessing",
         "bootstrap", "tests"],
)
def test_config_change_reruns_exactly_what_it_touches(demo, change, expected):
    (demo / "change.yaml").write_text(yaml.safe_dump(change))
    assert planned_jobs(snakemake(demo, "-n", extra_config="change.yaml")) == expected


RETRIEVAL = {"retrieve": 6, "retrieve_groups": 4, "evaluate": 1, "figures": 1,
             "diagnosis": 1, "verdict": 1, **GROUP_EVALUATION, **FINISH}


@pytest.fixture
def edit(demo):
    """Edit files of the demo's checkout for one test: ``edit(path, new_text)``; every file
    gets its text back afterwards (with a new modification time, which must rerun nothing)."""
    originals = {}

    def change(rel: str, text: str) -> None:
        path = demo / rel
        originals.setdefault(path, path.read_text())
        path.write_text(text)

    yield change
    for path, text in originals.items():
        path.write_text(text)


def test_comment_docstring_and_touch_rerun_nothing(demo, edit):
    io = (demo / "workflow/skinground/core/io.py").read_text()
    edited = io.replace('"""', '"""Edited. ', 1) + "\n# a comment\n"
    edit("workflow/skinground/core/io.py", edited)
    assert planned_jobs(snakemake(demo, "-n")) == {}
    now = time.time()
    for path in [*(demo / "workflow").rglob("*.py"), *(demo / "workflow").rglob("*.smk")]:
        os.utime(path, (now, now))
    assert planned_jobs(snakemake(demo, "-n")) == {}


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("evaluation/percentile", {"evaluate": 1, "figures": 1, "verdict": 1,
                                   **GROUP_EVALUATION, **FINISH}),
        ("retrieval/search", RETRIEVAL),
        ("model/batches", {r: n for r, n in DOWNSTREAM_OF_TRAINING.items() if r != "cost"}),
    ],
)
def test_code_change_reruns_the_rules_that_import_it(demo, edit, module, expected):
    rel = f"workflow/skinground/{module}.py"
    edit(rel, (demo / rel).read_text() + "\nCHANGED = True\n")
    assert planned_jobs(snakemake(demo, "-n")) == expected


def test_a_finished_run_moved_elsewhere_reruns_nothing(demo, tmp_path):
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(demo, moved, symlinks=True)  # copy2: modification times kept
    assert planned_jobs(snakemake(moved, "-n")) == {}


def test_a_regenerated_identical_file_reruns_nothing_after_it(demo, tmp_path):
    """split/test.txt deleted and made again, the same bytes: the jobs after it replanned by
    its new modification time (78 of them, training among them). Snakemake compares the
    checksums it recorded of a job's small inputs, so nothing is left to do."""
    moved = tmp_path / "copy"
    shutil.copytree(demo, moved, symlinks=True)
    test = res(moved) / "split" / "test.txt"
    before = test.read_bytes()
    test.unlink()
    snakemake(moved, str(test.relative_to(moved)))
    assert test.read_bytes() == before
    assert planned_jobs(snakemake(moved, "-n")) == {}


def test_a_read_only_run_folder_stops_the_run_before_any_job(demo, tmp_path):
    """A folder of the run that cannot be written in, its files writable (a colleague's run, a
    share gone read-only): a rerun gave a Snakemake traceback when it removed a job's old
    output. It stops before any job starts, in one line naming the folder, and changes
    nothing. (chattr +i: root, which runs CI, writes in any folder chmod locks.)"""
    moved = tmp_path / "copy"
    shutil.copytree(demo, moved, symlinks=True)
    split = res(moved) / "split"
    before = {p.name: p.read_bytes() for p in split.iterdir()}
    subprocess.run(["chattr", "+i", str(split)], check=True)
    try:
        assert not os.access(split, os.W_OK)
        proc = run_group([sys.executable, "-m", "snakemake", "--profile", "profiles/demo",
                          "--forcerun", "split"], cwd=moved, timeout=600)
    finally:
        subprocess.run(["chattr", "-i", str(split)], check=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (f"{split.relative_to(moved)}: this folder is not writable, and rule split writes in "
            "it; make it writable") in output, output[-3000:]
    assert "Traceback" not in output and "Finished job" not in output
    assert {p.name: p.read_bytes() for p in split.iterdir()} == before


# --------------------------------------------------------------------------- skinground query


def command(demo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skinground.cli", *args], cwd=demo,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def query_image(demo, tmp_path_factory) -> tuple[str, Path]:
    """A test image of the demo as a JPEG file (the bytes the run's HDF5 holds)."""
    import h5py

    test_id = sorted((res(demo) / "split/test.txt").read_text().split())[0]
    path = tmp_path_factory.mktemp("query") / f"{test_id}.jpg"
    with h5py.File(res(demo) / "synthetic/train-image.hdf5") as h5:
        path.write_bytes(h5[test_id][()].tobytes())
    return test_id, path


def stored_hits(demo: Path, rel: str, query_id: str, attribute: str) -> list[str]:
    table = pl.read_parquet(res(demo) / rel)
    return (table.filter((pl.col("query_id") == query_id) & (pl.col("attribute") == attribute))
            .sort("rank")["retrieved_id"].to_list())


def test_query_equals_the_stored_hierarchical_results(demo, query_image, tmp_path):
    test_id, image = query_image
    grid = tmp_path / "grid.png"
    skinground = Path(sys.executable).parent / "skinground"  # the console entry point
    proc = subprocess.run([str(skinground), "query", str(image), "--run", "demo",
                           "--attribute", "tbp_lv_areaMM2", "--attribute", "B inside",
                           "--group", "size", "--group", "colour", "--group", "size",
                           "--json", "--out", str(grid)],
                          cwd=demo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (questions,) = [q["questions"] for q in json.loads(proc.stdout)["queries"]]
    # every group asked is answered, each once (a repeated --group answered only the last)
    assert [q["name"] for q in questions] == ["tbp_lv_areaMM2", "tbp_lv_B", "size", "colour"]
    for q, rel, attribute in zip(questions, ("retrieve/hierarchical.parquet",) * 2
                                 + ("retrieve/groups/composed_hierarchical.parquet",) * 2,
                                 ("tbp_lv_areaMM2", "tbp_lv_B", "group_size", "group_colour"),
                                 strict=True):
        assert [h["isic_id"] for h in q["hits"]] == stored_hits(demo, rel, test_id, attribute)
        assert len(q["hits"]) == 5 and all(-1 <= h["cosine"] <= 1 for h in q["hits"])
    size = questions[2]
    assert set(size["predicted"]) == set(size["members"]) and len(size["members"]) == 3
    manifest = pl.read_parquet(res(demo) / "data/manifest.parquet")
    first = size["hits"][0]
    row = manifest.filter(pl.col("isic_id") == first["isic_id"]).row(0, named=True)
    assert first["values"] == {m: row[m] for m in size["members"]}
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = command(demo, "query", str(image), "--run", "demo", "-k", "3")
    assert table.returncode == 0 and "| rank | isic_id | cosine | area |" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--run", "nope"], "run 'nope': no results/nope/ in "),
     (["--run", "demo", "--attribute", "tbp_lv_nope"],
      "unknown attribute 'tbp_lv_nope'; valid (label or column): area (tbp_lv_areaMM2), "),
     (["--run", "demo", "--group", "shape"], "unknown group 'shape'; valid: size, colour"),
     (["TEXT", "--run", "demo"], "notes.jpg: not a readable image"),
     (["--run", "../demo"], "--run '../demo': a run's name (config key run), not a path"),
     (["--run", "demo", "-k", "0"], "-k 0: must be at least 1"),
     (["--run", "demo", "--b", "0"], "--b 0: must be at least 1"),
     (["--run", "demo", "-k", "5000", "--b", "6000"], "-k 5000: the run's database holds"),
     (["--run", "demo", "--b", "6000"], "--b 6000: the run's database holds")],
    ids=["unknown-run", "unknown-attribute", "unknown-group", "not-an-image", "run-path",
         "k-zero", "b-zero", "k-over-database", "b-over-database"],
)
def test_query_errors_are_one_line_and_write_nothing(demo, query_image, tmp_path, args,
                                                     message):
    _, image = query_image
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    grid = tmp_path / "grid.png"
    args = [str(text) if a == "TEXT" else a for a in args]
    proc = command(demo, "query", str(image), *args, "--out", str(grid))
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not grid.exists()


@pytest.mark.parametrize(("damage", "message"), [
    # the run's config ahead of its model (hand-edited, or written by older code before the
    # model was retrained): the model's own record wins, and the query says so
    ("config", "config.yaml is not the config {adapter} was trained with (they differ in "
               "pixels.image_size)"),
    # an index left from another training (train rerun, the index not yet rebuilt)
    ("adapter", "was made from another training than {adapter} (they differ in "
                "train.learning_rate)"),
    ("index", "index/tuned/im.faiss: no record of what made it"),
])
def test_query_answers_only_for_the_model_it_has(demo, query_image, damage, message):
    """The query reads the pixel budget the model was trained with from the adapter's record,
    the h_im,a token from its index's, and refuses in one line, naming the keys, where the
    run's config, its adapter and its index were not made together."""
    _, image = query_image
    out = res(demo)
    adapter = out / "train" / "adapter"
    path = {"config": out / "config.yaml", "adapter": adapter / "made_by.json",
            "index": out / "index" / "tuned" / "im.faiss.made_by.json"}[damage]
    original = path.read_text()
    try:
        if damage == "config":
            config = yaml.safe_load(original)
            config["model"]["image_size"] = 56
            path.write_text(yaml.safe_dump(config))
        elif damage == "adapter":
            record = json.loads(original)
            record["train"]["learning_rate"] *= 2
            path.write_text(json.dumps(record))
        else:
            path.unlink()
        proc = command(demo, "query", str(image), "--run", "demo")
    finally:
        path.write_text(original)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert message.format(adapter=adapter) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_damaged_table_is_named_with_its_fix(demo, query_image):
    """A cut manifest.parquet gave polars' ComputeError traceback in the query (and in every
    job that reads it); it is one line naming the file and the fix."""
    _, image = query_image
    manifest = res(demo) / "data" / "manifest.parquet"
    original, stat = manifest.read_bytes(), manifest.stat()
    try:
        manifest.write_bytes(original[: len(original) // 2])
        proc = command(demo, "query", str(image), "--run", "demo")
    finally:
        manifest.write_bytes(original)
        os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert proc.returncode == 1
    assert f"{manifest.relative_to(demo)}: not a readable parquet file (" in proc.stderr
    assert "delete it and rerun the workflow to remake it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_query_refuses_misuse_before_any_model_work(demo, query_image, tmp_path):
    """A FIFO as the image hung forever; --out into a folder it cannot write failed with a
    PermissionError traceback after all the model work. Both are one-line errors now, before
    the model is loaded."""
    _, image = query_image
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    proc = command(demo, "query", str(fifo), "--run", "demo")
    assert proc.returncode == 1 and f"{fifo}: not a regular file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = command(demo, "query", str(image), "--run", "demo", "--out", "/proc/grid.png")
    assert proc.returncode == 1 and "--out /proc/grid.png: cannot write in /proc" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("target", ["existing", "the-image"])
def test_query_out_overwrites_nothing(demo, query_image, tmp_path, target):
    _, image = query_image
    out = tmp_path / "grid.png"
    out.write_bytes(b"a user's file")
    if target == "the-image":
        out = tmp_path / "query.png"
        out.write_bytes(image.read_bytes())
        image = out
    before = out.read_bytes()
    proc = command(demo, "query", str(image), "--run", "demo", "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and f"--out {out}" in proc.stderr
    assert out.read_bytes() == before


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report(demo, tmp_path_factory) -> Path:
    """The run's report as a colleague gets it: ``--report results/<run>/report.zip``,
    unpacked elsewhere; its page."""
    import zipfile

    path = res(demo) / "report.zip"
    snakemake(demo, "--report", str(path))
    unpacked = tmp_path_factory.mktemp("report")
    with zipfile.ZipFile(path) as z:
        z.extractall(unpacked)
    (page,) = unpacked.glob("*/report.html")
    return page


def test_a_finished_run_reports_without_its_weights(demo, tmp_path):
    """The weights gone since the run (a purged scratch): ``--report`` still packs the run's
    figures and tables, and warns once per missing folder with the command that fetches it."""
    import zipfile

    gone = tmp_path / "purged"
    change = {"model": {"build_tiny": False, "base": str(gone / "qwen"),
                        "encoders": {name: {"path": str(gone / name)}
                                     for name in ("monet", "medsiglip")}}}
    (tmp_path / "gone.yaml").write_text(yaml.safe_dump(change))
    path = tmp_path / "report.zip"
    out = snakemake(demo, "--report", str(path), extra_config=str(tmp_path / "gone.yaml"))
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert any(n.endswith("report.html") for n in names)
    assert sum(n.endswith(".png") for n in names) >= len(FIGURES), names
    for name, hub in (("qwen", "Qwen/Qwen2-VL-7B-Instruct"), ("monet", "chanwkim/monet"),
                      ("medsiglip", "google/medsiglip-448")):
        assert out.count(f"hf download {hub} --local-dir {gone / name} ") == 1, out[-3000:]


DEMO_ATTRIBUTES = load([REPO / "config.yaml",
                               REPO / "profiles/demo/demo-config.yaml"])["attributes"]
#: Every figure of the report: (category, subcategory, its row's item label, attribute).
FIGURES = [("Training and prediction", None, "Fig. 2", "all"),
           ("Training and prediction", None, "Fig. 2, probe", "all"),
           ("Retrieval", "Paper (Fig. 3)", "Fig. 3", "area"),
           ("Retrieval", "Paper (Fig. 4)", "Fig. 4", "all"),
           ("Retrieval", "Beyond the paper: groups (Fig. 5)", "Fig. 5",
            "the groups of retrieve.groups"),
           *(("Retrieval", "Paper (Fig. 4)", "Fig. 4, one attribute", spec["label"])
             for spec in DEMO_ATTRIBUTES.values())]


@contextlib.contextmanager
def chromium_page():
    """A page of headless Chromium (Debian's), offline: nothing is fetched."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run "
                    "installs it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("http*://**", lambda route: route.abort())  # offline: nothing fetched
        yield page
        browser.close()


def test_the_report_opens_on_the_verdict_in_chromium(report):
    """The report's first page is the verdict, its title and summary lines in the window
    (Snakemake's pane centres a tall page and cut its top off: workflow/report/style.css),
    the study's description after it; the Verdict category holds its table."""
    with chromium_page() as page:
        page.goto(report.as_uri())
        page.wait_for_load_state("networkidle")
        title = page.get_by_text("Verdict: did run demo reproduce the paper?", exact=True)
        box = title.first.bounding_box()
        assert box is not None and 0 <= box["y"] < 200, box
        body = page.inner_text("body")
        assert "Against resources/expected/demo.yaml: 4 held (of 4 expectations)." in body
        assert body.index("Verdict: did run demo") < body.index("The study")
        assert "Not measurable here: images, train_images" in body
        page.get_by_text("Verdict", exact=True).first.click()
        row = page.locator("tr").filter(has=page.get_by_role("cell", name="Verdict (table)",
                                                             exact=True))
        assert row.count() == 1


def test_report_zip_renders_every_figure_in_chromium(report, tmp_path):
    """Headless Chromium (Debian's) opens the unpacked report zip, offline: every figure,
    found by its labels (item, attribute, model, seed), is a decoded PNG; the whole figures'
    screenshots are not blank."""
    from PIL import Image, ImageStat

    with chromium_page() as page:
        for category, subcategory, item, attribute in FIGURES:
            page.goto(report.as_uri())
            page.wait_for_load_state("networkidle")
            assert "skinground" in page.inner_text("body")
            page.get_by_text(category, exact=True).first.click()
            if subcategory:
                page.get_by_text(subcategory, exact=True).first.click()
            header = [h.lower() for h in page.locator("th").all_inner_texts()]
            assert header[:4] == ["item", "attribute", "model or method", "seed"], header
            row = (page.locator("tr")
                   .filter(has=page.get_by_role("cell", name=item, exact=True))
                   .filter(has=page.get_by_role("cell", name=attribute, exact=True)))
            assert row.count() == 1, (item, attribute)
            row.locator('a[iconname="eye"]').click()
            # the zip keeps each figure as a file beside the page (the .html inlines it)
            figure = page.locator('img[src$=".png"], img[src^="data:image/png"]').first
            figure.wait_for(state="visible", timeout=20_000)
            width = figure.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > (250 if item.endswith("one attribute") else 500), (item, width)
            if item.endswith("one attribute"):
                continue
            shot = tmp_path / f"{item}.png"
            page.screenshot(path=str(shot))
            gray = Image.open(shot).convert("L")
            assert ImageStat.Stat(gray).stddev[0] > 20, item  # not a blank page
            assert sum(gray.histogram()[:200]) > 0.03 * gray.width * gray.height, item
