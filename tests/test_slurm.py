"""The SLURM side: how `--profile slurm` resolves next to the workflow profile, the one site file
(account, GPU model, partitions) and what a change of it does, and real runs through
snakemake-executor-plugin-slurm against a one-node SLURM cluster started on this host
(tests/slurm/testcluster.py: 4 fake A6000s, partitions `cpu` and `gpu`, no accounting): one
with the placeholder account, stopped before anything is submitted, one with an account."""

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
SITE = REPO / "profiles/slurm/config.yaml"
PLACEHOLDER = "YOUR_ACCOUNT"
#: What the real run's user names in the site file instead of the placeholder.
ACCOUNT = "skinground"


def small_workflow(work: Path) -> Path:
    """A copy of the workflow with the small demo config small.yaml beside it."""
    copy_workflow(work)
    (work / "small.yaml").write_text(yaml.safe_dump(SMALL))
    return work


def edit_site(site: Path, old: str, new: str) -> None:
    """Edit one line of a copy of the site file, as its user would (the text must be there)."""
    text = site.read_text()
    assert text.count(old) == 1, old
    site.write_text(text.replace(old, new))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# -- profiles: what each one owns ------------------------------------------------------------


def test_profiles_own_disjoint_keys():
    """The workflow profile replaces a key of the site profile as a whole (see the next test),
    so each key lives in exactly one of them. Everything about a cluster is in the one site
    file: the account, the GPU model, the partitions (the plugin's partition file is the site
    file itself); the workflow profile names none of them."""
    site = load(SITE)
    workflow = load(REPO / "profiles/default/config.yaml")
    assert not set(site) & set(workflow)
    assert "default-resources" not in workflow
    assert "set-resources" not in site and "set-threads" not in site
    assert site["executor"] == "slurm"
    assert site["slurm-status-command"] == "squeue"
    assert site["default-resources"]["slurm_account"] == PLACEHOLDER
    assert site["default-resources"]["gpu_model"] == "a6000"
    assert "slurm_partition" not in site["default-resources"]  # would beat the partitions
    assert site["slurm-partition-config"] == "config.yaml"
    partitions = site["partitions"]
    gpu_partitions = [p for p, lim in partitions.items() if (lim or {}).get("max_gpu", 0) > 0]
    cpu_partitions = [p for p, lim in partitions.items() if not (lim or {}).get("max_gpu", 0)]
    assert gpu_partitions and cpu_partitions
    assert sorted(p.name for p in SITE.parent.iterdir()) == ["config.yaml"]  # one file


def test_the_site_file_is_the_plugins_partition_file():
    """The plugin reads the site file's partitions (and nothing else of it)."""
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    partitions = {p.name: p.limits for p in read_partition_file(SITE)}
    assert set(partitions) == set(load(SITE)["partitions"])
    assert partitions["gpu"].max_gpu == 4 and partitions["cpu"].max_gpu == 0


def test_workflow_profile_placement():
    res = load(REPO / "profiles/default/config.yaml")["set-resources"]
    assert res["train"]["gpu"] == 4 and res["train"]["nodes"] == 1
    for rule in GPU_RULES:
        assert rule == "train" or res[rule]["gpu"] == 1
        assert res[rule]["runtime"] > 0 and res[rule]["mem_mb"] > 0
    assert {rule for rule, r in res.items() if r.get("gpu")} == set(GPU_RULES)
    # what is the site's is the site file's alone
    for r in res.values():
        assert not {"gpu_model", "gres", "slurm_account", "slurm_partition"} & set(r)
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
    assert eff["partition_config"] == str(xdg_profile / "config.yaml")
    site = load(SITE)["default-resources"]
    # nothing the site sets is lost: its default-resources and the workflow profile's
    # per-rule resources both hold
    for key, value in site.items():
        assert str(eff["default_resources"][key]).strip("'\"") == str(value), key
    assert eff["set_resources"]["train"]["gpu"] == 4
    assert eff["set_resources"]["embed_shard"]["gpu"] == 1
    assert eff["set_threads"]["train"] == 32


def dry_run_train(work: Path, env: dict, profile: str, *more: str) -> str:
    """A dry run of train and one embed shard under ``profile``; its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", profile, *more, "-n", "train", SHARD,
         "--configfile", *CONFIGS],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def job_resources(out: str) -> dict[str, str]:
    """Rule -> the resources line of its (first) job in a dry run's output."""
    found = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", out):
        if m := re.match(r"(?:local)?rule (\w+):\n", block):
            line = re.search(r"^    resources: (.*)$", block, re.M)
            found.setdefault(m.group(1), line.group(1) if line else "")
    return found


