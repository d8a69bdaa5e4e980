"""Reading the workflow's config files outside Snakemake (the cost model, benchmarks): merged
in order, as ``snakemake --configfile a.yaml b.yaml`` merges them; and the per-rule resources
of the workflow profile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def deep_merge(base: dict, over: Mapping) -> dict:
    """``over`` merged into a copy of ``base`` key by key (Snakemake's --configfile merge)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(paths: Sequence[str | Path]) -> dict:
    """The config files merged in order."""
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
