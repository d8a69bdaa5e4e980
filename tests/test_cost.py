"""The paper-scale cost model (skinground.cost.estimate): its job counts against real Snakemake dry
runs, its parameter and image-token counts against transformers, and how its estimate scales."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from skinground.core import config, plan
from skinground.cost import calibration, estimate, flops
from skinground.demo import tiny
from skinground.model import loading

from conftest import REPO, copy_workflow, planned_jobs, run_script

DEMO_CONFIGS = [REPO / "config.yaml", REPO / "profiles" / "demo" / "demo-config.yaml"]
# 64 embed shards x 2 splits x (tuned, untuned, MONET) = 384, + 64 x 2 group-question shards;
# 8 predict shards (the tuned model only); 2 splits x (16 attributes + 3 image-only + 3 group
# spaces) = 44 merged, 22 indexes; 5 + 4 retrieval jobs; 13 single jobs (data, training,
# merges, R², evaluations, figures, cost, all); the statistics: labels, diagnosis, a probe
# of each image-level space (tuned, untuned, MONET) and their table; the run's package
# versions.
PAPER_JOBS = 616
# The demo's second encoder (MedSigLIP's tiny stand-in) adds 2 embed shards, 2 merged spaces,
# an index, a retrieval job and a probe.
DEMO_JOBS = 117


def workflow_copy(tmp_path: Path) -> Path:
    """The workflow without results/ (so a dry run plans every job)."""
    return copy_workflow(tmp_path / "workflow")


def dry_run(work: Path, *args: str) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=work,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return planned_jobs(out)


def test_jobs_match_the_demo_dry_run(tmp_path):
    work = workflow_copy(tmp_path)
    expected = plan.planned_jobs(config.load(DEMO_CONFIGS))
    assert dry_run(work, "--profile", "profiles/demo") == expected
    assert sum(expected.values()) == DEMO_JOBS


def paper_without_weights(tmp_path: Path) -> Path:
    """A workflow copy with the paper's config, SLICE-3D's files stood in for by empty files
    (a plan reads none of them) and the weights' folders pointing where nothing is."""
    work = workflow_copy(tmp_path)
    data = tmp_path / "slice3d"
    data.mkdir()
    (data / "train-metadata.csv").touch()
    (data / "train-image.hdf5").touch()
    override = {"data": {"metadata": str(data / "train-metadata.csv"),
                         "images": str(data / "train-image.hdf5")},
                "model": {"base": str(tmp_path / "models" / "qwen"),
                          "encoders": {"monet": {"path": str(tmp_path / "models" / "monet")}}}}
    (work / "stand-ins.yaml").write_text(yaml.safe_dump(override))
    return work


def snakemake_in(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=work,
                          capture_output=True, text=True, timeout=300)


PAPER = ("--configfile", "config.yaml", "stand-ins.yaml")


def missing(tmp_path: Path, out: str) -> dict[str, int]:
    """How often each missing weights folder is named, with the command that fetches it."""
    return {hub: out.count(f"hf download {hub} --local-dir {tmp_path / 'models' / name} ")
            for hub, name in (("Qwen/Qwen2-VL-7B-Instruct", "qwen"), ("chanwkim/monet", "monet"))}


def test_jobs_match_the_paper_dry_run(tmp_path):
    """The paper's config (64 shards, no demo rules) with the SLURM profile, before the
    weights are in place: the whole plan, and one warning per missing folder."""
    work = paper_without_weights(tmp_path)
    proc = snakemake_in(work, "-n", "--profile", "profiles/slurm", *PAPER)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert missing(tmp_path, out) == {"Qwen/Qwen2-VL-7B-Instruct": 1, "chanwkim/monet": 1}
    expected = plan.planned_jobs(config.load([REPO / "config.yaml"]))
    assert planned_jobs(out) == expected
    assert expected["embed_shard"] == 3 * 2 * 64
    # The paper's Fig. 2: the tuned model's answers only (predict.models: [tuned]).
    assert expected["predict_shard"] == 8 and expected["merge_predictions"] == 1
    assert "r2_untuned" not in expected
    assert expected["embed_groups"] == 2 * 64
    assert expected["merge_embeddings"] == 2 * (16 + 3 + 3)  # attributes + 3 image-only + groups
    assert sum(expected.values()) == PAPER_JOBS


