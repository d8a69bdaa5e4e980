"""Benchmark: a killed demo run, rerun as a user would, ends with the same tables.

One uninterrupted demo run (``snakemake --profile profiles/demo`` in a fresh copy of the
workflow) gives the reference. Then, ``--kills`` times: a fresh copy runs the demo DAG and its
whole process group is killed with SIGKILL at a random moment (seeded, uniform over the
reference run's wall time); the rerun is what a user types: the same command, and when
Snakemake answers that the directory is locked, ``--unlock`` first. The final tables and
arrays (everything under ``results/demo/`` but logs, benchmarks, timing summaries, the
report) are compared byte for byte with the reference's. Writes
``bench/results/kill_resume.json``: each kill's moment, the rules it hit, and whether the
outputs were identical, and what differed when not.

    python bench/kill_resume.py [--kills 20] [--seed 0] [--small]

``--small``: every run (the reference and the killed ones) on a smaller demo — the same rules
and jobs, 300 images and 300 training steps (checkpoints every 100): one uninterrupted run is
~220-240 s on 2 cores (the full demo ~590 s) and a kill with its rerun ~3.5 min, so 20 kills
take about an hour and a quarter instead of about four.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from skinground.core.io import write_json
from skinground.core.outputs import Results

from demo_dag import copy_workflow
from timing import machine

REPO = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "snakemake", "--profile", "profiles/demo"]
#: ``--small``: merged over the demo config (same DAG, shorter jobs).
SMALL = {"synthetic": {"patients": 12, "images": 300},
         "train": {"max_steps": 300, "save_steps": 100}}
#: Outputs that hold wall times or run-specific paths, not results: not compared.
VOLATILE = ("logs/", "benchmarks/", "train/summary.json", "train/checkpoints/", "report.html")


def digests(results: Path, skip: tuple[str, ...] = VOLATILE, *,
            hidden: bool = False) -> dict[str, str]:
    """sha256 of every file under a run's folder ``results`` (relative path -> digest) but
    those under ``skip`` and, unless ``hidden``, hidden ones (a killed job's temporaries)."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results).as_posix()
        if (path.is_file() and not rel.startswith(skip)
                and (hidden or "/." not in f"/{rel}")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def running_rules(log: str) -> list[str]:
    """The rules of the jobs that had started but not finished when the log ends."""
    started: dict[str, str] = {}
    rule = None
    for line in log.splitlines():
        m = re.match(r"\s*(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        m = re.match(r"\s*jobid: (\d+)", line)
        if m and rule:
            started[m.group(1)] = rule
        m = re.match(r"Finished jobid: (\d+)", line)
        if m:
            started.pop(m.group(1), None)
    return sorted(set(started.values()))


def prepare(work: Path, small: bool) -> list[str]:
    """A fresh copy of the workflow in ``work``; the command to run there."""
    copy_workflow(work)
    if not small:
        return COMMAND
    (work / "small.yaml").write_text(yaml.safe_dump(SMALL))
    return [*COMMAND, "--configfile", "config.yaml", "profiles/demo/demo-config.yaml",
            "small.yaml"]


def rerun(work: Path, command: list[str]) -> dict:
    """The user's rerun: the same command; ``--unlock`` first when Snakemake asks for it."""
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True)
    unlocked = False
    if proc.returncode != 0 and "--unlock" in proc.stdout + proc.stderr:
        subprocess.run([*command, "--unlock"], cwd=work, capture_output=True, text=True,
                       check=True)
        unlocked = True
        proc = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the rerun failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {"unlocked": unlocked}


def killed_run(moment: float, small: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        command = prepare(work, small)
        log_path = work / "snakemake.out"
        with open(log_path, "w") as log:
            job = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
            t0 = time.perf_counter()
            try:
                job.wait(timeout=moment)
                finished = True
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
                finished = False
        hit = running_rules(log_path.read_text())
        time.sleep(2)
        survivors = subprocess.run(["pgrep", "-f", str(work)], capture_output=True,
                                   text=True).stdout.split()
        out = {"kill_after_s": round(moment, 1), "killed": not finished,
               "killed_at_s": round(time.perf_counter() - t0, 1), "rules_hit": hit,
               "processes_left": len(survivors)}
        out.update(rerun(work, command))
        out["digests"] = digests(Results.of_run("demo", work).root)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="a smaller demo (see above)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kill_resume.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        command = prepare(work, a.small)
        t0 = time.perf_counter()
        subprocess.run(command, cwd=work, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        reference = digests(Results.of_run("demo", work).root)
    print(f"reference run: {wall:.0f} s, {len(reference)} files compared", flush=True)
    moments = np.random.default_rng(a.seed).uniform(5.0, wall, a.kills)
    kills = []
    for i, moment in enumerate(moments.tolist()):
        run = killed_run(moment, a.small)
        got = run.pop("digests")
        differ = sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k))
        run.update(identical=not differ, differ=differ[:20])
        kills.append(run)
        print(f"kill {i + 1}/{a.kills} at {moment:.0f} s ({', '.join(run['rules_hit']) or '-'}):"
              f" {'identical' if not differ else f'{len(differ)} file(s) differ'}", flush=True)
    result = {
        "benchmark": "demo DAG killed with SIGKILL at random moments, rerun as a user would: "
                     "are the final outputs byte-identical to an uninterrupted run's?",
        "reference_wall_s": round(wall, 1), "files_compared": len(reference),
        "not_compared": list(VOLATILE), "kills": kills,
        "identical": sum(k["identical"] for k in kills), "of": len(kills),
        "goal": f"{a.kills} of {a.kills} identical", "seed": a.seed,
        "small": SMALL if a.small else None,
        "machine": machine(),
    }
    write_json(a.out, result)
    print(f"{result['identical']}/{len(kills)} identical -> {a.out}")
    return result


if __name__ == "__main__":
    main()
