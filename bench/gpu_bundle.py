"""The offline GPU bundle: one folder of wheels that, beside the reference GPU image
(``bench/reference_image.txt``: Python 3.12, torch 2.11, transformers 5.17, ...), is all that
``bash bench/gpu_check.sh --offline DIR`` installs on a GPU node without network.

    python bench/gpu_bundle.py [DIR]          # on a machine with PyPI; DIR: bench/gpu_bundle/
    python bench/gpu_bundle.py --verify DIR   # (gpu_check.sh, stdlib only) the wheels to install

The bundle holds the project's own wheel (``pip wheel --no-deps .``) and the packages the
image lacks that the check imports (:data:`CARRIED`), at the versions ``constraints.txt``
pins (the ones CI passed with), built for CPython 3.12 on manylinux x86_64 whatever Python
runs this. DeepSpeed ships only an sdist: its wheel is built here with ``DS_BUILD_OPS=0``
(pure Python, no compiled ops, no CUDA needed; the check's ZeRO-2 steps the Trainer's torch
AdamW, which needs no DeepSpeed op). What the project requires but the check does not import
is left out (:data:`LEFT_OUT`, with why). ``bundle.json`` records each wheel's name, version,
MiB and sha256, the total, and a digest of every file of the project's wheel.

``--verify`` checks the copy is whole (every wheel, its sha256 as built), that this Python
is the bundle's, and that the project's wheel holds this tree's ``workflow/skinground`` (a
stale bundle would measure other code: rebuild it), then prints the wheels to install, one
per line.
The folder is built beside DIR and renamed into place; a failed build leaves DIR as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / "bench" / "gpu_bundle"
CONSTRAINTS = REPO / "constraints.txt"
REFERENCE = REPO / "bench" / "reference_image.txt"
SOURCES = REPO / "workflow" / "skinground"
MANIFEST = "bundle.json"
MIB = 2**20
#: The whole working tree that travels with the bundle is capped at 64 MiB.
MAX_MIB = 60.0
#: The node's platform: x86_64 Linux (the image's glibc is newer than 2.28).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

#: What the bundle carries beyond the project: name -> why the check needs it.
CARRIED = {
    "deepspeed": "ZeRO-2 training (train.deepspeed); PyPI has only its sdist: built here, "
                 "DS_BUILD_OPS=0",
    "einops": "deepspeed's requirement",
    "hjson": "deepspeed's requirement",
    "msgpack": "deepspeed's requirement",
    "ninja": "deepspeed's requirement (JIT builds only; the check builds none)",
    "py-cpuinfo": "deepspeed's requirement",
    "pydantic": "deepspeed's requirement (the image may have it through typer: this one, "
                "with its own pydantic-core, goes first on the path)",
    "pydantic-core": "pydantic's requirement",
    "annotated-types": "pydantic's requirement",
    "typing-inspection": "pydantic's requirement",
    "polars": "imported on the check's path (skinground.model.batches -> skinground.core.tables; "
              "bench/reference.py)",
    "polars-runtime-32": "polars' compiled engine (the bulk of the bundle)",
}
#: What the project requires that the bundle leaves out: name -> why.
LEFT_OUT = {
    "faiss-cpu": "not imported by the check; 22.7 MiB would take the bundle past 60 MiB "
                 "beside polars, and the GPU build (faiss-gpu-cu12, 46 MiB) needs CUDA 12's "
                 "runtime and cuBLAS wheels (hundreds of MiB) where the image's torch has "
                 "CUDA 13: the FAISS GPU vs CPU top-k phase is not run",
    "snakemake": "the workflow's runner, not the check's",
    "jsonschema": "config validation (skinground.core.config); the check reads config.yaml "
                  "with yaml alone",
}


def normalize(name: str) -> str:
    """PEP 503's form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements/constraints file: normalized name -> version."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if m:
            out[normalize(m.group(1))] = m.group(2)
    return out