def test_the_plan_needs_no_weights_and_a_run_stops_before_any_job(tmp_path):
    """Lint needs neither data nor weights; --dag and --summary plan without the weights; a
    run that would load them stops before any job starts, naming each folder; a run that
    loads none (the data's split) goes on."""
    work = paper_without_weights(tmp_path)
    # The catalog lints the default config alone, on a machine with nothing in place.
    lint = snakemake_in(work, "--lint", "--configfile", "config.yaml")
    assert lint.returncode == 0, (lint.stdout + lint.stderr)[-4000:]
    dag = snakemake_in(work, "--dag", *PAPER)
    assert dag.returncode == 0, dag.stderr[-4000:]
    assert dag.stdout.startswith("digraph snakemake_dag {")  # the warnings stay off stdout
    assert 'label = "train"' in dag.stdout
    assert missing(tmp_path, dag.stderr) == {"Qwen/Qwen2-VL-7B-Instruct": 1,
                                             "chanwkim/monet": 1}
    summary = snakemake_in(work, "--summary", *PAPER)
    assert summary.returncode == 0, summary.stderr[-4000:]
    assert "results/paper/train/adapter" in summary.stdout
    run = snakemake_in(work, "--cores", "1", *PAPER)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-4000:]
    # both folders named with their commands: in the warnings, then in the stop
    assert missing(tmp_path, out) == {"Qwen/Qwen2-VL-7B-Instruct": 2, "chanwkim/monet": 2}
    assert "missing_weights_stop" in out
    assert not (work / "results").exists()  # no job started, no log written
    # A target that loads no weights runs: its first job reads the (empty) metadata file.
    split = snakemake_in(work, "split", "--cores", "1", *PAPER)
    out = split.stdout + split.stderr
    assert split.returncode == 1 and "Error in rule manifest" in out, out[-4000:]
    assert "missing_weights_stop" not in out
    assert (work / "results" / "paper" / "logs" / "manifest.log").exists()


def test_the_rules_that_load_weights_are_the_model_rules(tmp_path):
    """plan.MODEL_RULES (what a run checks before it starts) is every rule with a job whose
    inputs hold a weights folder, read off the paper's dry run with the weights in place."""
    work = paper_without_weights(tmp_path)
    folders = {str(tmp_path / "models" / name) for name in ("qwen", "monet")}
    for folder in folders:
        Path(folder).mkdir(parents=True)
    proc = snakemake_in(work, "-n", *PAPER)  # a dry run prints every job's inputs
    assert proc.returncode == 0, proc.stderr[-4000:]
    loading, rule = set(), None
    for line in proc.stdout.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line):
            rule = match.group(1)
        elif line.startswith("    input: ") and folders & set(line[11:].split(", ")):
            loading.add(rule)
    assert loading == set(plan.MODEL_RULES)
    assert "hf download" not in proc.stdout + proc.stderr  # in place: no warning


def job_inputs(out: str) -> dict[str, set[str]]:
    """Rule -> every input path of its jobs, read off a dry run's job listing."""
    inputs: dict[str, set[str]] = {}
    rule = None
    for line in out.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line):
            rule = match.group(1)
        elif line.startswith("    input: ") and rule:
            inputs.setdefault(rule, set()).update(line[11:].split(", "))
    return inputs


