"""``skinground``: the command a user of a finished run reaches for (its help: ``HELP``).

``export-image`` writes one image of the run's image store (a test image by default) as a
file; ``query`` embeds each query image with the run's tuned model and retrieves its top-k
train images hierarchically on the fly (top b by h_im from the run's index, re-ranked by
h_im,a or h_im,G: no stored per-attribute database), for each asked attribute (a column or
its label) and group; it prints, per question, the model's own answer for the query (from the
same prefix pass) and a table of rank, isic_id, cosine and the retrieved images' values.
``--out`` writes a Fig. 3-style grid (PNG or PDF), ``--json`` the same as JSON on stdout. The
run's folder is found from any folder inside the project (``retrieval.query.find_workdir``),
or given with ``--workdir``. A run that is not found or not finished, a file that is not an
image, an unknown id, attribute or group stops it with a one-line error (exit 1) before
anything is written; a question the model was not trained on is answered with a warning.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from skinground.core.errors import InputError
from skinground.core.outputs import RUN_CONFIG, RUN_NAME

HELP = """\
Look at a finished run of the skinground workflow: its verdict against the paper, and with
a new image, the tuned model's answer for it and the train images nearest it for an
attribute.

  skinground verdict --run demo          # did the run reproduce the paper?
  skinground export-image --run demo     # writes a test image of the run: <isic_id>.jpg
  skinground query <isic_id>.jpg --run demo --attribute area --out grid.png

Run it in the project folder (the one holding results/<run>/) or any folder below it;
from elsewhere, add --workdir DIR. 'skinground COMMAND --help' for a command's options."""
RUN_HELP = "the run: its config key run, e.g. demo (default: the project's config.yaml's)"
WORKDIR_HELP = ("the project folder holding results/<run>/ (default: found from the current "
                "folder upward)")


