"""Promote a benchmark's record to the workflow's measured inputs: ``bench/results/NAME.json``
-> ``resources/measured/NAME.json``, the file the ``cost`` rule reads (no rule reads bench/).

    python bench/tokens.py && python bench/promote.py tokens
    bash bench/gpu_check.sh && python bench/promote.py gpu

A bench rerun changes only its record; the study's inputs change when this step is run, and the
next ``snakemake`` reruns what reads them (the cost report). A record the cost model would not use
(a ``--tiny`` or CPU gpu.json, a failed GPU check, no token counts) is refused with one line, and
the workflow's copy stays as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from skinground.core import outputs
from skinground.core.io import write_text
from skinground.cost import calibration

#: What makes each measurement the workflow reads (``outputs.MEASURED``): name -> command.
MADE_BY = {"gpu": "bash bench/gpu_check.sh (on a GPU)",
           "tokens": "python bench/tokens.py (the 7B's tokenizer)"}

REPO = Path(__file__).resolve().parents[1]


def promote(name: str, *, bench: Path, root: Path) -> Path:
    """Check ``bench/NAME.json`` and copy it, byte for byte, to ``root``'s measured inputs;
    returns the written path. Raises ``ValueError`` naming the file and the reason."""
    source = bench / f"{name}.json"
    if not source.is_file():
        raise ValueError(f"{source}: not found; make it with {MADE_BY[name]}")
    text = source.read_text(encoding="utf-8")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from err
    why = calibration.unusable(name, record)
    if why:
        raise ValueError(f"{source}: the cost model would not use it ({why}); nothing promoted")
    target = root / outputs.MEASURED.format(name=name)
    write_text(target, text)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", choices=sorted(MADE_BY))
    p.add_argument("--bench", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--root", type=Path, default=REPO, help="the checkout to update")
    args = p.parse_args(argv)
    for name in args.names:
        try:
            print(f"promoted: {promote(name, bench=args.bench, root=args.root)}")
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
