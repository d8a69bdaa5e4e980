"""The offline GPU bundle (bench/gpu_bundle.py) and the check it feeds (bench/gpu_check.sh
--offline), rehearsed on CPU: a Python 3.12 venv with exactly the reference image's versions
(bench/reference_image.txt: torch 2.11.0, transformers 5.17.0, ...), the bundle installed
into it with --no-index alone, and gpu_check.py --tiny run there without network.

The reference venv (~5 GB: PyPI's torch is a CUDA build, which runs on CPU) is kept between
runs at SKINGROUND_REFERENCE_VENV (default ~/.cache/skinground/reference-image) and reused
while it was made from the current reference_image.txt; SKINGROUND_GPU_BUNDLE names a
bundle folder to reuse while it verifies against this tree (built there when it does not).
SKINGROUND_PYTHON312 names the Python 3.12 to make the venv with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import gpu_bundle as B
import pytest

from conftest import REPO, run_group

CHECK = REPO / "bench" / "gpu_check.sh"
#: Project requirements that the image has through its own packages (transformers').
IMAGE_TRANSITIVE = {"pyyaml", "packaging"}


def test_the_reference_image_is_pinned_exactly_in_one_file():
    text = B.REFERENCE.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    pins = B.pins(B.REFERENCE)
    assert len(pins) == len(lines), "every requirement is name==version"
    assert pins["torch"] == "2.11.0" and pins["transformers"] == "5.17.0"
    assert pins["accelerate"] == "1.15.0" and pins["tokenizers"] == "0.23.2"
    assert pins["safetensors"] == "0.8.0" and pins["numpy"].startswith("2.5.")
    assert B.reference_python() == "3.12"
    assert not {"deepspeed", "polars", "faiss-cpu", "snakemake", "jsonschema"} & set(pins)


def test_every_requirement_is_in_the_image_carried_or_left_out_with_why():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    needs = {B.normalize(re.match(r"[A-Za-z0-9._-]+", r).group())
             for r in project["project"]["dependencies"]}
    carried = B.carried_pins()
    assert carried == {n: B.pins(B.CONSTRAINTS)[n] for n in B.CARRIED}  # CI's versions
    image = set(B.pins(B.REFERENCE)) | IMAGE_TRANSITIVE
    assert not set(carried) & image and not set(carried) & set(B.LEFT_OUT)
    unaccounted = needs - image - set(carried) - set(B.LEFT_OUT)
    assert not unaccounted, f"neither in the image, the bundle nor LEFT_OUT: {unaccounted}"
    assert all(B.LEFT_OUT.values()) and all(B.CARRIED.values())


def fake_bundle(folder: Path) -> dict:
    """A bundle of the project's wheel alone (the tree's package zipped), for this Python."""
    folder.mkdir()
    with zipfile.ZipFile(folder / "skinground-0.1.0-py3-none-any.whl", "w") as z:
        for name in B.tree_files():
            z.write(B.SOURCES / name.removeprefix("skinground/"), name)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    manifest = B.describe(folder, {}, python=here, seconds=0.0)
    B.write_json(folder / B.MANIFEST, manifest)
    return manifest


def test_verify_names_a_partial_copy_another_python_and_a_stale_tree(tmp_path):
    folder = tmp_path / "bundle"
    manifest = fake_bundle(folder)
    assert B.verify(folder) == [folder / "skinground-0.1.0-py3-none-any.whl"]
    assert manifest["total_mib"] < 1 and set(manifest["left_out"]) == set(B.LEFT_OUT)

    stale = json.loads((folder / B.MANIFEST).read_text())
    stale["skinground_files"]["skinground/core/io.py"] = "0" * 64
    stale["skinground_files"].pop("skinground/model/loading.py")
    B.write_json(folder / B.MANIFEST, stale)
    with pytest.raises(SystemExit, match=r"2 file\(s\) differ: skinground/core/io.py, "
                                         r"skinground/model/loading.py\): rebuild"):
        B.verify(folder)

    B.write_json(folder / B.MANIFEST, manifest | {"python": "3.9"})
    with pytest.raises(SystemExit, match="is for Python 3.9"):
        B.verify(folder)

    B.write_json(folder / B.MANIFEST, manifest)
    wheel = folder / "skinground-0.1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:-10])
    with pytest.raises(SystemExit, match="differs: a partial copy"):
        B.verify(folder)
    wheel.unlink()
    with pytest.raises(SystemExit, match="missing"):
        B.verify(folder)
    with pytest.raises(SystemExit, match="not a bundle"):
        B.verify(tmp_path)


def check_sh(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run(["bash", str(CHECK), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_the_offline_check_refuses_what_is_not_a_bundle(tmp_path):
    proc = check_sh("--offline", str(tmp_path / "absent"), "--tiny")
    assert proc.returncode == 2 and "usage: bash bench/gpu_check.sh --offline" in proc.stderr
    env = dict(os.environ, GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_SITE=str(tmp_path / "s"))
    proc = check_sh("--offline", str(tmp_path), "--tiny", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no bundle.json: not a bundle" in proc.stderr
    assert not (tmp_path / "s").exists()  # refused before installing anything


def test_the_check_refuses_what_is_not_a_gpu_count(tmp_path):
    """--gpus passes through to gpu_check.py; a count that is not a number of GPUs is refused
    before anything is installed (the default is 1 on any node: documented in the script)."""
    env = dict(os.environ, GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_SITE=str(tmp_path / "s"))
    for bad in (["--gpus", "two"], ["--gpus=0"], ["--gpus"]):
        proc = check_sh("--offline", str(tmp_path), *bad, "--tiny", env=env)
        assert proc.returncode == 2 and "--gpus takes a number of GPUs" in proc.stderr, bad
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- the rehearsal


def python312() -> str | None:
    """An interpreter of the image's Python (major.minor), or None."""
    want = B.reference_python()
    candidates = [os.environ.get("SKINGROUND_PYTHON312"), shutil.which(f"python{want}")]
    candidates += sorted(str(p) for p in Path.home().glob(
        f".pyenv/versions/{want}.*/bin/python{want}"))
    for c in filter(None, candidates):
        proc = subprocess.run([c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip() == want:
            return c
    return None


def reference_venv(timings: dict) -> Path:
    """The reference image as a venv: made with Python 3.12 and ``pip install -r
    reference_image.txt``, reused while its stamp (a copy of that file) is current."""
    venv = Path(os.environ.get("SKINGROUND_REFERENCE_VENV")
                or Path.home() / ".cache" / "skinground" / "reference-image")
    stamp = venv / "reference_image.txt"
    python = venv / "bin" / "python"
    if (stamp.is_file() and stamp.read_text() == B.REFERENCE.read_text()
            and python.is_file()):
        timings["reference_venv_s"] = "reused"
        return venv
    base = python312()
    if base is None:
        pytest.skip(f"no Python {B.reference_python()} here (SKINGROUND_PYTHON312)")
    t0 = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = run_group([str(python), "-m", "pip", "install", "--quiet", "-r", str(B.REFERENCE)],
                     timeout=2400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    shutil.copyfile(B.REFERENCE, stamp)
    timings["reference_venv_s"] = round(time.perf_counter() - t0, 1)
    return venv


def bundle(tmp_path: Path, python: Path, timings: dict) -> Path:
    """``python bench/gpu_bundle.py DIR``: a fresh one, or SKINGROUND_GPU_BUNDLE's while it
    verifies against this tree."""
    reuse = os.environ.get("SKINGROUND_GPU_BUNDLE")
    folder = Path(reuse) if reuse else tmp_path / "bundle"
    if reuse and subprocess.run([str(python), str(REPO / "bench" / "gpu_bundle.py"),
                                 "--verify", str(folder)], capture_output=True).returncode == 0:
        timings["bundle_s"] = "reused"
        return folder
    t0 = time.perf_counter()
    proc = run_group([sys.executable, str(REPO / "bench" / "gpu_bundle.py"), str(folder)],
                     timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    timings["bundle_s"] = round(time.perf_counter() - t0, 1)
    return folder


def offline(cmd: list[str]) -> tuple[list[str], bool]:
    """``cmd`` in a network namespace of its own (loopback only: torchrun's rendezvous) where
    this user may make one; else as it is."""
    if shutil.which("unshare") and shutil.which("ip") and subprocess.run(
            ["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd], True
    return cmd, False


@pytest.mark.slow
def test_the_bundle_runs_the_check_on_the_reference_image(tmp_path):
    """The whole offline path on CPU: the reference versions, the bundle alone (--no-index,
    no network), gpu_check.sh --offline --tiny: every phase passes."""
    timings: dict = {}
    venv = reference_venv(timings)
    python = venv / "bin" / "python"
    folder = bundle(tmp_path, python, timings)
    manifest = json.loads((folder / B.MANIFEST).read_text())
    assert manifest["total_mib"] < B.MAX_MIB

    site, out = tmp_path / "site", tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(GPU_CHECK_PYTHON=str(python), GPU_CHECK_SITE=str(site))
    cmd, isolated = offline(["bash", str(CHECK), "--offline", str(folder), "--tiny",
                             "--out", str(out)])
    t0 = time.perf_counter()
    proc = run_group(cmd, cwd=REPO, env=env, timeout=600)
    timings["check_s"] = round(time.perf_counter() - t0, 1)
    timings["network"] = "none (unshare -n)" if isolated else "not isolated"
    print(f"rehearsal timings: {timings}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]

    result = json.loads(out.read_text())
    assert result["ok"] and result["tiny"] and result["failed"] == {}
    v = result["versions"]
    reference = B.pins(B.REFERENCE)
    assert v["python"].rsplit(".", 1)[0] == B.reference_python()
    for name in ("transformers", "accelerate", "tokenizers", "safetensors", "numpy", "peft"):
        assert v[name] == reference[name], name
    assert v["torch"].split("+")[0] == reference["torch"]
    carried = B.pins(B.CONSTRAINTS)
    assert v["deepspeed"] == carried["deepspeed"] and v["polars"] == carried["polars"]
    assert Path(v["skinground_from"]).is_relative_to(site)  # the bundle's wheel, not the tree
    assert result["bundle"]["wheels"] == {w["name"]: w["version"] for w in manifest["wheels"]}
    phases = result["phases"]
    assert set(phases) == {"train", "train_per_image", "embed", "predict"}
    assert all(p["ok"] and p["mfu"] and p["memory_model_gib"] for p in phases.values())
    assert result["gpus"] == 1 and result["train"]["processes"] == 1  # --gpus' default
    assert result["train"]["batch"]["ok"] and len(result["train"]["ranks"]) == 1
    assert result["train_layouts"]["per_image_over_per_tuple"] > 0
    assert phases["predict"]["exact"]["identical_rows"] == phases["predict"]["exact"]["rows"]
    assert result["embed"]["agreement"]["max_abs_diff"]["h_ima"] < 1e-4  # float32

    # Nothing the bundle's packages need is missing, but what skinground leaves out on purpose.
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True,
                           env=env | {"PYTHONPATH": str(site)})
    problems = re.findall(r"^(\S+) \S+ (?:requires|has requirement) ([A-Za-z0-9._-]+)",
                          check.stdout, re.MULTILINE)
    assert problems, check.stdout  # skinground's left-out packages at least
    assert {(B.normalize(a), B.normalize(b)) for a, b in problems} <= {
        ("skinground", n) for n in B.LEFT_OUT}, check.stdout
