"""Shared fixtures: tiny SLICE-3D-format datasets written by hand, and the repo's config."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from skinground.data.attributes import METADATA_COLUMNS, PAPER_ATTRIBUTES

REPO = Path(__file__).resolve().parents[1]
#: Set by .ci/run: there every tool a test needs is installed, so a skip is a failure.
NO_SKIPS = "SKINGROUND_NO_SKIPS"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``SKINGROUND_NO_SKIPS=1`` a skipped test fails, naming why it would have
    skipped: CI installs SLURM, Chromium and every test dependency, so a green run cannot
    hide a test that never ran."""
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get(NO_SKIPS) == "1" and report.skipped
            and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where no test may skip ({NO_SKIPS}=1): {reason}"


def run_group(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)`` in a session of
    its own: on a timeout the whole process group is killed (Snakemake or torchrun and the
    jobs they started), not the command alone, so no orphaned job keeps the CPU for the
    tests after it. Raises ``subprocess.TimeoutExpired`` as ``run`` does."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            try:  # a job in a session of its own could hold the pipes open
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def jpeg_bytes(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_rows(n_images: int, n_patients: int, seed: int = 0) -> list[dict]:
    """Metadata rows with every SLICE-3D column; attributes random, one malignant patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        patient = i % n_patients
        row = dict.fromkeys(METADATA_COLUMNS, "")
        row["isic_id"] = f"ISIC_{i:07d}"
        row["patient_id"] = f"IP_{patient:07d}"
        row["target"] = int(patient == 0 and i % 3 == 0)
        for col in PAPER_ATTRIBUTES:
            row[col] = f"{rng.uniform(0.5, 30):.4f}"
        rows.append(row)
    return rows


def write_slice3d(directory: Path, rows: list[dict], *, fmt: str = "hdf5",
                  images: dict[str, bytes] | None = None, columns=METADATA_COLUMNS):
    """Write train-metadata.csv and the images (HDF5 or JPEG folder) in SLICE-3D's format."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / "train-metadata.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if images is None:
        images = {r["isic_id"]: jpeg_bytes(61 + (k * 7) % 179, k) for k, r in enumerate(rows)}
    if fmt == "hdf5":
        img_path = directory / "train-image.hdf5"
        with h5py.File(img_path, "w") as h5:
            for key, data in images.items():
                h5.create_dataset(key, data=np.bytes_(data))
    else:
        img_path = directory / "train-image" / "image"
        img_path.mkdir(parents=True)
        for key, data in images.items():
            (img_path / f"{key}.jpg").write_bytes(data)
    return csv_path, img_path


@pytest.fixture
def dataset(tmp_path):
    """A valid 60-image, 12-patient dataset (HDF5)."""
    return write_slice3d(tmp_path / "slice3d", make_rows(60, 12))


@pytest.fixture(scope="session")
def repo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run: rule -> count (empty: nothing to do)."""
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


def tracked_files(root: Path = REPO) -> list[str]:
    """The checkout's files as a commit of it would hold them (``git ls-files``: tracked, and
    untracked but not ignored), relative to ``root``: never results/, .venv/ or caches."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          cwd=root, capture_output=True, check=True)
    names = sorted({n.decode() for n in proc.stdout.split(b"\0") if n})
    return [n for n in names if (root / n).is_file()]  # a deleted file is still "cached"


def copy_workflow(dest: Path) -> Path:
    """A copy of the whole checkout (:func:`tracked_files`, modification times kept), without
    results/, for tests that run Snakemake without touching the checkout: what a user's clone
    holds, never a hand-picked part of it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in tracked_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


#: A checkout where the README's demo command has finished (.ci/run sets it to the clean
#: clone it ran the command in): the workflow tests copy its run instead of running their own.
DEMO_RUN = "SKINGROUND_DEMO_RUN"


def copy_finished_run(source: Path, dest: Path, run: str) -> None:
    """``source``'s finished run ``results/<run>/`` and Snakemake's record of it
    (``.snakemake/metadata``: params, code, inputs of every output) into ``dest``, a copy of
    the workflow, modification times kept: as if the run had been made there."""
    results = source / "results" / run
    if not (results / "config.yaml").is_file():
        raise FileNotFoundError(f"{DEMO_RUN}={source}: {results} holds no finished run")
    shutil.copytree(results, dest / "results" / run, symlinks=True)
    shutil.copytree(source / ".snakemake" / "metadata", dest / ".snakemake" / "metadata")


def pids_with_argv(match) -> list[int]:
    """Pids of the processes whose argv (a list of bytes) satisfies ``match``. A zombie's
    command line reads empty, so only live processes can match."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(argv):
            pids.append(int(proc.name))
    return pids


