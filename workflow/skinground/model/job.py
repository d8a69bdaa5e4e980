"""The train job's file: what the ``train`` rule gives its training processes, in one JSON file.

The rule's process (``workflow/scripts/train.py`` run by Snakemake) writes the file from the
rule's params and paths (:func:`from_rule`), then becomes torchrun's agent; every training
process torchrun starts reads the same file (:func:`read_job`) and calls ``train.train`` with
its fields. No value crosses the process boundary as a command-line flag.

- ``train``: config section ``train`` less its bookkeeping keys (the rule's rerun trigger);
- ``bookkeeping``: its bookkeeping keys (``core.sections.BOOKKEEPING``: logging, checkpoints,
  loader workers); the one split of the section is the rule's;
- ``pixels``: the processor's pixel budget (``core.sections.pixel_params``);
- the paths: ``base``, ``tuples``, ``images``, ``deepspeed``, ``checkpoints`` and the outputs
  ``adapter``, ``loss_csv``, ``loss_plot``, ``summary``; ``gpus``: the GPUs the job asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from skinground.core.errors import InputError
from skinground.core.io import write_json

PATHS = ("base", "tuples", "images", "deepspeed", "checkpoints", "adapter", "loss_csv",
         "loss_plot", "summary")
SECTIONS = ("train", "bookkeeping", "pixels")
FIELDS = (*PATHS, *SECTIONS, "gpus")


def from_rule(snakemake) -> dict:
    """The job of a ``train`` rule's Snakemake job: its params, inputs, outputs, resources."""
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    return {
        "base": p.base, "tuples": i.tuples, "images": i.images, "deepspeed": i.deepspeed,
        "checkpoints": p.checkpoints, "adapter": o.adapter, "loss_csv": o.loss_csv,
        "loss_plot": o.loss_plot, "summary": o.summary,
        "train": dict(p.train), "bookkeeping": dict(p.bookkeeping), "pixels": dict(p.pixels),
        "gpus": int(snakemake.resources.get("gpu", 0)),
    }


def write_job(path: str | os.PathLike, job: Mapping) -> Path:
    """``job`` (every one of :data:`FIELDS`) as the JSON file ``path``, atomically."""
    missing = [k for k in FIELDS if k not in job]
    if missing:
        raise ValueError(f"train job lacks {', '.join(missing)}")
    write_json(path, {k: str(job[k]) if k in PATHS else job[k] for k in FIELDS})
    return Path(path)


def read_job(path: str | os.PathLike) -> dict:
    """The job file ``path`` (:func:`write_job`'s), checked: one line naming what is wrong."""
    try:
        job = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such train job file") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a train job file ({err})") from None
    missing = [k for k in FIELDS if k not in job] if isinstance(job, dict) else list(FIELDS)
    if missing:
        raise InputError(f"{path}: the train job file lacks {', '.join(missing)}")
    return job
