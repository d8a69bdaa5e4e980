"""The SLURM side: how `--profile slurm` resolves next to the workflow profile, and a real run
through snakemake-executor-plugin-slurm against a one-node SLURM cluster started on this host
(tests/slurm/testcluster.py: 4 fake A6000s, partitions `cpu` and `gpu`, no accounting)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_workflow

sys.path.insert(0, str(Path(__file__).resolve().parent / "slurm"))
import testcluster  # noqa: E402

# A small demo dataset, and 10 training steps: this checks placement, not learning (the
# demo's 2 epochs take ~10 min on 2 cores).
SMALL = {"synthetic": {"patients": 12, "images": 240},
         "train": {"max_steps": 10, "logging_steps": 5}}
CONFIGS = ["config.yaml", "profiles/demo/demo-config.yaml", "small.yaml"]
GPU_RULES = ("train", "predict_shard", "embed_shard", "embed_groups", "retrieve",
             "retrieve_groups")
PROBE = Path(__file__).resolve().parent / "slurm" / "probe"
SHARD = "results/demo/embed/tuned/test/shard0.npz"


def small_workflow(work: Path) -> Path:
    """A copy of the workflow with the small demo config small.yaml beside it."""
    copy_workflow(work)
    (work / "small.yaml").write_text(yaml.safe_dump(SMALL))
    return work


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# -- profiles: what each one owns ------------------------------------------------------------


def test_profiles_own_disjoint_keys():
    """The workflow profile replaces a key of the site profile as a whole (see the next test),
    so each key lives in exactly one of them."""
    site = load(REPO / "profiles/slurm/config.yaml")
    workflow = load(REPO / "profiles/default/config.yaml")
    assert not set(site) & set(workflow)
    assert "default-resources" not in workflow
    assert "set-resources" not in site and "set-threads" not in site
    assert site["executor"] == "slurm"
    assert site["slurm-status-command"] == "squeue"
    assert site["default-resources"]["slurm_account"]
    assert "slurm_partition" not in site["default-resources"]  # would beat partitions.yaml
    partitions = load(REPO / "profiles/slurm" / site["slurm-partition-config"])["partitions"]
    gpu_partitions = [p for p, lim in partitions.items() if (lim or {}).get("max_gpu", 0) > 0]
    cpu_partitions = [p for p, lim in partitions.items() if not (lim or {}).get("max_gpu", 0)]
    assert gpu_partitions and cpu_partitions


def test_workflow_profile_placement():
    res = load(REPO / "profiles/default/config.yaml")["set-resources"]
    assert res["train"]["gpu"] == 4 and res["train"]["nodes"] == 1
    for rule in GPU_RULES:
        assert res[rule]["gpu_model"] == "a6000"
        assert rule == "train" or res[rule]["gpu"] == 1
        assert res[rule]["runtime"] > 0 and res[rule]["mem_mb"] > 0
    smk = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    for rule in GPU_RULES:  # the rules default to gpu=0 (CPU); the profile places them
        body = smk.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        assert re.search(r"resources:\s*\n\s*gpu=0", body) or "gpu" not in body, rule
    # Every rule that runs a model or FAISS (the GPU environment) is placed on a GPU, but the
    # demo's CPU-only model builder.
    gpu_env = set(re.findall(r"rule (\w+):(?:(?!\n\s*rule ).)*?conda:\s*\n\s*GPU_ENV", smk,
                             flags=re.S))
    assert gpu_env - {"build_models"} == set(GPU_RULES)


EFFECTIVE = """
import json, sys
from snakemake.cli import parse_args
_, a = parse_args(sys.argv[1:])
val = lambda r: r.raw if r.is_evaluable() else r.value  # an expression: as written
flat = lambda d: {k: val(v) for k, v in (d or {}).items()}
status = getattr(a, "slurm_status_command", None)
print(json.dumps({
    "executor": a.executor, "cores": a.cores,
    "default_resources": flat(a.default_resources),
    "set_resources": {rule: flat(r) for rule, r in (a.set_resources or {}).items()},
    "set_threads": flat(a.set_threads),
    "status_command": status if isinstance(status, str) else None,
    "partition_config": str(getattr(a, "slurm_partition_config", "")),
}, default=str))
"""


def effective(work: Path, env: dict, *args: str) -> dict:
    """Snakemake's own parse of the command line with its profiles (as `snakemake` sees it)."""
    proc = subprocess.run([sys.executable, "-c", EFFECTIVE, *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"_stderr": proc.stderr, **json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def plain_copy(tmp_path_factory):
    return small_workflow(tmp_path_factory.mktemp("profiles") / "wf")


@pytest.fixture
def user_env(tmp_path):
    """An environment whose user config folder holds only the site profile, installed as the
    README says (cp -r profiles/slurm ~/.config/snakemake/slurm)."""
    xdg = tmp_path / "xdg"
    (xdg / "snakemake").mkdir(parents=True)
    shutil.copytree(REPO / "profiles/slurm", xdg / "snakemake" / "slurm")
    return {**os.environ, "XDG_CONFIG_HOME": str(xdg)}


def test_workflow_profile_replaces_whole_keys(tmp_path, user_env):
    """Measured: when both profiles set set-resources (or default-resources), the workflow
    profile's entry wins whole, the general profile's is dropped (not merged)."""
    work = small_workflow(tmp_path / "wf")
    (work / "site").mkdir()
    (work / "site/config.yaml").write_text(yaml.safe_dump({
        "set-resources": {"train": {"slurm_partition": "gpu"}, "tuples": {"mem_mb": 1234}},
        "default-resources": {"slurm_account": "acct", "mem_mb": 4000},
    }))
    (work / "profiles/default/config.yaml").write_text(yaml.safe_dump({
        "set-resources": {"train": {"gpu": 4}}, "default-resources": {"runtime": 99},
    }))
    eff = effective(work, user_env, "--profile", "site", "-n")
    assert eff["set_resources"] == {"train": {"gpu": 4}}
    assert eff["default_resources"].get("runtime") == 99
    assert "slurm_account" not in eff["default_resources"]


def test_plain_profile_slurm_resolves_from_user_config(plain_copy, user_env):
    eff = effective(plain_copy, user_env, "--profile", "slurm", "-n")
    xdg_profile = Path(user_env["XDG_CONFIG_HOME"]) / "snakemake" / "slurm"
    assert "Using profiles slurm and workflow specific profile profiles/default" in eff["_stderr"]
    assert eff["executor"] == "slurm"
    assert eff["status_command"] == "squeue"
    assert eff["partition_config"] == str(xdg_profile / "partitions.yaml")
    site = load(REPO / "profiles/slurm/config.yaml")["default-resources"]
    # nothing the site sets is lost: its default-resources and the workflow profile's
    # per-rule resources both hold
    for key, value in site.items():
        assert str(eff["default_resources"][key]).strip("'\"") == str(value), key
    assert eff["set_resources"]["train"]["gpu"] == 4
    assert eff["set_resources"]["embed_shard"]["gpu"] == 1
    assert eff["set_threads"]["train"] == 32


def dry_run_train(work: Path, env: dict, profile: str) -> str:
    """A dry run of train and one embed shard under ``profile``; its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", profile, "-n", "train", SHARD,
         "--configfile", *CONFIGS],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def test_plain_profile_slurm_dry_run(plain_copy, user_env):
    out = dry_run_train(plain_copy, user_env, "slurm")
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    train = out.split("rule train:", 1)[1].split("\n\n", 1)[0]
    account = load(REPO / "profiles/slurm/config.yaml")["default-resources"]["slurm_account"]
    assert "gpu=4" in train and "gpu_model=a6000" in train and f"slurm_account={account}" in train
    tuples = out.split("rule tuples:", 1)[1].split("\n\n", 1)[0]
    assert "mem_mb=8000" in tuples and "runtime=60" in tuples and "gpu=" not in tuples


def test_demo_profile_stays_local(plain_copy):
    """The demo profile runs locally with the workflow profile's GPU requests present."""
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    eff = effective(plain_copy, env, "--profile", "profiles/demo", "-n")
    assert eff["executor"] in (None, "local") and eff["cores"] == 2
    assert eff["set_resources"]["train"]["gpu"] == 4
    out = dry_run_train(plain_copy, env, "profiles/demo")
    assert "Using profiles profiles/demo and workflow specific profile profiles/default" in out
    assert "slurm" not in out.lower()
    # train starts min(4, visible GPUs) processes: one on CPU
    assert "gpu=4" in out.split("rule train:", 1)[1].split("\n\n", 1)[0]


# -- a real SLURM cluster ------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    if sys.platform != "linux":
        pytest.skip("the test SLURM cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("starting munged/slurmctld/slurmd on this host needs root")
    if why := testcluster.install_packages():
        pytest.skip(f"no SLURM: {why}")
    cluster = testcluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.write_config()
    except PermissionError as exc:  # e.g. mknod in an unprivileged container
        pytest.skip(f"cannot set up the test cluster here: {exc}")
    try:
        cluster.start()
        cluster.wait_idle()
        yield cluster
    finally:
        cluster.cancel_all()
        cluster.stop()


TARGETS = ["train", SHARD]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The demo's train and one embedding shard through `--profile profiles/slurm`."""
    work = small_workflow(tmp_path_factory.mktemp("slurmrun") / "wf")
    probe = work.parent / "probe.jsonl"
    env = slurm_cluster.env()
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "PYTHONPATH": str(PROBE),
        "SKINGROUND_PROBE": str(probe),
        "XDG_CONFIG_HOME": str(work.parent / "xdg"),  # no user profiles
    })
    env.pop("SNAKEMAKE_PROFILE", None)
    cmd = ["timeout", "-k", "30", "600", sys.executable, "-m", "snakemake",
           "--profile", "profiles/slurm", *TARGETS,
           # test-only: poll soon (the site default is 40 s), keep every job's SLURM log,
           # two jobs at a time (the host has 2 cores)
           "--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs",
           "--jobs", "2", "--configfile", *CONFIGS]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=700)
    seconds = time.monotonic() - started
    out = proc.stdout + proc.stderr
    (work.parent / "snakemake.out").write_text(out)
    if proc.returncode != 0:
        pytest.fail(f"snakemake --profile profiles/slurm failed (rc {proc.returncode}, "
                    f"{seconds:.0f} s):\n{out[-8000:]}\n{slurm_cluster.logs()}")
    records = [json.loads(line) for line in probe.read_text().splitlines()] \
        if probe.exists() else []
    return {"work": work, "out": out, "seconds": seconds, "probe": records,
            "jobs": slurm_cluster.scontrol_jobs(), "submitted": submitted_jobs(out)}


