"""``skinground``: the command a user of a finished run reaches for.

    skinground query IMAGE [IMAGE ...] [--run demo|paper|NAME] [--attribute COL ...]
                     [--group NAME ...] [-k 5] [--b 200] [--out grid.png] [--json]

Run from the workflow's folder. ``query`` embeds each image with the run's tuned model and
retrieves its top-k train images hierarchically on the fly (top b by h_im from the run's
index, re-ranked by h_im,a or h_im,G: no stored per-attribute database), for each asked
attribute (a column or its label) and group; it prints, per question, the model's own answer
for the query (from the same prefix pass) and a table of rank, isic_id, cosine and the
retrieved images' values. ``--out`` writes a Fig. 3-style grid (PNG or PDF), ``--json`` the
same as JSON on stdout. A run that is not finished, a file that is not an image or an unknown
attribute or group stops it with a one-line error (exit 1) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from skinground.core.errors import InputError
from skinground.core.outputs import RUN_NAME


def arguments(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="skinground", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query", help="retrieve the train images nearest a new image")
    q.add_argument("images", nargs="+", type=Path, help="query image files")
    q.add_argument("--run", help="the run to query: its config key run (default: config.yaml's)")
    q.add_argument("--attribute", action="append", default=[],
                   help="attribute column or label (repeatable)")
    q.add_argument("--group", action="append", default=[],
                   help="a group of retrieve.groups (repeatable)")
    q.add_argument("-k", type=int, default=None, help="hits per question (default: retrieve.k)")
    q.add_argument("--b", type=int, default=None,
                   help="first-stage candidates (default: retrieve.b)")
    q.add_argument("--out", type=Path, help="a Fig. 3-style grid of the hits (.png or .pdf)")
    q.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    q.add_argument("--workdir", type=Path, default=Path.cwd(), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def default_run(workdir: Path) -> str:
    config = workdir / "config.yaml"
    if not config.is_file():
        raise InputError(f"no config.yaml in {workdir}: run skinground from the workflow's "
                         "folder, or give --run")
    return yaml.safe_load(config.read_text(encoding="utf-8"))["run"]


def format_value(value, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def table(image: Path, answers: list[dict], run) -> str:
    lines = [f"query {image}"]
    for a in answers:
        dec = {m: run.attributes[m]["decimals"] for m in a["members"]}
        labels = [run.attributes[m]["label"] for m in a["members"]]
        predicted = ", ".join(f"{lab} {format_value(a['predicted'][m], dec[m])}"
                              for lab, m in zip(labels, a["members"], strict=True))
        lines += ["", f"{a['name']}: {a['question']}",
                  f"  the model's answer: {a['answer']!r} ({predicted})",
                  "  | rank | isic_id | cosine | " + " | ".join(labels) + " |",
                  "  |---:|---|---:|" + "---:|" * len(labels)]
        for h in a["hits"]:
            vals = " | ".join(format_value(h["values"][m], dec[m]) for m in a["members"])
            lines.append(f"  | {h['rank']} | {h['isic_id']} | {h['cosine']:.4f} | {vals} |")
    return "\n".join(lines)


def grid(path: Path, queries: list[tuple[Path, object, list[dict]]], run, k: int) -> None:
    """Fig. 3's layout: per query image, one row per question; the query tile titled with the
    model's answer, each hit with its value of the question's first attribute."""
    import numpy as np

    from skinground.core.io import atomic_path
    from skinground.evaluation.grids import UNITS, draw_grid, tile_image, tile_title

    px = 160
    groups = []
    for image_path, image, answers in queries:
        query_tile = np.asarray(image.resize((px, px)))
        rows = []
        for a in answers:
            first = a["members"][0]
            unit, dec = UNITS.get(first, ""), run.attributes[first]["decimals"]
            name = f"{a['name']}\n({image_path.name})"
            rows.append((name, (query_tile, "model: " + tile_title(a["predicted"][first],
                                                                   unit, dec)),
                         [(tile_image(run.store, h["isic_id"], px),
                           tile_title(h["values"][first], unit, dec)) for h in a["hits"]]))
        groups.append(rows)
    fig = draw_grid(groups, k)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")


def check_out(out: Path | None, images: list[Path]) -> None:
    """``--out``, checked before any model work: .png or .pdf, in an existing folder, and
    never a query image or an existing file (the grid overwrites nothing)."""
    if out is None:
        return
    if out.suffix.lower() not in (".png", ".pdf"):
        raise InputError(f"--out {out}: the grid is written as .png or .pdf")
    if any(out.resolve() == p.resolve() for p in images):
        raise InputError(f"--out {out}: is a query image")
    if out.exists():
        raise InputError(f"--out {out}: exists; the grid overwrites nothing (remove it first)")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise InputError(f"--out {out}: no folder {folder}")
    try:  # writable: tried, not guessed from the mode bits (root, ACLs, read-only mounts)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}.", suffix=".tmp"):
            pass
    except OSError as err:
        raise InputError(f"--out {out}: cannot write in {folder} ({err.strerror})") from None


def query(a: argparse.Namespace) -> None:
    from skinground.retrieval.query import Run, ask, read_image

    check_out(a.out, a.images)
    name = a.run or default_run(a.workdir)
    if not RUN_NAME.fullmatch(name):
        raise InputError(f"--run {name!r}: a run's name (config key run), not a path")
    for flag, value in (("-k", a.k), ("--b", a.b)):
        if value is not None and value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    run = Run(a.workdir, name)
    asked = run.asked(a.attribute, a.group)
    images = [(p, read_image(p)) for p in a.images]  # every file checked before any work
    retrieve = run.config["retrieve"]
    k = retrieve["k"] if a.k is None else a.k
    b = retrieve["b"] if a.b is None else a.b
    if not k <= b:
        raise InputError(f"need k ({k}) <= b ({b})")
    size = run.database_size()  # checked before any model work
    for flag, value in (("-k", k), ("--b", b)):
        if value > size:
            raise InputError(f"{flag} {value}: the run's database holds {size} train images")
    run.load()
    results = [(p, im, ask(run, im, asked, k=k, b=b)) for p, im in images]
    if a.out is not None:
        grid(a.out, results, run, k)
    if a.json:
        print(json.dumps({"run": run.name, "k": k, "b": b, "queries": [
            {"image": str(p), "questions": answers} for p, _, answers in results]}, indent=2))
    else:
        print("\n\n".join(table(p, answers, run) for p, _, answers in results))


def main(argv=None) -> None:
    a = arguments(argv)
    try:
        query(a)
    except InputError as exc:
        print(f"skinground {a.command}: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
