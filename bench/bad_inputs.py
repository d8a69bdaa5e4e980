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

Writes ``bench/results/bad_inputs.json``; the README's "Reliability" block is generated from
it (``python bench/readme.py``).

    python bench/bad_inputs.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml
from demo_dag import copy_workflow
from kill_resume import SMALL
from PIL import Image
from timing import machine

from skinground import outputs as out
from skinground.io import write_json
from skinground.outputs import Results

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["config.yaml", "profiles/demo/demo-config.yaml", "small.yaml"]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "2"]
NOT_COMPARED = ("logs/", "benchmarks/")


@dataclass
class Case:
    """One damaged input: ``kind`` (metadata, images, config, query), what to damage, and
    the text the one error line must hold."""

    name: str
    kind: str
    expect: str
    damage: Callable | None = None  # metadata: (csv bytes) -> bytes; images: (work) -> None
    config: dict = field(default_factory=dict)  # config: merged over the demo's
    args: list[str] = field(default_factory=list)  # query: the command's arguments


def _line(data: bytes, n: int, edit: Callable[[bytes], bytes]) -> bytes:
    """``data`` with its line ``n`` (1-based) edited."""
    lines = data.split(b"\n")
    lines[n - 1] = edit(lines[n - 1])
    return b"\n".join(lines)


def _cell(data: bytes, n: int, column: str, value: bytes) -> bytes:
    """``data`` with the ``column`` cell of line ``n`` set (no quoted fields in the demo's)."""
    header = data.split(b"\n", 1)[0].split(b",")
    i = header.index(column.encode())

    def edit(line: bytes) -> bytes:
        cells = line.split(b",")
        cells[i] = value
        return b",".join(cells)

    return _line(data, n, edit)


def _png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _replace_image(work: Path, isic_id: str, data: bytes | None) -> None:
    """The bad run's image store: the demo's, with ``isic_id``'s bytes replaced (None:
    removed)."""
    h5 = work / "bad-data" / "train-image.hdf5"
    with h5py.File(h5, "a") as f:
        del f[isic_id]
        if data is not None:
            f.create_dataset(isic_id, data=np.frombuffer(data, dtype=np.uint8))


def metadata_cases(ids: list[str]) -> list[Case]:
    first, second = ids[0].encode(), ids[1].encode()
    m = "metadata"
    return [
        Case("duplicate-id", m, f"duplicated isic_id {ids[0]}",
             lambda d: _cell(d, 3, "isic_id", first)),
        Case("padded-duplicate-id", m, f"duplicated isic_id {ids[0]}",
             lambda d: _cell(d, 3, "isic_id", b" " + first + b" ")),
        Case("empty-id", m, "empty isic_id on line(s) 4", lambda d: _cell(d, 4, "isic_id", b"")),
        Case("empty-patient", m, "empty patient_id on line(s) 5",
             lambda d: _cell(d, 5, "patient_id", b"  ")),
        Case("non-numeric", m, "non-numeric value in column tbp_lv_A: line 6: '12,5'",
             lambda d: _cell(d, 6, "tbp_lv_A", b'"12,5"')),
        Case("inf", m, "infinite value in column tbp_lv_B: line 7: 'inf'",
             lambda d: _cell(d, 7, "tbp_lv_B", b"inf")),
        Case("minus-inf", m, "infinite value in column tbp_lv_B: line 7: '-inf'",
             lambda d: _cell(d, 7, "tbp_lv_B", b"-inf")),
        Case("infinity", m, "infinite value in column tbp_lv_areaMM2: line 8: 'Infinity'",
             lambda d: _cell(d, 8, "tbp_lv_areaMM2", b"Infinity")),
        Case("overflow", m, "infinite value in column tbp_lv_deltaL: line 9: '1e400'",
             lambda d: _cell(d, 9, "tbp_lv_deltaL", b"1e400")),
        Case("target-2", m, "column target must be 0 or 1, not on line(s) 10",
             lambda d: _cell(d, 10, "target", b"2")),
        Case("missing-column", m, "missing column(s) tbp_lv_Bext",
             lambda d: _line(d, 1, lambda h: h.replace(b"tbp_lv_Bext", b"tbp_lv_Bx"))),
        Case("repeated-column", m, "column(s) tbp_lv_A appear more than once in the header",
             lambda d: _line(d, 1, lambda h: h.replace(b"tbp_lv_Aext", b"tbp_lv_A"))),
        Case("latin-1", m, "line 11 is not UTF-8 text",
             lambda d: _cell(d, 11, "patient_id", "IP_\u00e9".encode("latin-1"))),
        Case("cr-only", m, "ends with a bare CR", lambda d: d.replace(b"\n", b"\r")),
        Case("stray-quote", m, "line 12 opens a double-quoted field that never closes",
             lambda d: _cell(d, 12, "patient_id", b'"IP_1')),
        Case("inner-quote", m, "line 13, column",
             lambda d: _cell(d, 13, "patient_id", b'IP"1')),
        Case("text-after-quote", m, "',' expected after '\"'",
             lambda d: _cell(d, 14, "patient_id", b'"IP"1')),
        Case("cut-mid-line", m, "has 2 field(s), the header",
             lambda d: d.rstrip(b"\n").rsplit(b"\n", 1)[0] + b"\n" + second + b",IP_1"),
        Case("cut-mid-value", m, "re-download it", lambda d: d.rstrip(b"\n")[:-1]),
        Case("empty-file", m, "empty file", lambda d: b""),
    ]