@pytest.mark.parametrize("measured", ["committed", "with-gpu"])
def test_no_rule_reads_bench(tmp_path, measured):
    """Every job's inputs in the demo's and the paper's whole DAGs lie outside bench/ (whose
    records a bench rerun rewrites); the cost job reads what was measured from
    resources/measured/, the GPU check's MFUs too once one is promoted there."""
    work = paper_without_weights(tmp_path)
    if measured == "with-gpu":
        fake_gpu_json(work / "resources" / "measured" / "gpu.json")
    for args in (("--profile", "profiles/demo"), PAPER):
        proc = snakemake_in(work, "-n", "--forceall", *args)
        assert proc.returncode == 0, proc.stderr[-4000:]
        inputs = job_inputs(proc.stdout)
        assert len(inputs) > 20, proc.stdout[-2000:]
        read = sorted(p for paths in inputs.values() for p in paths
                      if Path(p).parts[:1] == ("bench",))
        assert not read, f"jobs read bench/: {read}"
        expected = {"resources/measured/tokens.json"}
        if measured == "with-gpu":
            expected.add("resources/measured/gpu.json")
        assert {p for p in inputs["cost"] if p.startswith("resources/")} == expected
    for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        assert "bench/" not in path.read_text(encoding="utf-8"), path


def test_the_cost_rule_reads_its_optional_inputs(tmp_path):
    """The cost script as its rule runs it, with the measured token counts and a promoted GPU
    check given as Snakemake gives an optional input (a list of one path: the README's first
    command crashed on it): both are applied, and without them the assumed values stay."""
    demo = config.load(DEMO_CONFIGS)
    params = {"config": demo, "code": ""}
    profiles = {"profile": REPO / "profiles/default/config.yaml",
                "site": REPO / "profiles/slurm/config.yaml"}
    gpu = fake_gpu_json(tmp_path / "gpu.json")
    for given in ({"tokens": [REPO / "resources/measured/tokens.json"], "gpu": [gpu]},
                  {"tokens": [], "gpu": []}):
        out = {"csv": tmp_path / "stages.csv", "markdown": tmp_path / "cost.md"}
        proc = run_script("cost", tmp_path, input={**profiles, **given}, output=out,
                          params=params)
        assert proc.returncode == 0, proc.log[-3000:]
        text = out["markdown"].read_text()
        # what the page is, first: an estimate at the config's scale, not this run's time
        assert text.startswith("**An estimate, not this run's measured time.**")
        assert "the paper's 282,564 train + 118,495 test images" in text
        assert "This run is a demo" in text  # the demo's config: tiny models on a CPU
        assert "Model loading: " in text and "Recommended runtime per job" in text
        assert "| **total** |" in text and "Disk (skinground.cost.disk)" in text
        if given["gpu"]:
            assert "Token counts measured" in text and "MFU measured on NVIDIA H200" in text
        else:
            assert "Token counts assumed" in text and "MFU assumed" in text


def test_promote_checks_a_record_and_copies_it(tmp_path):
    """bench/promote.py: the one step from a bench's record to the workflow's measured
    inputs. A usable record is copied byte for byte; a --tiny GPU check or a record without
    token counts is refused in one line, and the workflow's copy stays as it was."""
    bench, root = tmp_path / "bench", tmp_path / "checkout"
    bench.mkdir()
    fake_gpu_json(bench / "gpu.json")
    (bench / "tokens.json").write_text(json.dumps({"prefix_text_tokens": 16}))

    def promote(name):
        return subprocess.run([sys.executable, str(REPO / "bench" / "promote.py"), name,
                               "--bench", str(bench), "--root", str(root)],
                              capture_output=True, text=True, timeout=120)

    proc = promote("gpu")
    assert proc.returncode == 0, proc.stderr
    target = root / "resources" / "measured" / "gpu.json"
    assert target.read_bytes() == (bench / "gpu.json").read_bytes()
    fake_gpu_json(bench / "gpu.json", tiny=True)
    proc = promote("gpu")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{bench / 'gpu.json'}: the cost model would not use it" in proc.stderr
    assert json.loads(target.read_text())["tiny"] is False  # unchanged
    proc = promote("tokens")
    assert proc.returncode == 1 and "no token counts" in proc.stderr
    assert not (root / "resources" / "measured" / "tokens.json").exists()


