"""Config sections as the rules and jobs take them: which keys of a section change what a rule
computes (tracked) and which only how the work is done (bookkeeping), and the pixel budget that
takes effect. Standard library only: the model rules import it, and their code hash must not
hold the config loader's checks (``core.config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Per config section, the keys that change how the work is done, not what it computes: how
#: often to log and checkpoint, how many loader workers, where the DeepSpeed file is (its
#: content is an input), how many images go through the model at once (tests/test_embed.py
#: and tests/test_predict.py check that batches compute what one image at a time does), and
#: which models are predicted (each model's jobs are their own). Their values reach the jobs
#: but rerun nothing; every other key is a rerun trigger of the rules that read the section.
#: They alone have defaults in the schema: a run's config.yaml (tracked keys only) reads back
#: whole through :func:`load`.
BOOKKEEPING: dict[str, tuple[str, ...]] = {
    "train": ("save_steps", "save_total_limit", "logging_steps", "dataloader_workers",
              "deepspeed"),
    "embed": ("batch_images",),
    "predict": ("batch_images", "models"),
}


#: Config ``model``'s keys that make Qwen2-VL's pixel budget: what the training and every rule
#: that runs the model depend on.
PIXEL_KEYS = ("image_size", "min_pixels", "max_pixels")


def pixel_params(model: Mapping[str, Any]) -> dict:
    """The pixel budget that takes effect (``model``'s :data:`PIXEL_KEYS`): ``image_size``
    alone when it is set (the processor then ignores min/max_pixels, so they must not rerun
    anything), else ``min_pixels`` and ``max_pixels``."""
    if model.get("image_size") is not None:
        return {"image_size": model["image_size"]}
    return {k: model.get(k) for k in PIXEL_KEYS[1:]}


def pixel_record(model: Mapping[str, Any]) -> dict:
    """:func:`pixel_params` with every key of :data:`PIXEL_KEYS` (None where not in effect):
    how records compare pixel budgets (``checkpoints``, ``provenance``, ``query``)."""
    budget = pixel_params(model)
    return {k: budget.get(k) for k in PIXEL_KEYS}


def tracked(section: str, values: Mapping[str, Any]) -> dict:
    """The keys of config ``section`` that change results (``values`` less bookkeeping)."""
    return {k: v for k, v in values.items() if k not in BOOKKEEPING.get(section, ())}


def bookkeeping(section: str, values: Mapping[str, Any]) -> dict:
    """The bookkeeping keys of config ``section`` (see :data:`BOOKKEEPING`)."""
    return {k: v for k, v in values.items() if k in BOOKKEEPING.get(section, ())}


def tracked_config(config: Mapping[str, Any]) -> dict:
    """The whole config less every section's bookkeeping keys: what the results depend on."""
    return {k: tracked(k, v) if k in BOOKKEEPING else v for k, v in config.items()}