def image_cases(ids: list[str]) -> list[Case]:
    i = "images"
    return [
        Case("truncated-jpeg", i, f"image {ids[2]}: not a readable image",
             lambda w: _replace_image(w, ids[2], b"\xff\xd8\xff\xe0" + b"\0" * 40)),
        Case("png-bomb", i, f"image {ids[3]}: 20000 x 20000 pixels, more than the",
             lambda w: _replace_image(w, ids[3], _png(20_000))),
        Case("not-an-image", i, f"image {ids[4]}: not a readable image",
             lambda w: _replace_image(w, ids[4], b"hello, world\n")),
        Case("image-missing", i, ids[5], lambda w: _replace_image(w, ids[5], None)),
        Case("store-not-hdf5", i, "not a readable HDF5 file",
             lambda w: (w / "bad-data" / "train-image.hdf5").write_bytes(b"not hdf5")),
    ]


def config_cases() -> list[Case]:
    c = "config"
    return [
        Case("run-dotdot", c, "'..' does not match", config={"run": ".."}),
        Case("run-path", c, "'a/b' does not match", config={"run": "a/b"}),
        Case("generator-over-user-data", c, "data.metadata (synthetic.enabled)",
             config={"data": {"metadata": "/data/slice3d/train-metadata.csv"}}),
        Case("generator-over-weights", c, "model.base (model.build_tiny)",
             config={"model": {"base": "/models/Qwen2-VL-7B-Instruct"}}),
        Case("float-shards", c, "embed.shards: must be a whole number",
             config={"embed": {"shards": 2.0}}),
        Case("float-lora-rank", c, "train.lora.r: must be a whole number",
             config={"train": {"lora": {"r": 8.0}}}),
        Case("zero-is-missing-typo", c, "data.zero_is_missing: tbp_lv_areaMM is not one",
             config={"data": {"zero_is_missing": ["tbp_lv_areaMM"]}}),
        Case("pixels-inverted", c, "model.min_pixels (9000) is above model.max_pixels",
             config={"model": {"image_size": None, "min_pixels": 9000, "max_pixels": 3136}}),
        Case("unknown-key", c, "sede", config={"split": {"sede": 3}}),
        Case("k-over-b", c, "retrieve.k must not exceed retrieve.b",
             config={"retrieve": {"k": 300}}),
        Case("fig3-attribute", c, "figures.fig3_attribute: 'tbp_lv_nope'",
             config={"figures": {"fig3_attribute": "tbp_lv_nope"}}),
        Case("group-attribute", c, "retrieve.groups.size: tbp_lv_nope",
             config={"retrieve": {"groups": {"size": {"attributes": [
                 "tbp_lv_areaMM2", "tbp_lv_nope"]}}}}),
        Case("w-text", c, "'five'", config={"tuples": {"W": "five"}}),
    ]


def query_cases() -> list[Case]:
    q = "query"
    return [
        Case("k-zero", q, "-k 0: must be at least 1", args=["IMAGE", "-k", "0"]),
        Case("b-zero", q, "--b 0: must be at least 1", args=["IMAGE", "--b", "0"]),
        Case("run-as-path", q, "--run '../demo': a run's name",
             args=["IMAGE", "--run", "../demo"]),
        Case("run-unfinished", q, "results/nope/config.yaml is missing",
             args=["IMAGE", "--run", "nope"]),
        Case("unknown-attribute", q, "unknown attribute 'tbp_lv_nope'",
             args=["IMAGE", "--attribute", "tbp_lv_nope"]),
        Case("unknown-group", q, "unknown group 'shape'", args=["IMAGE", "--group", "shape"]),
        Case("text-as-image", q, "notes.jpg: not a readable image", args=["TEXT"]),
        Case("bomb-as-image", q, "bomb.png: 20000 x 20000 pixels", args=["BOMB"]),
        Case("missing-image", q, "nowhere.jpg: no such file", args=["MISSING"]),
        Case("out-existing", q, "exists; the grid overwrites nothing",
             args=["IMAGE", "--out", "OUT"]),
        Case("out-is-the-image", q, "is a query image", args=["IMAGE", "--out", "IMAGE"]),
        Case("out-not-png", q, "the grid is written as .png or .pdf",
             args=["IMAGE", "--out", "grid.jpg"]),
        Case("k-over-database", q, "-k 5000: the run's database holds",
             args=["IMAGE", "-k", "5000", "--b", "6000"]),
    ]


