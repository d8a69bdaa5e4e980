"""The retrieval embeddings from Qwen2-VL's decoder: h_im(I) and h_im,a(I).

Both come from the decoder's last layer *after* its final RMSNorm: ``hidden_states[-1]`` as the
model returns it with ``output_hidden_states=True``, which transformers ties to
``last_hidden_state`` of the decoder (``Qwen2VLModel``). The chat text of (image, question) is
``models.chat_prompt``'s, with the processor's ``<|image_pad|>`` expansion::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|>xn<|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n
    '------------------------ prefix ------------------------''----------- suffix ------------'

- h_im(I): the mean of the last-layer states over the ``<|image_pad|>`` positions of the prefix
  (the template up to and including ``<|vision_end|>``; image only).
- h_im,a(I): the last-layer state of the final token of the full prompt for Q(a) (the ``\\n``
  closing the assistant header), one per attribute a.

:func:`naive_embeddings` is the reference (one forward per (image, question), plus one per
prefix). :func:`prefix_shared_embeddings` computes the same numbers with two forwards per
batch of images: the left-padded image prefixes once (h_im from that pass, its KV cache kept),
then every image's cache repeated once per question and all suffixes as one batch, with
explicit 3-D M-RoPE positions continuing each prefix. :func:`extract` runs it over an image
store and returns float16 arrays (the shard storage format).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

from skinground.models import chat_prompt

log = logging.getLogger(__name__)

VISION_END = "<|vision_end|>"


# --------------------------------------------------------------------------- helpers


def _backbone(model):
    """The ``Qwen2VLModel`` (vision encoder + decoder, no LM head) inside ``model``.

    Accepts a ``Qwen2VLForConditionalGeneration`` (tuned-and-merged or base) or a PEFT
    wrapper around one.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    backbone = getattr(model, "model", None)
    if backbone is None or not hasattr(backbone, "get_rope_index"):
        raise TypeError(f"expected a Qwen2-VL model, got {type(model).__name__}")
    return backbone