# ---- a tiny Qwen2-VL and tuples for the training tests

TRAIN_QUESTIONS = ["What is the area of the lesion in mm²?", "What is the B (LAB) value inside?",
                   "What is the border jaggedness of the lesion?"]
ANSWERS = ["12.34", "-3.50", "250.10", "0.57", "7.00", "118.25"]
CORPUS = [f"{q} {a}" for q in TRAIN_QUESTIONS for a in ANSWERS]


def build_train_base(root: Path) -> Path:
    """A tiny random Qwen2-VL (56 px images) whose tokenizer knows the training texts."""
    from skinground.demo import tiny

    return tiny.build_tiny_qwen2vl(root / "qwen2vl", corpus=CORPUS, image_size=56)


def write_train_tuples(root: Path, n_images: int, questions_per_image: int = 2) -> dict:
    """An HDF5 image store (tiles of 40 + 17 k px) and a tuples parquet: image k asks the
    first ``questions_per_image`` questions, with answers of 4-6 characters."""
    from skinground.model.batches import TUPLE_COLUMNS

    ids = [f"ISIC_{i:07d}" for i in range(n_images)]
    with h5py.File(root / "train-image.hdf5", "w") as h5:
        for k, isic_id in enumerate(ids):
            h5.create_dataset(isic_id, data=np.bytes_(jpeg_bytes(40 + 17 * k, k)))
    rows = [(isic_id, f"attr{j}", TRAIN_QUESTIONS[j], ANSWERS[(k + j) % len(ANSWERS)])
            for k, isic_id in enumerate(ids) for j in range(questions_per_image)]
    pl.DataFrame(rows, schema=list(TUPLE_COLUMNS), orient="row").write_parquet(
        root / "tuples.parquet")
    return {"images": root / "train-image.hdf5", "tuples": root / "tuples.parquet"}


# ---- running a rule's script as Snakemake's script: directive does

_SCRIPT_RUNNER = """
import pickle, runpy, sys
with open(sys.argv[1], "rb") as f:
    snakemake = pickle.load(f)
runpy.run_path(sys.argv[2], init_globals={"snakemake": snakemake}, run_name="__main__")
"""


def run_script(name: str, tmp: Path, *, input: dict | None = None, output: dict | None = None,
               params: dict | None = None, wildcards: dict | None = None, log: Path | None = None,
               threads: int = 1, timeout: int = 600):
    """Run ``workflow/scripts/<name>.py`` as a rule would: in a new process, with a pickled
    ``snakemake.script.Snakemake`` object (input, output, params, wildcards, log, threads) as
    its ``snakemake`` global, the library on PYTHONPATH. Returns the CompletedProcess; the
    script's own output goes to ``log`` (default ``tmp/<name>.log``), read back as ``.log``."""
    import os
    import pickle
    import subprocess
    import sys

    from snakemake.iocontainers import (
        InputFiles,
        Log,
        OutputFiles,
        Params,
        ResourceList,
        Wildcards,
    )
    from snakemake.script import Snakemake

    log = log or tmp / f"{name}.log"
    obj = Snakemake(
        _named(InputFiles, input), _named(OutputFiles, output), Params(fromdict=params or {}),
        Wildcards(fromdict={k: str(v) for k, v in (wildcards or {}).items()}), threads,
        ResourceList(fromdict={"_cores": threads, "_nodes": 1}), _named(Log, {"log": log}),
        {}, name, None, str(REPO / "workflow" / "scripts"))
    pickled = tmp / f".{name}.snakemake.pickle"
    pickled.write_bytes(pickle.dumps(obj, protocol=4))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "workflow"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT_RUNNER, str(pickled),
         str(REPO / "workflow" / "scripts" / f"{name}.py")],
        capture_output=True, text=True, timeout=timeout, env=env)
    proc.log = log.read_text() if log.exists() else ""
    return proc


def _named(cls, items: dict | None):
    """A Snakemake file list as a rule builds it: flat, each name a slice (a list) or one item."""
    out = cls()
    for name, value in (items or {}).items():
        start = len(out)
        if isinstance(value, (list, tuple)):
            out.extend(str(v) for v in value)
            out._set_name(name, start, len(out))
        else:
            out.append(str(value))
            out._set_name(name, start)
    return out
