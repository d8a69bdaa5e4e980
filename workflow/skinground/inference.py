"""Loading a model for inference the same way in every rule: the base Qwen2-VL with the
configured pixel budget, optionally with the LoRA adapter merged (the tuned model), on the
GPU in bf16 when there is one, else on the CPU in float32."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from . import models


def pixel_budget(model_cfg: Mapping) -> dict:
    """load_mllm's pixel arguments from config ``model``: image_size when set, else
    min_pixels/max_pixels (those that are set)."""
    if model_cfg.get("image_size") is not None:
        return {"image_size": model_cfg["image_size"]}
    return {k: model_cfg[k] for k in ("min_pixels", "max_pixels") if model_cfg.get(k) is not None}


def device_and_dtype() -> tuple[str, torch.dtype]:
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def load_qwen(base: str | os.PathLike, model_cfg: Mapping,
              adapter: str | os.PathLike | None = None):
    """``(model, processor)``: the untuned base, or the tuned model (adapter merged)."""
    device, dtype = device_and_dtype()
    model, processor = models.load_mllm(base, dtype=dtype, device=device,
                                        **pixel_budget(model_cfg))
    if adapter:
        from .lora import attach_adapter

        model = attach_adapter(model, adapter, merge=True).eval()
    return model, processor
