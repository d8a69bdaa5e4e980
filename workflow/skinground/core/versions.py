"""The Python packages a run depends on, and the pins they are checked against.

The library versions are part of a result (Qwen2-VL's modelling code in transformers, peft's
LoRA, DeepSpeed's optimizer): :func:`closure` names every distribution that installing
``skinground`` brings, transitively (environment markers evaluated, the extras asked for
included), with its installed version. The repository's ``constraints.txt`` pins that set
(torch aside: its build is the machine's choice, CPU or CUDA); the ``versions`` rule writes it
beside each run's config, with the pin each version was checked against.

Standard library and ``packaging`` (a dependency of Snakemake) only: the Snakefile imports it.
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: The project's distribution; and what its pins leave to the machine (torch: the CPU or the
#: CUDA build, chosen at install time; the README says how).
PROJECT = "skinground"
UNPINNED = ("torch",)
#: The repository's pins, beside pyproject.toml.
CONSTRAINTS = "constraints.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _marker_holds(marker: Marker | None, extra: str) -> bool:
    return marker is None or marker.evaluate({"extra": extra})


def closure(root: str = PROJECT, extras: tuple[str, ...] = (),
            skip: tuple[str, ...] = UNPINNED) -> dict[str, str]:
    """Canonical distribution name -> installed version, for every distribution that
    installing ``root[extras]`` brings, transitively; ``skip`` (and what only it brings) is
    left out, and so is ``root`` itself. Raises ``PackageNotFoundError`` naming a required
    distribution that is not installed."""
    skipped = {canonicalize_name(s) for s in skip}
    found: dict[str, str] = {}
    todo = [(canonicalize_name(root), tuple(extras))]
    seen: set[tuple[str, str]] = set()
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            dep = canonicalize_name(req.name)
            if dep in skipped:
                continue
            if not any(_marker_holds(req.marker, e) for e in ("", *wanted)):
                continue
            for extra in ("", *sorted(req.extras)):
                if (dep, extra) in seen:
                    continue
                seen.add((dep, extra))
                if dep not in found:
                    found[dep] = metadata.version(dep)
                todo.append((dep, (extra,) if extra else ()))
    found.pop(canonicalize_name(root), None)
    return dict(sorted(found.items()))


def read_pins(path: str | Path) -> dict[str, str]:
    """A constraints file's ``name==version`` lines: canonical name -> version. Comments and
    blank lines are skipped; any other line is refused, naming the file and line."""
    pins: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = _PIN.match(text)
        if not m:
            raise ValueError(f"{path}:{number}: not a 'name==version' pin: {line.strip()!r}")
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def format_pins(versions: dict[str, str], header: str) -> str:
    """A constraints file: ``header`` as comments, then one ``name==version`` line each."""
    lines = [f"# {h}".rstrip() for h in header.splitlines()]
    return "\n".join([*lines, *(f"{n}=={v}" for n, v in sorted(versions.items()))]) + "\n"


def environment() -> dict[str, str]:
    """The interpreter and machine a run's jobs ran on (beside the package versions)."""
    return {"python": platform.python_version(), "implementation": sys.implementation.name,
            "platform": platform.platform(terse=True)}


def installed(skip: tuple[str, ...] = ()) -> dict[str, str]:
    """The run's packages: the closure of the project's runtime dependencies (no test
    extras), torch included (its version and build, e.g. ``2.13.0+cpu``, are the run's)."""
    return closure(PROJECT, (), skip)


def table(versions: dict[str, str], pins: dict[str, str]) -> list[dict[str, str]]:
    """One row per package: its version, the pin, and whether they agree ("pinned",
    "differs", or "unpinned" where the constraints leave it to the machine)."""
    rows = []
    for name, version in sorted(versions.items()):
        pin = pins.get(name, "")
        state = "unpinned" if not pin else ("pinned" if pin == version else "differs")
        rows.append({"package": name, "version": version, "pin": pin, "state": state})
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m skinground.core.versions [--extras test] [--write FILE]``: the closure of the
    installed project as pins (stdout, or FILE): how ``constraints.txt`` is made."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m skinground.core.versions",
                                description="The installed project's dependencies, as pins.")
    p.add_argument("--extras", nargs="*", default=["test"])
    p.add_argument("--write", type=Path, default=None, help="write the pins to this file")
    args = p.parse_args(argv)
    versions = closure(PROJECT, tuple(args.extras))
    header = (f"The exact versions CI passed with: every package that `pip install -e "
              f"'.[{','.join(args.extras)}]'` brings, torch aside (its CPU or CUDA build is the "
              f"machine's).\nMade by `python -m skinground.core.versions --write {CONSTRAINTS}` "
              f"(Python {platform.python_version()}); refresh: `bash .ci/newest --write-pins`.")
    text = format_pins(versions, header)
    if args.write is None:
        sys.stdout.write(text)
    else:
        args.write.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