def digests(results: Path) -> dict[str, str]:
    found = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results).as_posix()
        if path.is_file() and not any(f"/{part}" in f"/{rel}" for part in NOT_COMPARED):
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def error_line(text: str, expect: str) -> tuple[str | None, bool]:
    """The line that holds ``expect``, and whether the text has a traceback."""
    lines = [ln for ln in text.splitlines() if expect in ln]
    return (lines[-1].strip() if lines else None), "Traceback" in text


def run_case(case: Case, work: Path, demo: Results, files: dict[str, Path]) -> dict:
    bad = Results.of_run("bad", work)
    shutil.rmtree(bad.root, ignore_errors=True)
    before = digests(work / "results")
    guarded = None
    if case.kind in ("metadata", "images"):
        data = work / "bad-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        shutil.copy(demo / "synthetic/train-image.hdf5", data / "train-image.hdf5")
        metadata = (demo / "synthetic/train-metadata.csv").read_bytes()
        if case.kind == "metadata":
            metadata = case.damage(metadata)
        else:
            case.damage(work)
        (data / "train-metadata.csv").write_bytes(metadata)
        overrides = {"run": "bad", "synthetic": {"enabled": False},
                     "model": {"build_tiny": False, "base": str(demo / "models/qwen2vl-tiny"),
                               "monet": str(demo / "models/monet-tiny")},
                     "data": {"metadata": str(data / "train-metadata.csv"),
                              "images": str(data / "train-image.hdf5"),
                              "max_unmatched_images": 0.5}}
        (work / "case.yaml").write_text(yaml.safe_dump(overrides))
        cmd = [*SNAKEMAKE, "--configfile", *CONFIGS, "case.yaml", "--",
               str(bad / out.MANIFEST)]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        log = bad / out.fill(out.LOG, job="manifest")
        text = log.read_text() if log.is_file() else proc.stdout + proc.stderr
    elif case.kind == "config":
        (work / "case.yaml").write_text(yaml.safe_dump(case.config))
        proc = subprocess.run([*SNAKEMAKE, "-n", "--configfile", *CONFIGS, "case.yaml"],
                              cwd=work, capture_output=True, text=True)
        text = proc.stdout + proc.stderr
    else:
        args = [str(files.get(a, a)) for a in case.args]
        if "OUT" in case.args:
            guarded = files["OUT"]
        elif "--out" in case.args and "IMAGE" in case.args[case.args.index("--out") + 1:]:
            guarded = files["IMAGE"]
        kept = guarded.read_bytes() if guarded else None
        run = [] if "--run" in args else ["--run", "demo"]
        proc = subprocess.run([sys.executable, "-m", "skinground.cli", "query", *args, *run],
                              cwd=work, capture_output=True, text=True)
        text = proc.stderr
    line, traceback = error_line(text, case.expect)
    after = digests(work / "results")  # the bad run's folder too: nothing but its logs
    shutil.rmtree(bad.root, ignore_errors=True)
    changed = sorted(set(before.items()) ^ set(after.items()))
    one_line = (case.kind != "query"
                or len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1)
    return {"name": case.name, "kind": case.kind, "exit": proc.returncode,
            "message": line, "traceback": traceback, "one_line": one_line,
            "files_changed": len({rel for rel, _ in changed}),
            "out_untouched": guarded is None or guarded.read_bytes() == kept,
            "ok": bool(proc.returncode != 0 and line and not traceback and one_line
                       and not changed and (guarded is None or guarded.read_bytes() == kept))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only these cases")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bad_inputs.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "workflow"
        work.mkdir()
        copy_workflow(work)
        (work / "small.yaml").write_text(yaml.safe_dump(SMALL))
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
                 "OUT": Path(tmp) / "grid.png"}
        with h5py.File(demo / "synthetic/train-image.hdf5") as h5:
            files["IMAGE"].write_bytes(h5[test_id][()].tobytes())
        files["TEXT"].write_text("not a picture")
        files["BOMB"].write_bytes(_png(20_000))
        files["OUT"].write_bytes(b"a user's earlier grid")
        cases = [*metadata_cases(ids), *image_cases(ids), *config_cases(), *query_cases()]
        if a.only:
            cases = [c for c in cases if c.name in a.only]
        results = []
        for case in cases:
            r = run_case(case, work, demo, files)
            results.append(r)
            print(f"{'ok ' if r['ok'] else 'BAD'} {case.kind:9s} {case.name}: {r['message']}",
                  flush=True)
    result = {"benchmark": "damaged inputs through the real commands", "cases": results,
              "refused_cleanly": sum(r["ok"] for r in results), "total": len(results),
              "files_changed": sum(r["files_changed"] for r in results),
              "setup_seconds": round(setup, 1), "small_demo": SMALL, "machine": machine()}
    if not a.only:
        write_json(a.out, result)
    print(f"{result['refused_cleanly']} of {result['total']} refused cleanly, "
          f"{result['files_changed']} files changed -> {a.out}")
    return result


if __name__ == "__main__":
    main()
