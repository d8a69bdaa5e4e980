# Shared by every stage: the config (checked one way, skinground.core.config), paths under the
# run folder, and the helpers rules use to declare what they depend on (config sections and the
# meaning of their code as params) and how the report labels what they make.

import os
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

SRC = Path(workflow.basedir)
LIB_ROOT = str(SRC / "workflow")
sys.path.insert(0, LIB_ROOT)
# Scripts import the library from this checkout, so no install step is needed where a rule
# runs (a cluster node, a conda environment): their processes inherit this.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (LIB_ROOT, os.environ.get("PYTHONPATH")) if p)
)
from skinground.core import outputs as out  # standard library only
from skinground.core import plan  # standard library only
from skinground.core import versions  # packaging (Snakemake's own dependency)
from skinground.core.config import ConfigError, check, empty_sections  # PyYAML, jsonschema
from skinground.core.sections import (  # standard library only
    bookkeeping,
    pixel_params,
    tracked,
    tracked_config,
)
from skinground.core.deps import code_hash  # standard library only
from skinground.data.attributes import GROUP_ATTRIBUTE_PREFIX  # standard library only
from skinground.model.global_batch import train_batch  # standard library only
from skinground.core.io import unwritable_folders  # standard library only


def _overlays():
    """The config sources in Snakemake's merge order: the Snakefile's configfile, then the
    --configfile files (a profile's too), then --config."""
    given = [Path(f).resolve() for f in workflow.overwrite_configfiles]
    own = [Path(f).resolve() for f in workflow.configfiles]
    files = [f for f in own if f not in given] + given
    return [
        *(yaml.safe_load(f.read_text(encoding="utf-8")) or {} for f in files),
        workflow.config_settings.config or {},
    ]


# An empty map in a config file or --config empties its section (Snakemake's merge would
# drop it silently): `retrieve.groups: {}` means no groups; the schema refuses an empty
# `attributes`.
empty_sections(config, _overlays())
# The one check of a config (skinground.core.config.check, as `skinground query`, the cost
# model and the benchmarks read theirs): the schema with its defaults filled in, then the
# values that must agree with each other; one line naming the key.
try:
    check(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RUN = config["run"]

from skinground.evaluation import expected as expected_files  # PyYAML, jsonschema

# What the verdict judges the run against (config verdict.expected, paths in this checkout),
# read and checked now: a bad file stops the run before any job, naming it and the key.
try:
    EXPECTED = expected_files.load([SRC / p for p in config["verdict"]["expected"]])
except ConfigError as err:
    raise WorkflowError(str(err)) from None
EXPECTED_FILES = expected_files.files(config)
RESULTS = out.fill(out.RUN_FOLDER, run=RUN)
ATTRIBUTES = list(config["attributes"])
ENCODERS = plan.encoders(config)


def src(path):
    """A file of this checkout, relative to the working directory when it is inside it, so
    that a finished run moved or copied elsewhere with its checkout keeps the same inputs."""
    return os.path.relpath(SRC / path)


def optional(path):
    """A file of this checkout as an optional input: ``[src(path)]`` where it exists, else
    ``[]`` (its appearing or going reruns the job). A script reads it with
    ``skinground.core.script.optional_input``, never as a path: Snakemake hands it over as a list.
    """
    return [src(path)] if (SRC / path).is_file() else []


# Absolute: conda: resolves a relative path against the rule file (and Snakemake records an
# environment by its content, not its path).
CPU_ENV = str(SRC / "envs" / "cpu.yaml")
GPU_ENV = str(SRC / "envs" / "gpu.yaml")
# The processor's pixel budget: what the training and every model-using rule depend on.
PIXELS = pixel_params(config["model"])


def res(template, **fields):
    """A path under results/<run>/ (``skinground.core.outputs``), with ``fields`` filled in."""
    return f"{RESULTS}/{out.fill(template, **fields)}"


def figure(name, ext):
    """A figure file of the paper under results/<run>/ (``out.FIGURE``)."""
    return res(out.FIGURE, name=name, ext=ext)


def log(job):
    """The log of a job under results/<run>/ (``out.LOG``)."""
    return res(out.LOG, job=job)


def benchmark(job):
    """Snakemake's benchmark of a job under results/<run>/ (``out.BENCHMARK``)."""
    return res(out.BENCHMARK, job=job)


_CODE = {}


def code(script_name):
    """A param that reruns its job when what the code does changes: the hash of its script's
    and of every skinground module the script imports, transitively, as syntax trees without
    docstrings (``skinground.core.deps.code_hash``). Edits to comments, docstrings or layout, a
    ``touch`` and another checkout path change nothing. The profiles leave out Snakemake's
    own ``code`` trigger (the script's modification time), which this replaces."""
    if script_name not in _CODE:
        _CODE[script_name] = code_hash(SRC / "workflow" / "scripts" / f"{script_name}.py")
    return _CODE[script_name]


def untracked(value):
    """A param the job receives that is not a rerun trigger: Snakemake leaves params derived
    from a job's resources out of its record (they follow from what is recorded), so a
    change of ``value`` reruns nothing. For bookkeeping keys (``skinground.core.config``)."""
    return lambda wildcards, resources: value


def section(name):
    """config[name] less its bookkeeping keys: the keys that change results."""
    return tracked(name, config[name])


# ---- the report (snakemake --report): every item carries the labels its tables show

#: A run's seed, on every item drawn from the trained model (the demo's seeds are runs).
TRAIN_SEED = config["train"]["seed"]
ATTRIBUTE_LABELS = {column: spec["label"] for column, spec in config["attributes"].items()}


def reported(
    path,
    caption,
    category,
    subcategory=None,
    *,
    item,
    attribute="all",
    model="—",
    seed=None,
    patterns=None,
):
    """``report()`` with the labels the report's tables show, in this order: the item
    (figure or table), its attribute(s), its model or methods, and the seed it was drawn
    with (left out where none applies: a label with two values, each on half of a table's
    items, would become a toggle). ``caption``: the name of a file of workflow/report/;
    ``attribute`` may be a function of the wildcards (a folder's ``patterns``)."""

    def labels_of(attribute):
        labels = {"item": item, "attribute": attribute, "model or method": model}
        if seed is not None:
            labels["seed"] = str(seed)
        return labels

    # Snakemake takes the labels, or a function of the wildcards giving them all, as strings
    if callable(attribute):
        labels = lambda wildcards: labels_of(attribute(wildcards))
    else:
        labels = labels_of(attribute)
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory=subcategory,
        labels=labels,
        patterns=patterns or [],
    )


def attribute_label(wildcards):
    """A report label: the attribute of a per-attribute file (its column's label)."""
    return ATTRIBUTE_LABELS[wildcards.attribute]
