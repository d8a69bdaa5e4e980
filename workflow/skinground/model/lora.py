"""LoRA adapters on Qwen2-VL: the config from ``train.lora``, attaching a fresh adapter for
training, and loading a trained one back onto its base model (for prediction and embedding).

``train.lora.target_modules`` is a regex over module names, matched in full by peft
(``re.fullmatch``) against names such as ``model.language_model.layers.0.self_attn.q_proj``
and ``model.visual.blocks.0.attn.qkv``; it must never match the vision ``patch_embed.proj``
(a Conv3d). ``modules_to_save`` names modules trained in full and saved with the adapter
(matched by name suffix, e.g. ``lm_head``, ``embed_tokens``, ``visual.merger``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model

from skinground.core.errors import InputError, ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"


class LoraConfigError(InputError):
    """``train.lora`` is invalid (a bad regex, a target that matches no or the wrong module)."""


def lora_config(lora_cfg: Mapping[str, Any]) -> LoraConfig:
    """A ``peft.LoraConfig`` from the config section ``train.lora``
    (``r``, ``alpha``, ``dropout``, ``target_modules`` regex, ``modules_to_save`` list)."""
    target = lora_cfg["target_modules"]
    if isinstance(target, str):
        try:
            re.compile(target)
        except re.error as err:
            raise LoraConfigError(f"train.lora.target_modules is not a valid regex: {err}") from err
    modules_to_save = list(lora_cfg.get("modules_to_save") or []) or None
    return LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=lora_cfg["alpha"],
        lora_dropout=float(lora_cfg.get("dropout", 0.0)),
        target_modules=target,
        modules_to_save=modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )


def target_module_names(model: torch.nn.Module, target_modules: str) -> list[str]:
    """The names of ``model``'s modules that the ``target_modules`` regex selects (as peft)."""
    return [name for name, _ in model.named_modules() if re.fullmatch(target_modules, name)]


def attach_lora(model: torch.nn.Module, lora_cfg: Mapping[str, Any]) -> PeftModel:
    """Wrap ``model`` with a fresh LoRA adapter from ``train.lora``; only the adapter (and the
    ``modules_to_save``) require gradients. Raises ``LoraConfigError`` if the regex selects a
    module LoRA cannot adapt here (anything but ``nn.Linear``, e.g. the patch-embedding Conv3d)
    or nothing at all."""
    config = lora_config(lora_cfg)
    if isinstance(config.target_modules, str):
        names = target_module_names(model, config.target_modules)
        if not names:
            raise LoraConfigError("train.lora.target_modules matches no module of the model")
        modules = dict(model.named_modules())
        wrong = [n for n in names if not isinstance(modules[n], torch.nn.Linear)]
        if wrong:
            raise LoraConfigError(
                f"train.lora.target_modules must select Linear layers only, it also matches "
                f"{', '.join(wrong[:5])}" + (" ..." if len(wrong) > 5 else "")
            )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise LoraConfigError(f"train.lora: {err}") from err


def _safetensors_size(path: Path) -> int:
    """The size a safetensors file must have: 8 bytes of header length, the header, and the
    end of the last tensor's bytes."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def attach_adapter(model: torch.nn.Module, adapter_dir: str | os.PathLike, *,
                   merge: bool = True) -> torch.nn.Module:
    """Load the adapter saved in ``adapter_dir`` onto the base ``model`` (in eval mode).

    ``merge=True``: the LoRA weights are merged and the trained ``modules_to_save`` put in
    place; the result is a plain model (same class as ``model``) for generation/embedding.
    ``merge=False``: the ``PeftModel``. Raises ``ModelLoadError`` naming ``adapter_dir`` when
    the directory or its ``adapter_config.json`` is missing or unreadable, or the adapter does
    not fit this base model (other hidden size/vocabulary, target modules absent).
    """
    root = Path(adapter_dir)
    if not root.is_dir():
        raise ModelLoadError(f"adapter directory does not exist: {root}")
    config_file = root / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelLoadError(f"no {ADAPTER_CONFIG} in adapter directory {root}")
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"unreadable {ADAPTER_CONFIG} in {root}: {err}") from err
    if not (root / "adapter_model.safetensors").is_file():
        # a pickled adapter_model.bin would be read with torch.load: never accepted
        found = ", ".join(sorted(p.name for p in root.glob("adapter_model.*"))) or "none"
        raise ModelLoadError(f"no adapter_model.safetensors in {root} (found: {found}); "
                             "adapters are read as safetensors only, never as pickles")
    weights = root / "adapter_model.safetensors"
    try:  # its header, and its size against it: a cut or damaged file is named here
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            f.keys()
        if weights.stat().st_size != _safetensors_size(weights):
            raise ValueError("the file's size is not its header's")
    except Exception as err:  # SafetensorError is not a public class of every release
        raise ModelLoadError(f"{weights}: damaged ({str(err).splitlines()[0][:120]}); delete "
                             f"{root} and rerun the workflow to retrain it") from None
    try:
        config = PeftConfig.from_pretrained(str(root), local_files_only=True)
        config.inference_mode = True
        peft_model = PeftModel(model, config)
        result = peft_model.load_adapter(str(root), "default", is_trainable=False,
                                         local_files_only=True)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as err:
        raise ModelLoadError(f"adapter {root} does not fit the base model: {err}") from err
    # peft only warns about adapter tensors it could not place (or did not find): errors here.
    stray = [k for k in result.unexpected_keys if "lora_" in k or "modules_to_save" in k]
    for what, keys in (("have no place in the base model", stray),
                       ("are missing from the adapter", list(result.missing_keys))):
        if keys:
            raise ModelLoadError(f"adapter {root} does not fit the base model: {len(keys)} "
                                 f"adapter tensor(s) {what}, e.g. {keys[0]}")
    peft_model.eval()
    if not merge:
        return peft_model
    return peft_model.merge_and_unload().eval()