def reference_python(path: Path = REFERENCE) -> str:
    """The image's Python, ``major.minor`` (its ``# Python 3.12`` line)."""
    m = re.search(r"^# .*\bPython (3\.\d+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    if not m:
        raise SystemExit(f"{path}: no '# ... Python 3.N' line")
    return m.group(1)


def carried_pins() -> dict[str, str]:
    """:data:`CARRIED` at constraints.txt's versions; refuses what the image already has."""
    known, image = pins(CONSTRAINTS), pins(REFERENCE)
    missing = [n for n in CARRIED if n not in known]
    if missing:
        raise SystemExit(f"{CONSTRAINTS}: no pin for {', '.join(missing)}")
    both = [n for n in CARRIED if n in image]
    if both:
        raise SystemExit(f"{', '.join(both)}: in the reference image already ({REFERENCE})")
    return {n: known[n] for n in CARRIED}


def wheel_name(path: Path) -> tuple[str, str]:
    """A wheel file's (normalized name, version)."""
    name, version = path.name.split("-")[:2]
    return normalize(name), version


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_files(root: Path = SOURCES) -> dict[str, str]:
    """sha256 of every file of the package in the tree (``skinground/...`` -> digest)."""
    return {f"skinground/{p.relative_to(root).as_posix()}": hashlib.sha256(p.read_bytes())
            .hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def wheel_files(wheel: Path) -> dict[str, str]:
    """sha256 of every ``skinground/`` member of the project's wheel."""
    with zipfile.ZipFile(wheel) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in sorted(z.namelist())
                if n.startswith("skinground/") and not n.endswith("/")}


def pip(*args: str, cwd: Path, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def project_wheel(dest: Path) -> None:
    """``pip wheel --no-deps .`` on a copy of the project's package: setuptools builds in the
    source folder, and a build/ left there would carry deleted modules into the next wheel."""
    with tempfile.TemporaryDirectory(prefix="gpu_bundle_src.") as tmp:
        src = Path(tmp)
        shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        shutil.copytree(SOURCES, src / "workflow" / "skinground",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        pip("wheel", "--no-deps", "--wheel-dir", str(dest), str(src), cwd=src)


def build(out: Path, *, with_pip: bool, max_mib: float) -> dict:
    """Build the bundle in a folder beside ``out``, check it, then put it at ``out``."""
    versions = carried_pins()
    python = reference_python()
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise SystemExit(f"{out}: exists and is not a bundle (no {MANIFEST}); not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        t0 = time.perf_counter()
        project_wheel(tmp)
        # PyPI has deepspeed only as an sdist; DS_BUILD_OPS=0 builds no op (no torch, no CUDA
        # needed): a pure-Python wheel that JIT-compiles an op only if one is ever asked for.
        pip("wheel", "--no-deps", "--no-binary", "deepspeed", "--wheel-dir", str(tmp),
            f"deepspeed=={versions['deepspeed']}", cwd=tmp,
            env=dict(os.environ, DS_BUILD_OPS="0"))
        binary = [f"{n}=={v}" for n, v in versions.items() if n != "deepspeed"]
        if with_pip:
            binary.append("pip")
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python,
            "--implementation", "cp", *platforms, "--dest", str(tmp), *binary, cwd=tmp)
        seconds = time.perf_counter() - t0
        manifest = describe(tmp, versions, python=python, seconds=seconds)
        if manifest["total_mib"] > max_mib:
            biggest = sorted(manifest["wheels"], key=lambda w: -w["mib"])[:3]
            raise SystemExit(f"the bundle is {manifest['total_mib']:.1f} MiB, over "
                             f"{max_mib:.0f} MiB; the largest: " + ", ".join(
                                 f"{w['file']} ({w['mib']:.1f} MiB)" for w in biggest))
        write_json(tmp / MANIFEST, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def describe(folder: Path, versions: dict[str, str], *, python: str, seconds: float) -> dict:
    """The manifest of a folder of wheels: every wheel once, the carried ones at their pins."""
    wheels, seen, project = [], {}, None
    for path in sorted(folder.glob("*.whl")):
        name, version = wheel_name(path)
        if name in seen:
            raise SystemExit(f"two wheels of {name}: {seen[name]}, {path.name}")
        seen[name] = path.name
        if name in versions and versions[name] != version:
            raise SystemExit(f"{path.name}: {name} {version}, not the pinned {versions[name]}")
        why = ("the project (pip wheel --no-deps .)" if name == "skinground" else
               "pip, for a node without it" if name == "pip" else CARRIED.get(name, "?"))
        if name == "skinground":
            project = path
        wheels.append({"file": path.name, "name": name, "version": version,
                       "mib": round(path.stat().st_size / MIB, 3), "sha256": sha256(path),
                       "why": why})
    absent = sorted(set(versions) - set(seen)) + ([] if project else ["skinground"])
    if absent:
        raise SystemExit(f"no wheel of {', '.join(absent)} in {folder}")
    return {
        "python": python, "platforms": list(PLATFORMS),
        "wheels": wheels, "total_mib": round(sum(w["mib"] for w in wheels), 3),
        "limit_mib": MAX_MIB, "skinground_files": wheel_files(project),
        "left_out": LEFT_OUT, "reference_image": pins(REFERENCE),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(seconds, 1),
        "built_with": f"Python {sys.version.split()[0]}",
    }


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def verify(folder: Path) -> list[Path]:
    """The bundle's wheels to install (pip's own aside), after the checks of the module's
    docstring; raises SystemExit naming what is wrong."""
    path = folder / MANIFEST
    if not path.is_file():
        raise SystemExit(f"{folder}: no {MANIFEST}: not a bundle (python bench/gpu_bundle.py)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != manifest["python"]:
        raise SystemExit(f"{folder} is for Python {manifest['python']}; {sys.executable} is "
                         f"{here}")
    bad = []
    for w in manifest["wheels"]:
        p = folder / w["file"]
        if not p.is_file():
            bad.append(f"{w['file']} (missing)")
        elif sha256(p) != w["sha256"]:
            bad.append(f"{w['file']} (differs: a partial copy?)")
    if bad:
        raise SystemExit(f"{folder}: " + ", ".join(bad))
    built, tree = manifest["skinground_files"], tree_files()
    stale = sorted(n for n in built.keys() | tree.keys() if built.get(n) != tree.get(n))
    if stale:
        raise SystemExit(f"{folder}: its skinground wheel is not this tree's workflow/"
                         f"skinground ({len(stale)} file(s) differ: {', '.join(stale[:5])}"
                         f"{' ...' if len(stale) > 5 else ''}): rebuild it (python "
                         "bench/gpu_bundle.py) and copy it again")
    return [folder / w["file"] for w in manifest["wheels"] if w["name"] != "pip"]


def report(manifest: dict, out: Path) -> None:
    rows = sorted(manifest["wheels"], key=lambda w: -w["mib"])
    width = max(len(f"{w['name']}=={w['version']}") for w in rows)
    for w in rows:
        print(f"{w['mib']:7.2f} MiB  {w['name'] + '==' + w['version']:<{width}}  {w['why']}")
    print(f"{manifest['total_mib']:7.2f} MiB  in all: {len(rows)} wheels in {out} (limit "
          f"{manifest['limit_mib']:.0f} MiB; built in {manifest['build_seconds']:.0f} s)")
    for name, why in manifest["left_out"].items():
        print(f"left out: {name}: {why}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR,
                   help=f"the bundle's folder (default {DEFAULT_DIR.relative_to(REPO)}/)")
    p.add_argument("--verify", action="store_true",
                   help="check the bundle against this Python and tree; print its wheels")
    p.add_argument("--with-pip", action="store_true",
                   help="add pip's wheel (1.9 MiB), for a node whose python3 has no pip")
    p.add_argument("--max-mib", type=float, default=MAX_MIB)
    a = p.parse_args(argv)
    folder = a.dir.resolve()
    if a.verify:
        for wheel in verify(folder):
            print(wheel)
        return 0
    manifest = build(folder, with_pip=a.with_pip, max_mib=a.max_mib)
    report(manifest, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