def submitted_jobs(out: str) -> dict[str, list[str]]:
    """rule -> SLURM job ids, from Snakemake's output (`jobid: N` in a rule's block, then
    `Job N has been submitted with SLURM jobid M`)."""
    rule_of, rule = {}, None
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = m.group(1)
        elif (m := re.match(r"^jobid: (\d+)$", line.strip())) and rule:
            rule_of[m.group(1)] = rule
    jobs: dict[str, list[str]] = {}
    for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out):
        jobs.setdefault(rule_of[m.group(1)], []).append(m.group(2))
    return jobs


@pytest.mark.slow
def test_slurm_run_outputs(slurm_run):
    work = slurm_run["work"]
    res = work / "results/demo"
    for path in ("train/adapter", "train/loss.csv", "train/summary.json", "split/test.txt",
                 "tuples/train_tuples.parquet", "embed/tuned/test/shard0.npz"):
        assert (res / path).exists(), path
    assert (res / "logs/train.log").stat().st_size > 0
    print(f"SLURM run: {slurm_run['seconds']:.0f} s")


@pytest.mark.slow
def test_every_job_went_through_sbatch(slurm_run):
    submitted, jobs = slurm_run["submitted"], slurm_run["jobs"]
    expected = {"synthetic_data", "manifest", "split", "tuples", "build_models", "train",
                "embed_shard"}
    assert set(submitted) == expected, submitted
    for rule, ids in submitted.items():
        for job_id in ids:
            assert jobs[job_id]["JobState"] == "COMPLETED", (rule, jobs[job_id]["_line"])
            log = slurm_run["work"] / ".snakemake/slurm_logs" / f"rule_{rule}"
            assert list(log.rglob(f"{job_id}.log")), (rule, job_id)
    assert "Nothing to be done" not in slurm_run["out"]


