"""What a run is judged against: the expectation files that config ``verdict.expected`` names
(``resources/expected/``: the paper's reported values and claims, the demo's targets), read
and checked once, when the workflow is planned (``rules/common.smk``), so that a bad file stops
the run before any job with one line naming the file, the expectation and the key.

Standard library, PyYAML and jsonschema only (the Snakefile imports it). The verdict rule
(``evaluation.verdict``) measures each expectation on the run's outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from skinground.core import plan
from skinground.core.config import ConfigError
from skinground.evaluation.claims import CLAIM_KINDS, claim_pairs

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "expected.schema.yaml"

#: Each kind's own keys (beside id, source, statement, group, kind).
KIND_KEYS = {
    "count": ("measure", "value", "tolerance"),
    "r2_floor": ("floor",),
    "ordering": ("claim", "pairs"),
    "far_off": ("attribute", "method", "than"),
    "median_count": ("method", "than", "at_least"),
    "r2_count": ("threshold", "strict", "at_least"),
}
#: What a count can measure: the run's data (the data report, the split, the tuples) ...
DATA_MEASURES = ("images", "train_images", "test_images", "train_patients", "test_patients",
                 "train_tuples")
#: ... or its config.
CONFIG_MEASURES = ("attributes", "k", "b")
MEASURES = (*DATA_MEASURES, *CONFIG_MEASURES)
#: The keys whose values are names of the code, and those names (checked by :func:`read`).
NAMES = {"kind": tuple(KIND_KEYS), "measure": MEASURES, "claim": CLAIM_KINDS}
COMMON_KEYS = ("id", "source", "statement", "group", "kind")


class ExpectationError(ConfigError):
    """An expectation file that cannot be read or is not what the schema and the checks say."""


@cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def _where(path: Path, error_path: Sequence[Any], items: Sequence[Any]) -> str:
    """``path: expectations[3] (fig4_a_best) pairs.0`` for an error at ``error_path``."""
    parts = list(error_path)
    if len(parts) >= 2 and parts[0] == "expectations" and isinstance(parts[1], int):
        item = items[parts[1]] if parts[1] < len(items) else {}
        name = f" ({item['id']})" if isinstance(item, dict) and "id" in item else ""
        rest = ".".join(str(k) for k in parts[2:])
        return f"{path}: expectations[{parts[1]}]{name}" + (f" {rest}" if rest else "")
    return f"{path}: " + (".".join(str(k) for k in parts) or "(top level)")


def read(path: str | Path) -> list[dict]:
    """The expectations of one file, checked (:class:`ExpectationError` naming the file, the
    expectation and the key); each gets ``file``: the file's name without its suffix."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ExpectationError(f"{path}: cannot read the expectation file "
                               f"({err.strerror or type(err).__name__}; config "
                               "verdict.expected names it)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ExpectationError(f"{path}:{line} is not YAML: "
                               f"{getattr(err, 'problem', None) or err}") from None
    items = data.get("expectations", []) if isinstance(data, dict) else []
    error = jsonschema.exceptions.best_match(
        list(jsonschema.Draft202012Validator(_schema()).iter_errors(data)))
    if error is not None:
        raise ExpectationError(f"{_where(path, error.absolute_path, items)}: {error.message}")
    for i, item in enumerate(items):
        _check(path, i, item)
    return [{**item, "file": path.stem} for item in items]


def _check(path: Path, i: int, item: Mapping[str, Any]) -> None:
    """What the schema cannot say of expectation ``i``: no key of another kind; an ordering's
    pairs are claims the evaluation tests (``claims.claim_pairs``)."""
    for key, names in NAMES.items():
        if key in item and item[key] not in names:
            raise ExpectationError(f"{_where(path, ['expectations', i, key], [item] * (i + 1))}"
                                   f": {item[key]!r} is not one of {', '.join(names)}")
    kind = item["kind"]
    foreign = [k for k in item if k not in COMMON_KEYS and k not in KIND_KEYS[kind]]
    if foreign:
        raise ExpectationError(f"{_where(path, ['expectations', i, foreign[0]], [item] * (i + 1))}"
                               f": not a key of kind {kind} (its keys: "
                               f"{', '.join(KIND_KEYS[kind])})")
    if kind == "ordering":
        for j, (first, second) in enumerate(item["pairs"]):
            if (first, second, item["claim"]) not in claim_pairs([first, second]):
                known = ", ".join(f"{a} vs {b} ({k})" for a, b, k in claim_pairs(
                    [*plan.QWEN_METHODS, "ENCODER"]))
                raise ExpectationError(
                    f"{_where(path, ['expectations', i, 'pairs', j], [item] * (i + 1))}: "
                    f"{first} vs {second} ({item['claim']}) is not a claim the evaluation "
                    f"tests; the claims: {known} (ENCODER: any image encoder)")


def load(paths: Sequence[str | Path]) -> list[dict]:
    """The expectations of every file in ``paths`` (config ``verdict.expected``), in order;
    an id used twice is refused, naming both files."""
    seen: dict[str, Path] = {}
    out = []
    for path in paths:
        for item in read(path):
            if item["id"] in seen:
                raise ExpectationError(f"{path}: expectation id {item['id']!r} is also in "
                                       f"{seen[item['id']]}: ids are unique across the files "
                                       "of verdict.expected")
            seen[item["id"]] = Path(path)
            out.append(item)
    return out


def data_caveat(config: Mapping[str, Any]) -> str | None:
    """Why the counts of a run's data are not SLICE-3D's (None: the run reads it whole, as far
    as the config can say): the embedded synthetic data, or a sample of the patients."""
    if config["synthetic"]["enabled"]:
        return "the run's data is the embedded synthetic set, not SLICE-3D"
    fraction = config["split"]["patient_fraction"]
    if fraction < 1:
        return f"the run uses a sample of the patients (split.patient_fraction {fraction})"
    return None


def files(config: Mapping[str, Any]) -> dict[str, str]:
    """Each file of config ``verdict.expected``, by its name without the suffix (the verdict's
    ``file`` column) -> the path as the config gives it."""
    return {Path(p).stem: p for p in config["verdict"]["expected"]}
