"""The workflow's config: which keys of a section change what a rule computes (the rest are
bookkeeping), reading config files outside Snakemake (the cost model, benchmarks) merged in
order as ``snakemake --configfile a.yaml b.yaml`` merges them, and the per-rule resources of
the workflow profile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

#: Per config section, the keys that change how the work is done, not what it computes: how
#: often to log and checkpoint, how many loader workers, where the DeepSpeed file is (its
#: content is an input), how many images go through the model at once (tests/test_embed.py
#: and tests/test_predict.py check that batches compute what one image at a time does), and
#: which models are predicted (each model's jobs are their own). Their values reach the jobs
#: but rerun nothing; every other key is a rerun trigger of the rules that read the section.
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


def non_integers(value: Any, schema: Mapping[str, Any], *, root: Mapping | None = None,
                 key: str = "") -> list[str]:
    """The dotted keys of ``value`` whose schema asks for an integer but that hold a float
    such as ``2.0`` (JSON Schema counts it as an integer; Python code does not)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    types = {schema.get("type")} | {alt.get("type") for alt in
                                    [*schema.get("oneOf", ()), *schema.get("anyOf", ())]}
    if isinstance(value, float) and "integer" in types and "number" not in types:
        return [key]
    found: list[str] = []
    if isinstance(value, Mapping):
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = schema.get("properties", {}).get(k, extra if isinstance(extra, Mapping) else {})
            found += non_integers(v, sub, root=root, key=f"{key}.{k}" if key else str(k))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, v in enumerate(value):
            found += non_integers(v, schema["items"], root=root, key=f"{key}[{i}]")
    return found


def tracked(section: str, values: Mapping[str, Any]) -> dict:
    """The keys of config ``section`` that change results (``values`` less bookkeeping)."""
    return {k: v for k, v in values.items() if k not in BOOKKEEPING.get(section, ())}


def bookkeeping(section: str, values: Mapping[str, Any]) -> dict:
    """The bookkeeping keys of config ``section`` (see :data:`BOOKKEEPING`)."""
    return {k: v for k, v in values.items() if k in BOOKKEEPING.get(section, ())}


def tracked_config(config: Mapping[str, Any]) -> dict:
    """The whole config less every section's bookkeeping keys: what the results depend on."""
    return {k: tracked(k, v) if k in BOOKKEEPING else v for k, v in config.items()}


def deep_merge(base: dict, over: Mapping) -> dict:
    """``over`` merged into a copy of ``base`` key by key (Snakemake's --configfile merge),
    except that an empty map in ``over`` empties the section (``retrieve.groups: {}`` means no
    groups); Snakemake's own merge drops it, which :func:`emptied_sections` undoes."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and value and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _empty_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            found += _empty_paths(value, (*prefix, key)) if value else [(*prefix, key)]
    return found


def _at(tree: Mapping, path: tuple[str, ...]):
    """``tree``'s value at ``path``, or None where it sets nothing there."""
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def emptied_sections(overlays: Sequence[Mapping]) -> dict[tuple[str, ...], Any]:
    """Key path -> its value, for every section an empty map empties over config overlays
    merged in order: what the overlays after the last empty map set under it, merged into
    ``{}`` (Snakemake's merge would have kept what came before the empty map)."""
    last: dict[tuple[str, ...], int] = {}
    for i, overlay in enumerate(overlays):
        for path in _empty_paths(overlay):
            last[path] = i
    sections = {}
    for path, i in last.items():
        if any(path[:n] in last for n in range(1, len(path))):
            continue  # an emptied section's value (below) holds what is set under it
        value: Any = {}
        for overlay in overlays[i + 1:]:
            later = _at(overlay, path)
            if later is not None:
                value = deep_merge(value, later) if isinstance(later, Mapping) else later
        sections[path] = value
    return sections


def empty_sections(config: dict, overlays: Sequence[Mapping]) -> dict:
    """``config`` (Snakemake's merge of ``overlays``) with every section an overlay emptied
    (:func:`emptied_sections`) set as :func:`deep_merge` would have merged it, in place; the
    schema then says whether empty is allowed (``attributes``: refused, ``minProperties``)."""
    for path, value in emptied_sections(overlays).items():
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return config


def schema_error(config: Mapping, schema_path: str | Path) -> str:
    """The schema's most relevant complaint about ``config`` as one line naming the key,
    e.g. ``config attributes: {} should be non-empty`` (jsonschema's ``best_match``)."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(config))
    if error is None:
        return "config: does not match the schema"
    key = ".".join(str(k) for k in error.absolute_path) or "(top level)"
    return f"config {key}: {error.message}"


def load_config(paths: Sequence[str | Path]) -> dict:
    """The config files merged in order (an empty map empties its section)."""
    config: dict = {}
    for path in paths:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        config = deep_merge(config, loaded)
    return config


def gpus_per_job(profile: Mapping[str, Any] | None) -> dict[str, int]:
    """``gpu`` of each rule in the workflow profile's set-resources (absent: 0)."""
    resources = (profile or {}).get("set-resources") or {}
    return {rule: int((r or {}).get("gpu", 0)) for rule, r in resources.items()}


def runtime_limits(profile: Mapping[str, Any] | None) -> dict[str, float]:
    """``runtime`` (minutes) of each rule in the workflow profile's set-resources."""
    resources = (profile or {}).get("set-resources") or {}
    return {rule: float(r["runtime"]) for rule, r in resources.items()
            if isinstance(r, Mapping) and isinstance(r.get("runtime"), (int, float))}


def load_profile(path: str | Path) -> dict | None:
    """A Snakemake profile's config.yaml, or None when there is none."""
    path = Path(path)
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
