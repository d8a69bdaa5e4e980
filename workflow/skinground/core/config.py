"""The workflow's config, read one way: :func:`load` merges config files in order (as
``snakemake --configfile a.yaml b.yaml`` does) and :func:`check` applies the schema, with its
defaults, and every check of values that must agree with each other, raising
:class:`ConfigError` (one line naming the key). The Snakefile checks its own merge with
:func:`check`; ``skinground query``, the cost model and the benchmarks read configs with
:func:`load`. Also: the per-rule resources of the workflow profile. Which keys of a section
change what a rule computes is ``core.sections``' (standard library only: the model rules
read it, and their code hash must not hold this module's checks)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from skinground.core import names, outputs, plan
from skinground.core.errors import InputError

#: The config's JSON Schema (workflow/schemas/): types, ranges, closed sections, and the
#: defaults of the keys a config may leave out.
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(InputError):
    """A config the workflow refuses: one line naming the key (the Snakefile raises it as
    Snakemake's ``WorkflowError``, with the same text)."""


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


# ------------------------------------------------------------------ reading and checking


def load(paths: Sequence[str | Path]) -> dict:
    """The config files merged in order (:func:`deep_merge`: an empty map empties its
    section), completed and checked by :func:`check`: how every reader outside Snakemake
    reads a config (a run's ``results/<run>/config.yaml`` included). Raises
    :class:`ConfigError`."""
    config: dict = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML "
                              f"({getattr(err, 'problem', None) or 'unreadable'}{where})"
                              ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: not a map of config sections")
        config = deep_merge(config, loaded)
    return check(config)


def check(config: dict, schema: str | Path = SCHEMA) -> dict:
    """``config``, completed in place with the schema's defaults and checked: first against
    the schema (:func:`with_defaults`), then the values it cannot judge alone (values that
    must agree with each other, whole numbers, the paths the demo's generators write, the
    methods). Returns ``config``; raises :class:`ConfigError` with the first complaint, one
    line naming the key."""
    import jsonschema  # Snakemake's dependency, in no rule's environment: imported here

    rules = _schema(str(schema))
    validator = with_defaults(jsonschema.Draft202012Validator)(rules)
    # every error, so every default is filled (Snakemake's validate stops at the first)
    error = jsonschema.exceptions.best_match(list(validator.iter_errors(config)))
    if error is not None:  # the most relevant complaint, not the schema's dump
        key = ".".join(str(k) for k in error.absolute_path) or "(top level)"
        raise ConfigError(f"config {key}: {error.message}")
    _check_values(config, rules)
    return config


def with_defaults(validator_class):
    """``validator_class`` that first sets each absent property that has a ``default`` in
    the schema, then checks the properties (so a default section's own defaults are set
    too): Snakemake's ``validate(config, schema, set_default=True)``, the recipe of
    jsonschema's FAQ; each default is a copy (two keys never share one list)."""
    import jsonschema

    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


#: The lists a schema's ``x-enum-from`` keys name: the code's names (``core.names``, and the
#: methods and models of ``core.plan``), which the schema file states nowhere.
ENUMS: dict[str, tuple[str, ...]] = {
    "layouts": names.LAYOUTS,
    "h_ima_tokens": names.H_IMA_TOKENS,
    "encoder_formats": names.ENCODER_FORMATS,
    "resample_filters": names.RESAMPLE_FILTERS,
    "numeric_columns": names.NUMERIC_COLUMNS,
    "predictable_models": plan.PREDICTABLE_MODELS,
    # the evaluation adds the random reference itself: it is not a configurable method
    "group_methods": tuple(m for m in plan.GROUP_METHODS if m != "random"),
    # an encoder's name is a method's and its spaces' folder's: not a Qwen2-VL method or
    # model, nor the group shards' folder
    "reserved_encoder_names": (*plan.QWEN_METHODS, *plan.QWEN_MODELS,
                               outputs.GROUP_SHARD_FOLDER),
}


def with_enums(node: Any) -> Any:
    """``node`` (a schema, in place) with every ``x-enum-from: NAME`` given ``enum``:
    :data:`ENUMS`' list of that name."""
    if isinstance(node, dict):
        if "x-enum-from" in node:
            node["enum"] = list(ENUMS[node["x-enum-from"]])
        for value in node.values():
            with_enums(value)
    elif isinstance(node, list):
        for value in node:
            with_enums(value)
    return node


@cache
def _schema(path: str) -> dict:
    """The schema at ``path`` with the code's names (:func:`with_enums`), read once (never
    changed: defaults are copied out of it)."""
    return with_enums(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def _check_values(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """What the schema cannot say, on a config it accepts (:func:`check`)."""
    attributes = config["attributes"]

    def known_attributes(key: str, given: Sequence[str]) -> None:
        unknown = [a for a in given if a not in attributes]
        if unknown:
            raise ConfigError(f"{key}: {', '.join(unknown)} is not one of the configured "
                              "attributes")

    fig3 = config["figures"]["fig3_attribute"]
    if fig3 not in attributes:
        raise ConfigError(f"figures.fig3_attribute: {fig3!r} is not one of the configured "
                          "attributes")
    known_attributes("data.zero_is_missing", config["data"]["zero_is_missing"])
    model = config["model"]
    if (model["image_size"] is None and None not in (model["min_pixels"], model["max_pixels"])
            and model["min_pixels"] > model["max_pixels"]):
        raise ConfigError(f"model.min_pixels ({model['min_pixels']}) is above "
                          f"model.max_pixels ({model['max_pixels']})")
    if not outputs.RUN_NAME.fullmatch(config["run"]):  # the schema's "$" lets a final newline in
        raise ConfigError(f"run: {config['run']!r} is not a plain name (letters, digits, _ and "
                          "-): it names the folder results/<run>/")
    retrieve = config["retrieve"]
    if retrieve["k"] > retrieve["b"]:
        raise ConfigError("retrieve.k must not exceed retrieve.b")
    if retrieve["groups"] and not retrieve["group_methods"]:
        raise ConfigError(f"retrieve.group_methods is empty, but retrieve.groups names "
                          f"{', '.join(retrieve['groups'])}: list a method, or write "
                          "`groups: {}` for no multi-attribute retrieval")
    for name, group in retrieve["groups"].items():
        known_attributes(f"retrieve.groups.{name}", group["attributes"])
    if "image_only" in retrieve["group_methods"] and "image_only" not in retrieve["methods"]:
        raise ConfigError("retrieve.group_methods has image_only, which reuses the hits of "
                          "retrieve.methods' image_only: add it there too")
    # JSON Schema counts 2.0 as an integer; the rules would fail on it much later.
    floats = non_integers(config, schema)
    if floats:
        raise ConfigError(f"{', '.join(floats)}: must be a whole number (not e.g. 2.0)")
    run_folder = outputs.fill(outputs.RUN_FOLDER, run=config["run"])
    if config["synthetic"]["enabled"]:
        for key in ("metadata", "images"):
            _owned(f"data.{key} (synthetic.enabled)", config["data"][key], run_folder)
    encoders = plan.encoders(config)
    # A method is a Qwen2-VL one or an encoder's name (the schema checks the names' form only).
    unknown = [m for m in retrieve["methods"] if m not in plan.methods(config)]
    if unknown:
        raise ConfigError(f"retrieve.methods: {', '.join(unknown)} is neither a Qwen2-VL "
                          f"method ({', '.join(plan.QWEN_METHODS)}) nor an encoder of "
                          f"model.encoders ({', '.join(encoders) or 'none'})")
    missing = [m for m in plan.FIG3_METHODS if m not in retrieve["methods"]]
    if missing:
        raise ConfigError(f"retrieve.methods lacks {', '.join(missing)}: Fig. 3 sets "
                          "image-only against image + text retrieval "
                          f"({', '.join(plan.FIG3_METHODS)}); add them")
    if model["build_tiny"]:
        _owned("model.base (model.build_tiny)", model["base"], run_folder)
        for name, encoder in encoders.items():
            _owned(f"model.encoders.{name}.path (model.build_tiny)", encoder["path"],
                   run_folder)
    unknown = [c for c in config["stats"]["diagnosis"] if c not in names.METADATA_COLUMNS]
    if unknown:
        raise ConfigError(f"stats.diagnosis: {', '.join(unknown)} is not a column of "
                          "SLICE-3D's train-metadata.csv")


def _owned(key: str, path: str, run_folder: str) -> None:
    """A generator's output path must lie in the run's folder: the rule owns (deletes and
    rewrites) it, so it can never be a user's real data or weights."""
    folder = os.path.normpath(run_folder)
    if os.path.isabs(path) or not os.path.normpath(path).startswith(folder + os.sep):
        raise ConfigError(f"{key}: {path!r} is written by the demo's generator, so it must lie "
                          f"under {folder}/ (the run's own folder); point it there, or turn "
                          "the generator off")


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