class Version(argparse.Action):
    """``--version``: the package's version and, in a git checkout, its commit (computed
    only when asked)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0,
                         help="print the version (and the git commit) and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version())
        parser.exit()


def version() -> str:
    from skinground import __version__

    repo = Path(__file__).resolve().parents[2]  # workflow/skinground/cli.py in a checkout
    commit = ""
    if (repo / ".git").exists():
        try:
            proc = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty",
                                   "--abbrev=12"], capture_output=True, text=True, timeout=5)
            if proc.returncode == 0 and proc.stdout.strip():
                commit = f" (git {proc.stdout.strip()})"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"skinground {__version__}{commit}"


def arguments(argv=None) -> argparse.Namespace:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="skinground", description=HELP, formatter_class=raw)
    p.add_argument("--version", action=Version)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    q = sub.add_parser(
        "query", help="the model's answer for a new image, and the train images nearest it",
        formatter_class=raw, description=(
            "For each image and each asked attribute (a column or its label) or group: the\n"
            "tuned model's answer, and the top-k train images by the hierarchical method\n"
            "(top b by h_im, re-ranked by h_im,a or h_im,G computed on the fly).\n\n"
            "  skinground query lesion.jpg --run demo --attribute area --out grid.png"))
    q.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                   help="query image files (JPEG, PNG, ...)")
    q.add_argument("--run", help=RUN_HELP)
    q.add_argument("--attribute", action="append", default=[], metavar="NAME",
                   help="an attribute's label (area) or column (tbp_lv_areaMM2); repeatable "
                        "(default: figures.fig3_attribute)")
    q.add_argument("--group", action="append", default=[], metavar="NAME",
                   help="a group of retrieve.groups (size, colour, ...); repeatable")
    q.add_argument("-k", type=int, default=None, help="hits per question (default: retrieve.k)")
    q.add_argument("--b", type=int, default=None,
                   help="first-stage candidates (default: retrieve.b)")
    q.add_argument("--out", type=Path, metavar="FILE",
                   help="a Fig. 3-style grid of the hits (.png or .pdf)")
    q.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    q.add_argument("--workdir", type=Path, metavar="DIR", help=WORKDIR_HELP)
    e = sub.add_parser(
        "export-image", help="write one image of a run's image store as a file",
        formatter_class=raw, description=(
            "Write one image of the run's image store (config data.images: an HDF5 file or a\n"
            "folder) as a file, e.g. to query it. A .jpg gets the bytes the store holds.\n\n"
            "  skinground export-image --run demo                  # its first test image\n"
            "  skinground export-image ISIC_0015670 --run demo --out lesion.png"))
    e.add_argument("isic_id", nargs="?", metavar="ISIC_ID",
                   help="the image's id (default: the run's first test image)")
    e.add_argument("--run", help=RUN_HELP)
    e.add_argument("--out", type=Path, metavar="FILE",
                   help="the file to write, .jpg or .png (default: ISIC_ID.jpg here)")
    e.add_argument("--workdir", type=Path, metavar="DIR", help=WORKDIR_HELP)
    v = sub.add_parser(
        "verdict", help="did a run reproduce the paper? its verdict",
        formatter_class=raw, description=(
            "Print a finished run's verdict (results/<run>/verdict/verdict.md): each\n"
            "expectation of config verdict.expected (the paper's values and claims), what the\n"
            "run measured, the test, and held / not held / not measurable here.\n\n"
            "  skinground verdict --run demo\n"
            "  skinground verdict --run demo --csv > verdict.csv   # every unit, as CSV"))
    v.add_argument("--run", help=RUN_HELP)
    v.add_argument("--csv", action="store_true",
                   help="print verdict.csv instead: one row per expectation and unit")
    v.add_argument("--workdir", type=Path, metavar="DIR", help=WORKDIR_HELP)
    return p.parse_args(argv)


def default_run(workdir: Path | None) -> tuple[str, Path]:
    """The run named by the project's config.yaml (key run), and the folder it is in:
    ``workdir``, else the first folder from here upward with a config.yaml and a Snakefile."""
    here = Path.cwd().resolve()
    if workdir is not None:
        folders = [workdir]
    else:
        folders = [d for d in (here, *here.parents)
                   if (d / "config.yaml").is_file() and (d / "Snakefile").is_file()][:1]
    if not folders or not (folders[0] / "config.yaml").is_file():
        where = (f"--workdir {workdir}" if workdir is not None
                 else f"{here} or any folder above it (a project folder: config.yaml and a "
                      "Snakefile)")
        raise InputError(f"no --run given, and no config.yaml in {where} to read the run's "
                         "name from: give --run NAME (e.g. --run demo)")
    config = folders[0] / "config.yaml"
    try:
        name = yaml.safe_load(config.read_text(encoding="utf-8"))["run"]
    except (yaml.YAMLError, TypeError, KeyError, OSError) as err:
        raise InputError(f"{config}: no run to read ({type(err).__name__}): give --run NAME") \
            from None
    return str(name), folders[0]


def run_folder(a: argparse.Namespace) -> tuple[str, Path]:
    """The run ``--run`` names (or the project's config.yaml), and the project folder
    ``--workdir`` gives or the one found from here upward that holds it."""
    from skinground.retrieval.query import find_workdir

    if a.run is not None:
        name, start = a.run, None
    else:
        name, start = default_run(a.workdir)
    if not RUN_NAME.fullmatch(name):
        raise InputError(f"--run {name!r}: a run's name (config key run), not a path")
    try:
        root = find_workdir(name, a.workdir, start)
    except InputError as err:
        if a.run is not None:
            raise
        raise InputError(f"{err}; {start / 'config.yaml'} names run {name!r}: another "
                         "with --run NAME") from None
    return name, root


def open_run(a: argparse.Namespace, needs=None):
    """The run of :func:`run_folder`; only ``needs`` checked there (default: what a query
    reads)."""
    from skinground.retrieval.query import Run

    name, root = run_folder(a)
    return Run(root, name) if needs is None else Run(root, name, needs)


def format_value(value, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def table(image: Path, answers: list[dict], run) -> str:
    lines = [f"query {image}"]
    for a in answers:
        dec = {m: run.attributes[m]["decimals"] for m in a["members"]}
        labels = [run.attributes[m]["label"] for m in a["members"]]
        predicted = ", ".join(f"{lab} {format_value(a['predicted'][m], dec[m])}"
                              for lab, m in zip(labels, a["members"], strict=True))
        named = a["label"] if a["label"] == a["name"] else f"{a['label']} ({a['name']})"
        lines += ["", f"{named}: {a['question']}",
                  f"  the model's answer{'' if a['trained'] else ' (untrained)'}: "
                  f"{a['answer']!r} ({predicted})",
                  "  | rank | isic_id | cosine | " + " | ".join(labels) + " |",
                  "  |---:|---|---:|" + "---:|" * len(labels)]
        for h in a["hits"]:
            vals = " | ".join(format_value(h["values"][m], dec[m]) for m in a["members"])
            lines.append(f"  | {h['rank']} | {h['isic_id']} | {h['cosine']:.4f} | {vals} |")
    return "\n".join(lines)


def grid(path: Path, queries: list[tuple[Path, object, list[dict]]], run, k: int) -> None:
    """Fig. 3's layout: per query image, one row per question, named by its label as Fig. 3
    names it (a group's: the group and the label of its first attribute, whose values the
    tiles show); the query tile titled with the model's answer, each hit with its value."""
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
            shown = run.attributes[first]["label"]
            name = a["label"] if shown == a["label"] else f"{a['label']}: {shown}"
            rows.append((f"{name}\n({image_path.name})",
                         (query_tile, ("model: " if a["trained"] else "untrained: ")
                          + tile_title(a["predicted"][first], unit, dec)),
                         [(tile_image(run.store, h["isic_id"], px),
                           tile_title(h["values"][first], unit, dec)) for h in a["hits"]]))
        groups.append(rows)
    fig = draw_grid(groups, k)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")


def check_out(out: Path | None, images: list[Path], *, suffixes=(".png", ".pdf"),
              what: str = "the grid", flag: str = "--out ") -> None:
    """``--out``, checked before any model work: one of ``suffixes``, in an existing folder,
    and never a query image or an existing file (``what`` overwrites nothing)."""
    if out is None:
        return
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{flag}{out}: {what} is written as "
                         f"{', '.join(suffixes[:-1])} or {suffixes[-1]}")
    if any(out.resolve() == p.resolve() for p in images):
        raise InputError(f"{flag}{out}: is a query image")
    if out.exists():
        raise InputError(f"{flag}{out}: exists; {what} overwrites nothing (remove it first)")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise InputError(f"{flag}{out}: no folder {folder}")
    try:  # writable: tried, not guessed from the mode bits (root, ACLs, read-only mounts)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}.", suffix=".tmp"):
            pass
    except OSError as err:
        raise InputError(f"{flag}{out}: cannot write in {folder} ({err.strerror})") from None