def test_plain_profile_slurm_dry_run(plain_copy, user_env):
    out = dry_run_train(plain_copy, user_env, "slurm")
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    res = job_resources(out)
    assert "gpu=4" in res["train"] and "gpu_model=a6000" in res["train"]
    assert f"slurm_account={PLACEHOLDER}" in res["train"]  # a dry run plans with it
    assert "gpu=1" in res["embed_shard"] and "gpu_model=a6000" in res["embed_shard"]
    # the site's GPU model reaches the GPU jobs only
    for rule in ("tuples", "split", "manifest", "build_models"):
        assert "gpu" not in res[rule], (rule, res[rule])
    assert "mem_mb=8000" in res["tuples"] and "runtime=60" in res["tuples"]


@pytest.mark.parametrize("model", ["a100", None])
def test_another_gpu_model_is_one_line_of_the_site_file(tmp_path, user_env, model):
    """A site with A100s changes the one line gpu_model; one without the line takes any GPU of
    the GPU partition. CPU jobs never ask for a GPU either way."""
    site = Path(user_env["XDG_CONFIG_HOME"]) / "snakemake/slurm/config.yaml"
    edit_site(site, "  gpu_model: a6000\n", f"  gpu_model: {model}\n" if model else "")
    out = dry_run_train(small_workflow(tmp_path / "wf"), user_env, "slurm")
    res = job_resources(out)
    for rule in ("train", "embed_shard"):
        assert "gpu=" in res[rule]
        assert (f"gpu_model={model}" in res[rule]) if model else "gpu_model" not in res[rule]
    assert "gpu" not in res["tuples"] and "a6000" not in out


def test_demo_profile_stays_local(plain_copy):
    """The demo profile runs locally under the workflow profile, and what it prints of each
    job's resources is the laptop's: no GPU, at most 4 GB (not the cluster's 4 GPUs and
    256 GB); the site's GPU model appears nowhere."""
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    eff = effective(plain_copy, env, "--profile", "profiles/demo", "-n")
    assert eff["executor"] in (None, "local") and eff["cores"] == 2
    assert eff["set_resources"]["train"]["gpu"] == 4
    out = dry_run_train(plain_copy, env, "profiles/demo")
    assert "Using profiles profiles/demo and workflow specific profile profiles/default" in out
    assert "slurm" not in out.lower() and "gpu_model" not in out
    res = job_resources(out)
    # train starts min(gpu, visible GPUs) processes, at least one: one on CPU either way
    assert "gpu=0" in res["train"] and "mem_mb=4000" in res["train"], res["train"]
    assert "gpu=0" in res["embed_shard"] and "256 GB" not in out and "64 GB" not in out


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


def cluster_env(slurm_cluster, work: Path) -> dict:
    """The environment of a run against the test cluster from ``work``: its SLURM, this
    Python's snakemake first on PATH, no user profiles."""
    env = slurm_cluster.env()
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "XDG_CONFIG_HOME": str(work.parent / "xdg"),
    })
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


@pytest.mark.slow
def test_the_placeholder_account_stops_before_anything_is_submitted(slurm_cluster, tmp_path):
    """The site file as shipped (slurm_account YOUR_ACCOUNT, which this cluster without
    accounting would take): a real run stops at its start with one line naming the file and
    the key; no job reaches SLURM and no run folder is made."""
    work = small_workflow(tmp_path / "wf")
    before = set(slurm_cluster.scontrol_jobs())
    proc = subprocess.run(
        ["timeout", "-k", "30", "300", sys.executable, "-m", "snakemake", "--profile",
         "profiles/slurm", *TARGETS, "--jobs", "2", "--configfile", *CONFIGS],
        cwd=work, env=cluster_env(slurm_cluster, work), capture_output=True, text=True,
        timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    stop = [line for line in out.splitlines() if "slurm_account is still" in line]
    assert len(stop) == 1 and stop[0].endswith(
        f"profiles/slurm/config.yaml: default-resources slurm_account is still the "
        f"placeholder {PLACEHOLDER}; name your SLURM account there (sacctmgr -n show "
        "associations user=$USER format=account lists yours)"), out[-4000:]
    assert "has been submitted" not in out
    assert set(slurm_cluster.scontrol_jobs()) == before  # nothing queued, run or finished
    assert not (work / "results").exists()


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The demo's train and one embedding shard through `--profile profiles/slurm`."""
    work = small_workflow(tmp_path_factory.mktemp("slurmrun") / "wf")
    edit_site(work / "profiles/slurm/config.yaml", f"slurm_account: {PLACEHOLDER}",
              f"slurm_account: {ACCOUNT}")
    probe = work.parent / "probe.jsonl"
    env = cluster_env(slurm_cluster, work)
    env.update({"PYTHONPATH": str(PROBE), "SKINGROUND_PROBE": str(probe)})
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
    for rule, ids in slurm_run["submitted"].items():
        for job_id in ids:
            job = slurm_run["jobs"][job_id]
            want = "gpu" if rule in GPU_RULES else "cpu"
            assert job["Partition"] == want, (rule, job["_line"])
            assert job["Account"].lower() == ACCOUNT, (rule, job["Account"])


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