def _cache_kwarg(backbone) -> str:
    """The name of the KV-cache argument (``cache`` from transformers 5.2x, else
    ``past_key_values``)."""
    params = inspect.signature(type(backbone).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def split_template(processor, questions: Sequence[str]) -> tuple[str, list[str]]:
    """The chat text cut after ``<|vision_end|>``: the shared image prefix and each question's
    suffix (``{question}<|im_end|>\\n<|im_start|>assistant\\n``).

    Checks that the prefix is the same for every question and that tokenizing prefix and
    suffix separately gives exactly the tokens of the whole prompt (the cut is at a special
    token, so it does for Qwen2's tokenizer).
    """
    tok = processor.tokenizer
    prefix: str | None = None
    suffixes: list[str] = []
    for q in questions:
        full = chat_prompt(processor, q)
        cut = full.find(VISION_END)
        if cut < 0:
            raise ValueError(f"chat template has no {VISION_END}: {full!r}")
        cut += len(VISION_END)
        if prefix is None:
            prefix = full[:cut]
        elif full[:cut] != prefix:
            raise ValueError(f"the image prefix depends on the question: {q!r}")
        suffixes.append(full[cut:])
        whole = tok(full)["input_ids"]
        parts = tok(prefix)["input_ids"] + tok(full[cut:], add_special_tokens=False)["input_ids"]
        if whole != parts:
            raise ValueError(f"prefix + suffix tokens differ from the whole prompt for {q!r}")
    if prefix is None:  # no questions: the prefix alone
        full = chat_prompt(processor, "")
        prefix = full[: full.index(VISION_END) + len(VISION_END)]
    return prefix, suffixes


def encode(processor, images: Sequence[Image.Image], texts: Sequence[str], *,
           padding_side: str = "left") -> dict[str, torch.Tensor]:
    """``processor(images, texts)`` padded on ``padding_side`` (the tokenizer's own setting
    is restored afterwards): input_ids, attention_mask, mm_token_type_ids, pixel_values,
    image_grid_thw."""
    tok = processor.tokenizer
    old = tok.padding_side
    tok.padding_side = padding_side
    try:
        batch = processor(images=list(images), text=list(texts), padding=True,
                          return_tensors="pt")
    finally:
        tok.padding_side = old
    return dict(batch)


def _to_model(batch: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    out = {k: v.to(model.device) for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(model.dtype)
    return out


def _image_token_id(model) -> int:
    return model.config.image_token_id


def _hidden_size(model) -> int:
    return model.config.get_text_config(decoder=True).hidden_size


# --------------------------------------------------------------------------- reference


@torch.inference_mode()
def naive_embeddings(model, processor, images: Sequence[Image.Image], questions: Sequence[str],
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: one unpadded forward of the prefix per image (h_im) and one full forward
    per (image, question) (h_im,a), reading ``hidden_states[-1]`` of the model's own output.

    Returns float32 CPU tensors ``h_im [N, d]`` and ``h_ima [N, A, d]``.
    """
    prefix, _ = split_template(processor, questions)
    prompts = [chat_prompt(processor, q) for q in questions]
    image_id = _image_token_id(model)
    d = _hidden_size(model)
    h_im = torch.empty(len(images), d)
    h_ima = torch.empty(len(images), len(questions), d)

    def last_layer(image, text):
        batch = _to_model(encode(processor, [image], [text]), model)
        out = model(**batch, output_hidden_states=True, logits_to_keep=1)
        return batch["input_ids"][0], out.hidden_states[-1][0].float()

    for i, image in enumerate(images):
        ids, states = last_layer(image, prefix)
        h_im[i] = states[ids == image_id].mean(0).cpu()
        for a, text in enumerate(prompts):
            _, states = last_layer(image, text)
            h_ima[i, a] = states[-1].cpu()
    return h_im, h_ima


# --------------------------------------------------------------------------- prefix sharing


@torch.inference_mode()
def prefix_shared_embeddings(model, processor, images: Sequence[Image.Image],
                             questions: Sequence[str], *, batch_images: int,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as :func:`naive_embeddings`, two decoder passes per batch of ``batch_images``.

    1. The image prefixes of the batch in one forward, left-padded (images of different sizes
       give different numbers of image tokens), with the M-RoPE positions of the model's own
       ``get_rope_index``; h_im is the mean over each row's ``<|image_pad|>`` positions.
    2. The prefix KV cache repeated A times per image (row ``i * A + a``) and all suffixes,
       right-padded to the longest, as one batch of N x A sequences. The attention mask covers
       the prefix pads and the suffix pads; the explicit 3-D positions continue at the prefix's
       last position + 1 (Qwen2-VL's rope delta: text after an image resumes at the image's
       largest position + 1, in all three sections). h_im,a is the state of each row's last
       real suffix token.

    With no questions only step 1 runs (``h_ima`` has shape ``[N, 0, d]``). Returns float32
    CPU tensors; the model's dtype and device are used for the passes (means in float32).
    """
    if batch_images < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images}")
    backbone = _backbone(model)
    cache_kw = _cache_kwarg(backbone)
    prefix, suffixes = split_template(processor, questions)
    tok = processor.tokenizer
    image_id = _image_token_id(model)
    n_q = len(questions)
    d = _hidden_size(model)
    device = model.device

    # The suffixes once, right-padded: [A, Ls].
    if n_q:
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        suffix_ids = [tok(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        lengths = torch.tensor([len(s) for s in suffix_ids], device=device)
        width = int(lengths.max())
        s_ids = torch.full((n_q, width), pad_id, dtype=torch.long, device=device)
        s_mask = torch.zeros((n_q, width), dtype=torch.long, device=device)
        for a, ids in enumerate(suffix_ids):
            s_ids[a, : len(ids)] = torch.tensor(ids, device=device)
            s_mask[a, : len(ids)] = 1
        steps = torch.arange(width, device=device)

    h_im_all, h_ima_all = [], []
    for start in range(0, len(images), batch_images):
        chunk = list(images[start:start + batch_images])
        n = len(chunk)
        batch = _to_model(encode(processor, chunk, [prefix] * n, padding_side="left"), model)
        p_ids, p_mask = batch["input_ids"], batch["attention_mask"]
        positions, _ = backbone.get_rope_index(
            p_ids, batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
            attention_mask=p_mask,
        )
        cache = DynamicCache(config=model.config)
        out = backbone(
            input_ids=p_ids, attention_mask=p_mask, position_ids=positions,
            pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
            mm_token_type_ids=batch["mm_token_type_ids"], use_cache=True, **{cache_kw: cache},
        )
        is_image = (p_ids == image_id).unsqueeze(-1)
        states = out.last_hidden_state.float().masked_fill(~is_image, 0.0)  # pads: never NaN
        h_im = states.sum(1) / is_image.sum(1)
        h_im_all.append(h_im.cpu())
        if not n_q:
            h_ima_all.append(torch.empty(n, 0, d))
            continue

        # Text after the prefix continues at max position + 1 (pads sit at 0).
        next_pos = positions.amax(dim=(0, 2)) + 1  # [n]
        rows = n * n_q
        q_ids = s_ids.repeat(n, 1)  # row i * A + a
        q_pos = next_pos.repeat_interleave(n_q)[:, None] + steps[None, :]
        q_pos = q_pos.unsqueeze(0).expand(3, rows, width)
        mask = torch.cat([p_mask.repeat_interleave(n_q, dim=0), s_mask.repeat(n, 1)], dim=1)
        cache.batch_repeat_interleave(n_q)
        out = backbone(
            input_ids=q_ids, attention_mask=mask, position_ids=q_pos, use_cache=True,
            **{cache_kw: cache},
        )
        last = (lengths - 1).repeat(n)
        h_ima = out.last_hidden_state[torch.arange(rows, device=device), last].float()
        h_ima_all.append(h_ima.view(n, n_q, d).cpu())
        del cache, out

    if not h_im_all:
        return torch.empty(0, d), torch.empty(0, n_q, d)
    return torch.cat(h_im_all), torch.cat(h_ima_all)


# --------------------------------------------------------------------------- extraction


def extract(model, processor, store, ids: Sequence[str], questions: Sequence[str], *,
            batch_images: int, progress: bool = True,
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """h_im and h_im,a for every id of ``store`` (``store.read(id)`` -> PIL RGB), in order.

    Returns ``(ids, h_im float16 [N, d], h_ima float16 [N, A, d])``, row k belonging to
    ``ids[k]``. Logs progress about every 10% of the batches when ``progress``. Raises
    ``ValueError`` if a value does not fit in float16.
    """
    if batch_images < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images}")
    ids = list(ids)
    d = _hidden_size(model)
    n, n_q = len(ids), len(questions)
    h_im = np.empty((n, d), dtype=np.float16)
    h_ima = np.empty((n, n_q, d), dtype=np.float16)
    n_batches = -(-n // batch_images)
    step = max(1, n_batches // 10)
    t0 = time.perf_counter()
    for b in range(n_batches):
        lo, hi = b * batch_images, min(n, (b + 1) * batch_images)
        images = [store.read(i) for i in ids[lo:hi]]
        e_im, e_ima = prefix_shared_embeddings(model, processor, images, questions,
                                               batch_images=batch_images)
        h_im[lo:hi] = e_im.numpy()
        h_ima[lo:hi] = e_ima.numpy()
        if not (np.isfinite(h_im[lo:hi]).all() and np.isfinite(h_ima[lo:hi]).all()):
            raise ValueError(f"non-finite embedding (float16 overflow?) in images "
                             f"{ids[lo]}..{ids[hi - 1]}")
        if progress and ((b + 1) % step == 0 or b + 1 == n_batches):
            rate = hi / max(time.perf_counter() - t0, 1e-9)
            log.info("embedded %d/%d images (batch %d/%d, %.1f images/s)",
                     hi, n, b + 1, n_batches, rate)
    return ids, h_im, h_ima
