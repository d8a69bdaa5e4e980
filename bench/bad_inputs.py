"""Benchmark: damaged inputs through the user's real commands, each refused cleanly.

A small demo run is made once (``bench/kill_resume.py``'s ``--small`` demo: 300 images, 300
steps). Then every case below goes through what a user runs: the ``manifest`` rule
(``snakemake``, a run of its own, ``bad``, reading the damaged metadata or images), a dry run
of the whole workflow with a damaged config, or ``skinground query`` on the finished run.
For each case three things are checked:

- the command exits non-zero;
- one line names the culprit (the rule's ``error:`` line in its log, with no traceback; for a
  config, Snakemake's error; for the query, its single stderr line), as ``expect`` says;
- ``results/`` holds the same bytes before and after (logs and benchmarks aside: nothing
  half-written, nothing overwritten), and a query's ``--out`` file is untouched.

The cases are ``bench/bad_inputs.yaml``. Writes ``bench/results/bad_inputs.json``;
docs/reliability.md's block is generated from it (``python bench/readme.py``).

    python bench/bad_inputs.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import kill_resume
import numpy as np
import yaml
from PIL import Image

from skinground.core import outputs as out
from skinground.core.io import write_json
from skinground.core.outputs import Results

from demo_dag import copy_workflow
from timing import machine

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["config.yaml", "profiles/demo/demo-config.yaml", "small.yaml"]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "2"]
NOT_COMPARED = ("logs/", "benchmarks/")


#: The cases: bench/bad_inputs.yaml.
CASES = Path(__file__).with_name("bad_inputs.yaml")


def fill(value, ids: list[str]):
    """A case's strings with ``{id0}``, ``{id1}``, ... replaced by the metadata's ids."""
    if isinstance(value, str):
        return value.format(**{f"id{i}": x for i, x in enumerate(ids)})
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def load_cases(ids: list[str]) -> list[dict]:
    table = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    return [{**fill(case, ids), "kind": kind} for kind, cases in table.items()
            for case in cases]


def damaged_metadata(data: bytes, case: dict) -> bytes:
    """The demo's metadata CSV (no quoted fields in it) with ``case``'s damage."""
    if case.get("empty"):
        return b""
    if "replace" in case:
        old, new = case["replace"]
        return data.replace(old.encode(), new.encode())
    lines = data.split(b"\n")
    if "header" in case:
        old, new = case["header"]
        lines[0] = lines[0].replace(old.encode(), new.encode(), 1)
    if "column" in case:  # every record's cell of one column
        column, value = case["column"]
        at = lines[0].split(b",").index(column.encode())
        for n in range(1, len(lines)):
            if lines[n]:
                cells = lines[n].split(b",")
                cells[at] = value.encode()
                lines[n] = b",".join(cells)
    if "cell" in case:
        n, column, value = case["cell"]
        cells = lines[n - 1].split(b",")
        cells[lines[0].split(b",").index(column.encode())] = value.encode(
            "latin-1" if case.get("latin-1") else "utf-8")
        lines[n - 1] = b",".join(cells)
    data = b"\n".join(lines)
    if case.get("cut") == "mid-line":  # the last record loses all but two fields
        body = data.rstrip(b"\n").rsplit(b"\n", 1)
        return body[0] + b"\n" + b",".join(body[1].split(b",")[:2])
    if case.get("cut") == "mid-value":  # the last value loses a character, and the newline
        return data.rstrip(b"\n")[:-1]
    return data


def _png(size: int, height: int | None = None) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, height or size)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


#: ``image: [id, what]``: the bytes stored for the id instead of its JPEG (None: removed).
IMAGE_BYTES = {"truncated-jpeg": lambda: b"\xff\xd8\xff\xe0" + b"\0" * 40,
               "png-bomb": lambda: _png(20_000), "text": lambda: b"hello, world\n",
               "sliver": lambda: _png(250, 1), "tall-sliver": lambda: _png(1, 250),
               "missing": lambda: None}


def damage_store(h5: Path, case: dict) -> None:
    if case.get("store") == "not-hdf5":
        h5.write_bytes(b"not an HDF5 file")
        return
    isic_id, what = case["image"]
    data = IMAGE_BYTES[what]()
    with h5py.File(h5, "a") as f:
        del f[isic_id]
        if data is not None:
            f.create_dataset(isic_id, data=np.frombuffer(data, dtype=np.uint8))


def digests(results: Path) -> dict[str, str]:
    """sha256 of every file of every run under ``results/`` (a half-written temporary
    included) but logs and benchmarks."""
    return {f"{run.name}/{rel}": digest for run in sorted(results.iterdir()) if run.is_dir()
            for rel, digest in kill_resume.digests(run, NOT_COMPARED, hidden=True).items()}


def error_line(text: str, expect: str) -> tuple[str | None, bool]:
    """The line that holds ``expect``, and whether the text has a traceback."""
    lines = [ln for ln in text.splitlines() if expect in ln]
    return (lines[-1].strip() if lines else None), "Traceback" in text


def run_case(case: dict, work: Path, demo: Results, files: dict[str, Path]) -> dict:
    bad = Results.of_run("bad", work)
    shutil.rmtree(bad.root, ignore_errors=True)
    before = digests(work / "results")
    guarded = None
    if case["kind"] in ("metadata", "images"):
        data = work / "bad-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        shutil.copy(demo / "synthetic/train-image.hdf5", data / "train-image.hdf5")
        metadata = (demo / "synthetic/train-metadata.csv").read_bytes()
        if case["kind"] == "metadata":
            metadata = damaged_metadata(metadata, case)
        else:
            damage_store(data / "train-image.hdf5", case)
        (data / "train-metadata.csv").write_bytes(metadata)
        overrides = {"run": "bad", "synthetic": {"enabled": False},
                     "model": {"build_tiny": False, "base": str(demo / "models/qwen2vl-tiny"),
                               "encoders": {
                                   name: {"path": str(demo / f"models/{name}-tiny")}
                                   for name in ("monet", "medsiglip")}},
                     "data": {"metadata": str(data / "train-metadata.csv"),
                              "images": str(data / "train-image.hdf5")}}
        (work / "case.yaml").write_text(yaml.safe_dump(overrides))
        cmd = [*SNAKEMAKE, "--configfile", *CONFIGS, "case.yaml", "--",
               str(Results.of_run("bad") / out.MANIFEST)]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        log = bad / out.fill(out.LOG, job="manifest")
        text = log.read_text() if log.is_file() else proc.stdout + proc.stderr
    elif case["kind"] == "config":
        for name, text in case.get("files", {}).items():
            (work / name).write_text(text)
        (work / "case.yaml").write_text(yaml.safe_dump(case["config"]))
        proc = subprocess.run([*SNAKEMAKE, "-n", "--configfile", *CONFIGS, "case.yaml"],
                              cwd=work, capture_output=True, text=True)
        text = proc.stdout + proc.stderr
    else:
        args = [str(files.get(a, a)) for a in case["args"]]
        if "--out" in case["args"]:
            guarded = files.get(case["args"][case["args"].index("--out") + 1])
        kept = guarded.read_bytes() if guarded else None
        run = [] if "--run" in args else ["--run", "demo"]
        proc = subprocess.run([sys.executable, "-m", "skinground.cli", "query", *args, *run],
                              cwd=work, capture_output=True, text=True)
        text = proc.stderr
    line, traceback = error_line(text, case["expect"])
    after = digests(work / "results")  # the bad run's folder too: nothing but its logs
    shutil.rmtree(bad.root, ignore_errors=True)
    changed = {rel for rel, _ in set(before.items()) ^ set(after.items())}
    one_line = (case["kind"] != "query"
                or len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1)
    untouched = guarded is None or guarded.read_bytes() == kept
    return {"name": case["name"], "kind": case["kind"], "exit": proc.returncode,
            "message": line, "traceback": traceback, "one_line": one_line,
            "files_changed": len(changed), "out_untouched": untouched,
            "ok": bool(proc.returncode != 0 and line and not traceback and one_line
                       and not changed and untouched)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only these cases")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bad_inputs.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "workflow"
        work.mkdir()
        copy_workflow(work)
        (work / "small.yaml").write_text(yaml.safe_dump(kill_resume.SMALL))
        t0 = time.perf_counter()
        subprocess.run([*SNAKEMAKE, "--configfile", *CONFIGS], cwd=work, check=True,
                       capture_output=True, text=True)
        setup = time.perf_counter() - t0
        demo = Results.of_run("demo", work)
        with open(demo / "synthetic/train-metadata.csv", newline="") as f:
            ids = [row["isic_id"] for row in csv.DictReader(f)]  # in the file's order
        test_id = sorted((demo / out.fill(out.SPLIT_IDS, split="test")).read_text().split())[0]
        files = {"IMAGE": Path(tmp) / f"{test_id}.jpg", "TEXT": Path(tmp) / "notes.jpg",
                 "BOMB": Path(tmp) / "bomb.png", "MISSING": Path(tmp) / "nowhere.jpg",
                 "OUT": Path(tmp) / "grid.png", "FIFO": Path(tmp) / "pipe.jpg",
                 "FOLDER": Path(tmp)}
        os.mkfifo(files["FIFO"])
        with h5py.File(demo / "synthetic/train-image.hdf5") as h5:
            files["IMAGE"].write_bytes(h5[test_id][()].tobytes())
        files["PNG"] = Path(tmp) / f"{test_id}.png"
        Image.open(files["IMAGE"]).save(files["PNG"])
        files["TEXT"].write_text("not a picture")
        files["BOMB"].write_bytes(_png(20_000))
        files["OUT"].write_bytes(b"a user's earlier grid")
        cases = load_cases(ids)
        if a.only:
            cases = [c for c in cases if c["name"] in a.only]
        results = []
        for case in cases:
            r = run_case(case, work, demo, files)
            results.append(r)
            print(f"{'ok ' if r['ok'] else 'BAD'} {case['kind']:9s} {case['name']}: "
                  f"{r['message']}", flush=True)
    result = {"benchmark": "damaged inputs through the real commands", "cases": results,
              "refused_cleanly": sum(r["ok"] for r in results), "total": len(results),
              "files_changed": sum(r["files_changed"] for r in results),
              "setup_seconds": round(setup, 1), "small_demo": kill_resume.SMALL,
              "machine": machine()}
    if not a.only:
        write_json(a.out, result)
    print(f"{result['refused_cleanly']} of {result['total']} refused cleanly, "
          f"{result['files_changed']} files changed -> {a.out}")
    return result


if __name__ == "__main__":
    main()