@pytest.mark.slow
def test_partitions_and_account(slurm_run):
    account = load(REPO / "profiles/slurm/config.yaml")["default-resources"]["slurm_account"]
    for rule, ids in slurm_run["submitted"].items():
        for job_id in ids:
            job = slurm_run["jobs"][job_id]
            want = "gpu" if rule in GPU_RULES else "cpu"
            assert job["Partition"] == want, (rule, job["_line"])
            assert job["Account"].lower() == account.lower(), (rule, job["Account"])


@pytest.mark.slow
def test_gpu_requests_reach_slurm(slurm_run):
    jobs, submitted = slurm_run["jobs"], slurm_run["submitted"]
    (train,) = submitted["train"]
    assert "gpu:a6000:4" in jobs[train].get("TresPerJob", ""), jobs[train]["_line"]
    assert jobs[train]["NumNodes"] == "1" and jobs[train]["NumCPUs"] == "32"
    assert jobs[train]["MinMemoryNode"] in ("250G", "256000M")
    (shard,) = submitted["embed_shard"]
    assert "gpu:a6000:1" in jobs[shard].get("TresPerJob", ""), jobs[shard]["_line"]
    for rule in ("synthetic_data", "tuples"):
        for job_id in submitted[rule]:
            assert "gpu" not in jobs[job_id].get("TresPerJob", ""), (rule, job_id)