def warn(command: str, message: str) -> None:
    print(f"skinground {command}: warning: {message}", file=sys.stderr)


def query(a: argparse.Namespace) -> None:
    from skinground.retrieval.query import ask, read_image

    check_out(a.out, a.images)
    for flag, value in (("-k", a.k), ("--b", a.b)):
        if value is not None and value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    run = open_run(a)
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
    untrained = run.untrained(asked)
    if untrained:
        warn("query", untrained)
    run.load()
    results = [(p, im, ask(run, im, asked, k=k, b=b)) for p, im in images]
    if a.out is not None:
        grid(a.out, results, run, k)
    if a.json:
        print(json.dumps({"run": run.name, "k": k, "b": b, "queries": [
            {"image": str(p), "questions": answers} for p, _, answers in results]}, indent=2))
    else:
        print("\n\n".join(table(p, answers, run) for p, _, answers in results))


def export_image(a: argparse.Namespace) -> None:
    from skinground.retrieval import query as q

    run = open_run(a, needs={RUN_CONFIG: "run_config"})
    isic_id = q.pick_image(run, a.isic_id)
    path = a.out if a.out is not None else Path(f"{isic_id}.jpg")
    check_out(path, [], suffixes=tuple(q.EXPORT_FORMATS), what="the image",
              flag="--out " if a.out is not None else "")
    split, image = q.export_image(run, isic_id, path)
    where = f"{split} image" if split else "image"
    print(f"{path}: {where} {isic_id} of run {run.name!r} ({image.width} x {image.height} px)")
    if split == "train":
        print("  (a train image: it is in the run's database, so a query finds it first)")
    label = run.attributes[run.config["figures"]["fig3_attribute"]]["label"]
    workdir = f" --workdir {shlex.quote(str(a.workdir))}" if a.workdir is not None else ""
    print(f"next: skinground query {shlex.quote(str(path))} --run {run.name}{workdir} "
          f"--attribute {shlex.quote(label)}")


def verdict(a: argparse.Namespace) -> None:
    from skinground.core.outputs import VERDICT_CSV, VERDICT_MD, Results

    name, root = run_folder(a)
    path = Results.of_run(name, root) / (VERDICT_CSV if a.csv else VERDICT_MD)
    if not path.is_file():
        raise InputError(f"run {name!r} has no verdict yet: {path} is missing (made by rule "
                         "verdict; run the workflow first, e.g. snakemake --profile ...)")
    sys.stdout.write(path.read_text(encoding="utf-8"))


def main(argv=None) -> None:
    a = arguments(argv)
    try:
        {"query": query, "export-image": export_image, "verdict": verdict}[a.command](a)
    except InputError as exc:
        print(f"skinground {a.command}: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