def test_fewer_methods_fewer_jobs(repo_config):
    fewer = config.deep_merge(repo_config, {"retrieve": {"methods": ["image_only", "monet"],
                                                         "group_methods": ["image_only"]}})
    jobs = plan.planned_jobs(fewer)
    assert jobs["embed_shard"] == 2 * 2 * 64  # tuned and MONET, no untuned
    assert jobs["merge_embeddings"] == 4 and jobs["build_index"] == 2
    assert jobs["retrieve"] == 2
    assert "embed_groups" not in jobs and "retrieve_groups" not in jobs  # no composed query
    composed = config.deep_merge(fewer, {"retrieve": {"group_methods": ["composed"]}})
    jobs = plan.planned_jobs(composed)
    assert jobs["embed_groups"] == 2 * 64
    assert jobs["merge_embeddings"] == 4 + 2 * 3  # the 3 group spaces, per split


MEDSIGLIP = {"path": "/models/medsiglip-448", "format": "siglip", "title": "MedSigLIP",
             "hub": "google/medsiglip-448",
             "preprocessing": {"size": 448, "crop": False, "resample": "bilinear",
                               "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def with_medsiglip(repo_config, path="/models/medsiglip-448"):
    return config.deep_merge(repo_config, {
        "model": {"encoders": {"medsiglip": {**MEDSIGLIP, "path": str(path)}}},
        "retrieve": {"methods": [*repo_config["retrieve"]["methods"], "medsiglip"]}})


def test_two_encoders_two_sets_of_jobs(repo_config):
    """Each encoder of retrieve.methods is a model of its own: its embed shards, its image
    space per split, its index, its retrieval job and its probe; one configured but not
    searched costs nothing."""
    one, two = plan.planned_jobs(repo_config), plan.planned_jobs(with_medsiglip(repo_config))
    assert two["embed_shard"] - one["embed_shard"] == 2 * 64
    assert two["merge_embeddings"] - one["merge_embeddings"] == 2
    assert two["build_index"] - one["build_index"] == 1
    assert two["retrieve"] - one["retrieve"] == 1
    assert two["probe"] - one["probe"] == 1
    assert sum(two.values()) - sum(one.values()) == 2 * 64 + 5
    unused = config.deep_merge(repo_config, {"model": {"encoders": {"medsiglip": MEDSIGLIP}}})
    assert plan.planned_jobs(unused) == one
    assert plan.embed_models(with_medsiglip(repo_config)) == ("tuned", "untuned", "monet",
                                                              "medsiglip")
    order = plan.method_order(["medsiglip", "monet", "image_text"], with_medsiglip(repo_config))
    assert order == ["image_text", "monet", "medsiglip"]  # (a)-(d), then the config's order


def test_each_encoder_costs_its_own_architecture(repo_config):
    result = estimate.estimate(with_medsiglip(repo_config), estimate.Assumptions())
    images = flops.PAPER_TRAIN_IMAGES + flops.PAPER_TEST_IMAGES
    monet = _stage(result, "embed MONET (CLIP ViT-L/14)")
    medsiglip = _stage(result, "embed MedSigLIP (SigLIP So400m/14, 448 px)")
    assert monet["jobs"] == medsiglip["jobs"] == 2 * 64
    assert medsiglip["pflop"] == pytest.approx(
        images * flops.encoder_flops_per_image(flops.SIGLIP_SO400M_448) / 1e15)
    # 1,024 patches of width 1,152 x 27 layers against 257 of 1,024 x 24: ~4.7x the FLOPs
    assert 4 < medsiglip["gpu_hours"] / monet["gpu_hours"] < 6
    # its searches are 1,152 wide, MONET's 768
    retrieve = _stage(result, "retrieve")
    base = _stage(estimate.estimate(repo_config, estimate.Assumptions()), "retrieve")
    extra = 2 * flops.PAPER_TEST_IMAGES * flops.PAPER_TRAIN_IMAGES * 1152 / 1e15
    assert retrieve["pflop"] - base["pflop"] == pytest.approx(extra)
    assert retrieve["jobs"] == base["jobs"] + 1
    # the memory of its retrieval job: one 1,152-wide index, between MONET's and Qwen's
    mem = {r["rule"]: r["host_gb"] for r in result["memory"]}
    assert mem["retrieve:monet"] < mem["retrieve:medsiglip"] < mem["retrieve:image_only"]


def test_an_encoder_folder_gives_its_architecture(repo_config, tmp_path):
    """A folder that is there is read (its config.json); one that is not falls back on the hub
    repo's known architecture; neither: an error naming the encoder."""
    folder = tiny.build_tiny_siglip(tmp_path / "siglip")  # 64 px in 8 px patches, width 32
    spec = flops.encoder_specs(with_medsiglip(repo_config, folder)["model"])["medsiglip"]
    assert (spec.layers, spec.width, spec.mlp, spec.tokens, spec.embedding) == (2, 32, 128, 64,
                                                                                32)
    assert flops.encoder_specs(with_medsiglip(repo_config)["model"])["medsiglip"] \
        == flops.SIGLIP_SO400M_448
    demo = config.deep_merge(with_medsiglip(repo_config, folder), {"model": {"build_tiny": True}})
    assert flops.encoder_specs(demo["model"])["medsiglip"] == flops.SIGLIP_SO400M_448
    unknown = config.deep_merge(repo_config, {"model": {"encoders": {"dermlip": {
        **MEDSIGLIP, "path": str(tmp_path / "absent"), "hub": "redlessone/DermLIP_ViT-B-16"}}}})
    with pytest.raises(ValueError, match="model.encoders.dermlip: its architecture is unknown"):
        flops.encoder_specs(unknown["model"])


@pytest.mark.parametrize("spec", [flops.CLIP_L14, flops.SIGLIP_SO400M_448],
                         ids=["monet", "medsiglip"])
def test_encoder_shapes_match_transformers(spec):
    """The known architectures are the hub configs' shapes: the layers' matrices hold
    layers x (4 w² + 2 w mlp) weights, as the FLOP count assumes, and the position
    embeddings one row per token."""
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    clip = spec is flops.CLIP_L14
    kind = dict(hidden_size=spec.width, intermediate_size=spec.mlp,
                num_hidden_layers=spec.layers, num_attention_heads=16, patch_size=14)
    with torch.device("meta"):
        if clip:
            model = CLIPVisionModelWithProjection(
                CLIPVisionConfig(**kind, image_size=224, projection_dim=spec.embedding))
        else:
            model = SiglipVisionModel(SiglipVisionConfig(**kind, image_size=448))
    tower = getattr(model, "vision_model", model)  # SiglipVisionModel is the tower itself
    matrices = sum(p.numel() for p in tower.encoder.layers.parameters() if p.dim() == 2)
    assert matrices == spec.layers * (4 * spec.width**2 + 2 * spec.width * spec.mlp)
    assert tower.embeddings.position_embedding.num_embeddings == spec.tokens
    width = model.visual_projection.out_features if clip else spec.width
    assert width == spec.embedding


def _hf_config(spec: flops.QwenSpec, mrope):
    ids = {tok: i for i, tok in enumerate(loading.SPECIAL_TOKENS)}
    return tiny.qwen2vl_config(
        ids, spec.vocab_size, text_hidden=spec.text_hidden, intermediate=spec.intermediate,
        layers=spec.layers, heads=spec.heads, kv_heads=spec.kv_heads, mrope_section=mrope,
        vision_depth=spec.vision_depth, vision_embed=spec.vision_embed,
        vision_heads=spec.vision_heads, patch_size=spec.patch_size,
        spatial_merge=spec.spatial_merge)


@pytest.mark.parametrize(
    ("spec", "mrope"),
    [(flops.QWEN2VL_7B, [16, 24, 24]),
     (flops.QwenSpec(text_hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2,
                    vocab_size=512, vision_depth=2, vision_embed=32, vision_heads=2), [2, 3, 3])],
    ids=["7B", "tiny"],
)
def test_parameter_counts_match_transformers(spec, mrope):
    from transformers import Qwen2VLForConditionalGeneration

    with torch.device("meta"):  # shapes only: the 7B costs no memory
        model = Qwen2VLForConditionalGeneration(_hf_config(spec, mrope))
    p = flops.param_counts(spec)

    def n(module):
        return sum(t.numel() for t in module.parameters())

    assert n(model.model.visual) == (p["vision_patch_embed"] + p["vision_blocks"]
                                     + p["vision_merger"])
    assert n(model.model.language_model) == (p["embed_tokens"] + p["decoder_layers"]
                                             + p["final_norm"])
    assert n(model.lm_head) == p["lm_head"]
    assert n(model) == p["total"]
    if spec == flops.QWEN2VL_7B:
        assert round(p["total"] / 1e9, 2) == 8.29  # Qwen2-VL-7B's published size


@pytest.mark.parametrize("px", [61, 100, 131, 180, 239])
def test_image_tokens_match_the_processor(px):
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    model_cfg = {"image_size": None, "min_pixels": 3136, "max_pixels": 262144}
    ip = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                  min_pixels=3136, max_pixels=262144)
    grid = ip(images=[Image.new("RGB", (px, px))], return_tensors="pt")["image_grid_thw"]
    assert flops.image_tokens(px, model_cfg) == int(grid.prod()) // 4
    assert flops.image_tokens(131, model_cfg) == 25  # the median SLICE-3D tile -> 140 px
    assert flops.image_tokens(px, {"image_size": 112}) == 16  # the demo's fixed size


def test_paper_workload(repo_config):
    result = estimate.estimate(repo_config, estimate.Assumptions())
    wl = result["workload"]
    assert wl["tuples"] == flops.PAPER_TUPLES  # 282,564 train images x W=5
    assert wl["image_tokens"] == 25
    assert result["total_jobs"] == PAPER_JOBS
    spread = estimate.estimate(repo_config, estimate.Assumptions(tile_sigma=0.35))
    assert spread["workload"]["image_tokens"] > 25  # tokens grow with the square of the side


def _stage(result, prefix):
    return next(r for r in result["stages"] if r["stage"].startswith(prefix))


def test_gpu_hours_scale_linearly_with_tuples(repo_config):
    one = estimate.estimate(repo_config, estimate.Assumptions(tuples=1_000_000))
    two = estimate.estimate(repo_config, estimate.Assumptions(tuples=2_000_000))
    # the compute; loading the weights is the same for any number of tuples
    assert _stage(two, "train")["compute_gpu_hours"] == pytest.approx(
        2 * _stage(one, "train")["compute_gpu_hours"], rel=1e-12)
    assert (_stage(two, "train")["gpu_hours"] - _stage(two, "train")["compute_gpu_hours"]
            == pytest.approx(_stage(one, "train")["gpu_hours"]
                             - _stage(one, "train")["compute_gpu_hours"]))
    assert _stage(two, "train")["pflop"] == pytest.approx(2 * _stage(one, "train")["pflop"])
    # Nothing else depends on the tuples.
    for r1, r2 in zip(one["stages"], two["stages"], strict=True):
        if r1["rule"] != "train":
            assert r1["gpu_hours"] == r2["gpu_hours"]


def test_prefix_shared_embedding_far_below_naive(repo_config):
    result = estimate.estimate(repo_config, estimate.Assumptions())
    shared = _stage(result, "embed tuned, prefix-shared")
    naive = _stage(result, "(embed tuned, naive")
    assert naive["gpu_hours"] > 4 * shared["gpu_hours"]
    assert naive["pflop"] > 3 * shared["pflop"]
    assert not naive["in_dag"]
    assert result["total"]["gpu_hours"] == pytest.approx(
        sum(r["gpu_hours"] for r in result["stages"] if r["in_dag"]))  # naive left out
    assert result["naive_over_prefix_shared"] == pytest.approx(
        naive["gpu_hours"] / shared["gpu_hours"])


def test_the_study_costs_a_third_of_the_naive_layout(repo_config):
    """With the image-once training option, image-once generation and prefix-shared embedding:
    the paper's study at <= 1/3 of the GPU-hours of one sequence per tuple / per (image,
    question), and no job over its runtime limit in the workflow profile. (config.yaml trains
    as the paper did, per_tuple: its DAG's training is the naive one.)"""
    assert repo_config["train"]["layout"] == "per_tuple"  # the paper's sampler
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    fast = config.deep_merge(repo_config, {"train": {"layout": "per_image"}})
    result = estimate.estimate(fast, estimate.Assumptions(), gpus=config.gpus_per_job(profile),
                           runtimes=config.runtime_limits(profile))
    naive, total = result["naive_total"], result["total"]
    assert total["gpu_hours"] <= naive["gpu_hours"] / 3
    assert result["dag_over_naive"] == pytest.approx(total["gpu_hours"] / naive["gpu_hours"])
    assert not [r["stage"] for r in result["stages"] if r["in_dag"] and r["over_runtime_limit"]]
    by_stage = {r["stage"]: r for r in result["stages"]}
    train = {layout: by_stage[f"train (LoRA, ZeRO-2, {layout})"]
             for layout in ("per_image", "per_tuple")}
    assert train["per_image"]["in_dag"] and not train["per_tuple"]["in_dag"]
    assert train["per_tuple"]["in_naive"] and not train["per_image"]["in_naive"]
    assert train["per_image"]["pflop"] < 0.7 * train["per_tuple"]["pflop"]
    once = [r for r in result["stages"] if r["rule"] == "predict_shard"]
    assert len(once) == len(repo_config["predict"]["models"])
    assert all(r["jobs"] == repo_config["predict"]["shards"] for r in once)
    naive_predict = [r for r in result["stages"] if r["stage"].startswith("predict")
                     and not r["in_dag"]]
    assert all(r["in_naive"] for r in naive_predict)
    assert sum(r["gpu_hours"] for r in once) < 0.5 * sum(r["gpu_hours"] for r in naive_predict)
    # The per-tuple layout (config.yaml's) makes the DAG's training the naive one.
    paper = estimate.estimate(repo_config, estimate.Assumptions(),
                              gpus=config.gpus_per_job(profile),
                              runtimes=config.runtime_limits(profile))
    assert paper["total"]["gpu_hours"] > total["gpu_hours"]
    assert not [r["stage"] for r in paper["stages"] if r["in_dag"] and r["over_runtime_limit"]]


def fake_gpu_json(path: Path, *, tiny=False, train_mfu=0.2, shared_mfu=0.25, naive_mfu=0.01):
    path.write_text(json.dumps({
        "tiny": tiny, "peak_tflops": 989.0,
        "device": {"type": "cpu" if tiny else "cuda", "name": "NVIDIA H200"},
        "train": {"mfu": train_mfu},
        "embed": {"mfu": {"prefix_shared": shared_mfu, "naive": naive_mfu}},
    }))
    return path


def test_measured_mfu_replaces_the_assumed_one(repo_config, tmp_path):
    gpu = json.loads(fake_gpu_json(tmp_path / "gpu.json").read_text())
    assumed = estimate.estimate(repo_config, estimate.Assumptions())
    result = estimate.estimate(
        repo_config, calibration.apply_measurements(estimate.Assumptions(), gpu))
    assert result["measured"]["used"]
    assert _stage(result, "train")["compute_gpu_hours"] == pytest.approx(
        _stage(assumed, "train")["compute_gpu_hours"] * 0.35 / 0.2)
    assert "measured" in _stage(result, "train")["basis"]
    tiny = json.loads(fake_gpu_json(tmp_path / "tiny.json", tiny=True).read_text())
    ignored = calibration.apply_measurements(estimate.Assumptions(), tiny)
    assert not ignored.measured["used"] and ignored.train_mfu == 0.35


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skinground.cost", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_runs_as_a_module(tmp_path):
    proc = run_module("config.yaml", "--no-gpu-json")
    assert proc.returncode == 0, proc.stderr
    assert "| embed_shard | 384 |" in proc.stdout
    assert re.search(r"\| train \(LoRA, ZeRO-2, per_image\) \| train \| 1 \| 4 \|", proc.stdout)
    assert re.search(r"\| total, naive layout \| .* \| [\d.]+ \|", proc.stdout)
    proc = run_module("config.yaml", "--json", "--gpu-json",
                      str(fake_gpu_json(tmp_path / "gpu.json")))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["total_jobs"] == PAPER_JOBS and result["measured"]["used"]
    assert result["naive_total"]["gpu_hours"] > 3 * result["total"]["gpu_hours"]
    assert result["total"]["gpu_hours"] > 0
    demo = run_module(*map(str, DEMO_CONFIGS), "--json", "--no-gpu-json")
    assert json.loads(demo.stdout)["total_jobs"] == DEMO_JOBS


@pytest.mark.slow
def test_gpu_check_tiny_runs_on_cpu(tmp_path):
    """bench/gpu_check.py's whole code path (DeepSpeed LoRA steps under torchrun, both
    extraction methods) with the tiny model; the cost model does not use a --tiny result."""
    out = tmp_path / "gpu_tiny.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--tiny",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    result = json.loads(out.read_text())
    assert result["ok"] and result["tiny"] and result["model"]["match"]
    train, emb = result["train"], result["embed"]
    assert train["timed_steps"] >= 1 and train["finite_loss"] and train["tokens_per_s"] > 0
    assert train["sequences_per_step"] == 16  # config.yaml's global batch on one process
    # "train" is config.yaml's layout (the paper's per_tuple), beside the image-once option
    assert train["layout"] == "per_tuple" and result["train_per_image"]["layout"] == "per_image"
    assert result["train_per_image"]["images_per_step"] < train["images_per_step"]
    assert result["train_layouts"]["per_image_over_per_tuple"] > 0
    predict = result["predict"]
    assert predict["identical_rows"] == predict["rows"] == 6 * 16  # float32: the same tokens
    assert predict["ratio"] > 1
    assert emb["speedup"] > 1
    assert emb["agreement"]["max_abs_diff"]["h_ima"] < 1e-4  # float32: the same numbers
    proc = run_module("config.yaml", "--json", "--gpu-json", str(out))
    assert not json.loads(proc.stdout)["measured"]["used"]


def test_jobs_over_the_profile_runtime_are_flagged(repo_config):
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    limits = config.runtime_limits(profile)
    assert limits["train"] > 0
    result = estimate.estimate(repo_config, estimate.Assumptions(),
                               gpus=config.gpus_per_job(profile),
                               runtimes={**limits, "train": 60.0})
    train = _stage(result, "train")
    assert train["gpus_per_job"] == profile["set-resources"]["train"]["gpu"]
    assert train["runtime_limit_hours"] == 1.0 and train["over_runtime_limit"]
    assert train["hours_per_job"] == pytest.approx(train["gpu_hours"] / train["gpus_per_job"])