@pytest.mark.slow
def test_gpu_rules_see_their_gpus(slurm_run):
    """The processes of each rule's script saw CUDA_VISIBLE_DEVICES for the GPUs the job asked
    for, inside that rule's SLURM job."""
    submitted = slurm_run["submitted"]

    def seen(script: str) -> list[dict]:
        # train.py runs from the checkout (a command line), the others as script: directives
        # (Snakemake's copy, .snakemake/scripts/tmp<random>.<script>.py).
        return [r for r in slurm_run["probe"] if r["argv"] and (
            r["argv"][0].endswith(f"workflow/scripts/{script}.py")
            or re.search(rf"/\.snakemake/scripts/tmp[^/]*\.{script}\.py$", r["argv"][0]))]

    train = seen("train")
    assert train, "train.py never ran (probe)"
    assert {r["SLURM_JOB_ID"] for r in train} == set(submitted["train"])
    assert {r["CUDA_VISIBLE_DEVICES"] for r in train} == {"0,1,2,3"}
    assert {r["SLURM_JOB_PARTITION"] for r in train} == {"gpu"}
    embed = seen("embed")
    assert embed and {r["SLURM_JOB_ID"] for r in embed} == set(submitted["embed_shard"])
    assert all(len(r["CUDA_VISIBLE_DEVICES"].split(",")) == 1 for r in embed), embed
    for script in ("synthetic_data", "tuples"):
        assert all(r["CUDA_VISIBLE_DEVICES"] is None for r in seen(script)), script
