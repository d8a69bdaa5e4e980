"""What was measured, as the cost model's inputs: the MFUs the GPU check measured on a
GPU (``outputs.GPU_MEASUREMENT``: the measured throughput at the GPU's peak, applied at the
A6000's, same FLOP convention; a ``--tiny`` or CPU result, or a failed part, is not used), and
the prompt and answer token counts under the 7B's real tokenizer
(``outputs.TOKEN_MEASUREMENT``). The workflow reads them from ``resources/measured/``, where a
measurement reaches only through the promotion step (docs/cost-and-scale.md), which refuses
one :func:`unusable` names a reason for."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any


def apply_measurements(a, gpu: Mapping[str, Any] | None):
    """The MFUs measured by the GPU check replace the assumed ones (same FLOP
    convention, so this is the measured throughput x A6000 peak / H200 peak). A ``--tiny``
    or CPU result, or a failed part, is not used."""
    if not gpu:
        return a
    why = None
    if gpu.get("tiny"):
        why = "gpu.json is a --tiny (CPU) run"
    elif not str(gpu.get("device", {}).get("type", "")).startswith("cuda"):
        why = "gpu.json was not measured on a GPU"
    if why:
        return replace(a, measured={"used": False, "why": why})
    used: dict[str, Any] = {"used": True, "gpu": gpu.get("device", {}).get("name")}
    train = gpu.get("train") or {}
    embed = gpu.get("embed") or {}
    new = {}
    if isinstance(train.get("mfu"), (int, float)) and train["mfu"] > 0:
        new["train_mfu"] = used["train_mfu"] = float(train["mfu"])
    mfu = embed.get("mfu") or {}
    if isinstance(mfu.get("prefix_shared"), (int, float)) and mfu["prefix_shared"] > 0:
        new["infer_mfu"] = used["infer_mfu"] = float(mfu["prefix_shared"])
    if isinstance(mfu.get("naive"), (int, float)) and mfu["naive"] > 0:
        new["naive_mfu"] = used["naive_mfu"] = float(mfu["naive"])
    peak = gpu.get("peak_tflops")
    if isinstance(peak, (int, float)) and peak > 0:
        new["reference_peak_flops"] = float(peak) * 1e12
    if len(used) == 2:
        used.update(used=False, why="gpu.json holds no successful measurement")
    return replace(a, measured=used, **new)




def unusable(name: str, record: Mapping[str, Any]) -> str | None:
    """Why the cost model would not use a measurement (``name``: ``gpu`` or
    ``tokens``, as in ``outputs.MEASURED``), or None when it would: what the promotion step
    checks."""
    if name == "gpu":
        from skinground.cost.estimate import Assumptions

        measured = apply_measurements(Assumptions(), record).measured
        return None if measured.get("used") else measured.get("why", "not used")
    if name == "tokens":
        try:
            token_counts(record)
        except (KeyError, TypeError, ValueError) as err:
            return f"no token counts ({err!r})"
        return None
    raise ValueError(f"unknown measurement {name!r}")


def _read(path: Path | None, *, required: bool, what: str) -> dict | None:
    """A measurement's JSON, or None with a warning (a missing file: only when
    ``required``) that the assumed ``what`` stays; no ``path``: None, silently."""
    if path is None:
        return None
    if not path.is_file():
        if required:
            print(f"warning: {path} not found; using the assumed {what}", file=sys.stderr)
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        print(f"warning: {path} is not valid JSON ({err}); using the assumed {what}",
              file=sys.stderr)
        return None


def apply_file(a, path: Path | None, *, required: bool):
    """``apply_measurements`` with the JSON at ``path``; no path, a missing (``required``:
    warned) or an unreadable file leaves the assumed MFUs, with a warning."""
    gpu = _read(path, required=required, what="MFU")
    if gpu is None:
        return a
    a = apply_measurements(a, gpu)
    if a.measured:
        a.measured["path"] = str(path)
    return a


#: tokens.json key -> the cost model's Assumptions field.
TOKEN_FIELDS = {"prefix_text_tokens": "prefix_text_tokens", "suffix_tokens": "suffix_tokens",
                "answer_tokens": "answer_tokens"}


def token_counts(record: Mapping[str, Any]) -> dict[str, float]:
    """The Assumptions fields a tokens.json sets; ``KeyError``/``TypeError``/``ValueError``
    where it holds no such counts."""
    return {field: float(record[key]) for key, field in TOKEN_FIELDS.items()}


def apply_tokens(a, path: Path | None, *, required: bool):
    """The token counts measured with the 7B's tokenizer (``path``) replace the assumed ones;
    no path, a missing (``required``: warned) or an unreadable file leaves them, with a
    warning."""
    tokens = _read(path, required=required, what="token counts")
    if tokens is None:
        return a
    try:
        new = token_counts(tokens)
    except (KeyError, TypeError, ValueError) as err:
        print(f"warning: {path} holds no token counts ({err}); using the assumed ones",
              file=sys.stderr)
        return a
    return replace(a, tokens_measured=str(path), **new)
