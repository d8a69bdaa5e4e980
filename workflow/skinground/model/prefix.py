"""The image prefix computed once: one mechanism for extraction, training and generation.

Every (image, question) sequence of the study shares its image prefix, the chat template up
to and including ``<|vision_end|>``::

    <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|image_pad|>xn<|vision_end|>
    '----------------------------------- prefix -----------------------------------------'
    {question}<|im_end|>\\n<|im_start|>assistant\\n[{answer}<|im_end|>]
    '------------------------------ suffix ----------------------------'

:func:`run_prefix` runs the vision encoder and the decoder over a batch of left-padded
prefixes once (with gradients when training), keeping the KV cache. The suffixes then run
as right-padded batches over that cache, each attending to its own image's prefix and to
itself only, with explicit 3-D M-RoPE positions continuing at the prefix's largest
position + 1, which is where Qwen2-VL's own ``get_rope_index`` puts text after an image. So
every suffix token's state equals that of one full forward of prefix + suffix (tested to
~1e-6 in float32), and the vision encoder and the prefix run once per image instead of once
per question.

- Embeddings and generation (:func:`run_shared_suffixes`): every image's question suffixes
  over a shared-prefix KV cache, which holds each image's prefix keys and values once and
  each row's own ones in a buffer written in place, so greedy decoding goes on from the same
  cache; its attention joins the prefix part and the rows' part by their log-sum-exps
  (:mod:`skinground.model.shared_cache`).
- Training (``batches.image_once_loss``) gathers each suffix row's prefix keys from the cache
  (gradients flow back into the prefix through them) and runs the suffixes through the
  model's own attention.

Suffixes of different lengths go in one pass, or two by length (:func:`length_buckets`).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from skinground.core.names import H_IMA_TOKENS
from skinground.model.loading import EOS_TOKEN, chat_prompt
from skinground.model.shared_cache import SharedPrefixCache, shared_prefix_attention_for

VISION_END = "<|vision_end|>"


def backbone_of(model):
    """The ``Qwen2VLModel`` (vision encoder + decoder, no LM head) inside ``model``: a
    ``Qwen2VLForConditionalGeneration`` (base or merged), or a peft wrapper around one."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    backbone = getattr(model, "model", None)
    if backbone is None or not hasattr(backbone, "get_rope_index"):
        raise TypeError(f"expected a Qwen2-VL model, got {type(model).__name__}")
    return backbone


def lm_head_of(model) -> torch.nn.Module:
    """The output projection of ``model`` (peft's trained copy when it is a saved module)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.lm_head


def cache_kwarg(backbone) -> str:
    """The name of the KV-cache argument (``cache`` from transformers 5.2x, else
    ``past_key_values``)."""
    params = inspect.signature(type(backbone).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(backbone) -> DynamicCache:
    return DynamicCache(config=backbone.config)


def rope_positions(backbone, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3-D M-RoPE positions [3, n, Lp] of left-padded prefixes (the model's own
    ``get_rope_index``) and ``next_position`` [n]: where text after each prefix continues,
    its largest position + 1 (pads sit at 0)."""
    positions, _ = backbone.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    return positions, positions.amax(dim=(0, 2)) + 1


#: split_template's results per processor (weakly held) and tuple of questions.
_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def split_template(processor, questions: Sequence[str]) -> tuple[str, list[str]]:
    """The chat text cut after ``<|vision_end|>``: the shared image prefix and each question's
    suffix (``{question}<|im_end|>\\n<|im_start|>assistant\\n``).

    Checks that the prefix is the same for every question and that tokenizing prefix and
    suffix separately gives exactly the tokens of the whole prompt (the cut is at a special
    token, so it does for Qwen2's tokenizer). Computed once per processor and questions (the
    checks tokenize every prompt three times; generation asks for every batch).
    """
    known = _TEMPLATES.setdefault(processor, {})
    key = tuple(questions)
    if key not in known:
        known[key] = _split_template(processor, key)
    prefix, suffixes = known[key]
    return prefix, list(suffixes)


def _split_template(processor, questions: Sequence[str]) -> tuple[str, list[str]]:
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


def encode(processor, images: Sequence, texts: Sequence[str], *,
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


def stack_prefixes(encoded: Sequence[dict[str, torch.Tensor]], pad_id: int,
                   ) -> dict[str, torch.Tensor]:
    """One batch from single-image encodings (``encode`` of one image each): the token rows
    left-padded to the longest (``pad_id``, attention and token type 0), pixel values and
    grids concatenated in order, as ``encode`` of all the images gives them."""
    width = max(e["input_ids"].shape[1] for e in encoded)
    fill = {"input_ids": pad_id, "attention_mask": 0, "mm_token_type_ids": 0}
    out = {}
    for key, value in fill.items():
        rows = [torch.nn.functional.pad(e[key], (width - e[key].shape[1], 0), value=value)
                for e in encoded]
        out[key] = torch.cat(rows)
    for key in ("pixel_values", "image_grid_thw"):
        out[key] = torch.cat([e[key] for e in encoded])
    return out


def to_model(batch: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """The batch's tensors on the model's device; pixel values in the model's dtype."""
    out = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(model.dtype)
    return out


def encode_prefixes(processor, images: Sequence) -> dict[str, torch.Tensor]:
    """The image prefixes of ``images``, left-padded (images of different sizes give
    different numbers of image tokens)."""
    prefix, _ = split_template(processor, [])
    return encode(processor, images, [prefix] * len(images), padding_side="left")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, fill: int | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[len(rows), longest]`` ids (``fill`` or ``pad_id`` after each row's end)
    and the matching 0/1 attention mask."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.full((len(rows), width), pad_id if fill is None else fill, dtype=torch.long)
    ids[mask.bool()] = torch.tensor([t for r in rows for t in r], dtype=torch.long)
    return ids, mask


@dataclass
class Prefix:
    """One pass over a batch of image prefixes: the last-layer states ``hidden`` [n, Lp, d],
    the ``mask`` [n, Lp], the ``input_ids``, the KV ``cache``, and ``next_position`` [n]
    (where text after each prefix continues)."""

    hidden: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor
    cache: DynamicCache
    next_position: torch.Tensor


def run_prefix(model, batch: dict[str, torch.Tensor]) -> Prefix:
    """The decoder (and vision encoder) over left-padded image prefixes, cache kept.

    ``batch``: input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids on
    the model's device. Positions come from the model's own ``get_rope_index``.
    """
    backbone = backbone_of(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions, next_position = rope_positions(backbone, batch)
    cache = new_cache(backbone)
    out = backbone(
        input_ids=ids, attention_mask=mask, position_ids=positions,
        pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
        mm_token_type_ids=batch["mm_token_type_ids"], use_cache=True,
        **{cache_kwarg(backbone): cache},
    )
    return Prefix(hidden=out.last_hidden_state, mask=mask, input_ids=ids, cache=cache,
                  next_position=next_position)


def image_states_mean(model, prefix: Prefix) -> torch.Tensor:
    """h_im: the mean of the last-layer states over each prefix's image tokens, float32."""
    is_image = (prefix.input_ids == model.config.image_token_id).unsqueeze(-1)
    states = prefix.hidden.float().masked_fill(~is_image, 0.0)  # pads: never NaN
    return states.sum(1) / is_image.sum(1)


def suffix_positions(next_position: torch.Tensor, width: int) -> torch.Tensor:
    """Explicit 3-D M-RoPE positions [3, rows, width] of suffix rows starting at
    ``next_position`` [rows]."""
    steps = torch.arange(width, device=next_position.device)
    pos = next_position[:, None] + steps[None, :]
    return pos.unsqueeze(0).expand(3, *pos.shape)


# --------------------------------------------------------------------------- length buckets

#: Suffixes go in two passes by length when that pads at least this share fewer tokens than
#: one pass (a pass costs a fixed overhead besides its tokens).
BUCKET_MIN_SAVING = 0.1


def length_buckets(lengths: torch.Tensor, *, min_saving: float | None = None,
                   ) -> list[torch.Tensor]:
    """The rows (indices into ``lengths``, ascending) in one group, or in two by length
    (shorter, longer) where padding each group to its own longest row saves at least
    ``min_saving`` (default ``BUCKET_MIN_SAVING``) of the tokens of padding all rows to the
    longest."""
    if min_saving is None:
        min_saving = BUCKET_MIN_SAVING
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order].tolist()
    n = len(ordered)
    single = n * ordered[-1] if n else 0
    best, cut = single, n
    for k in range(1, n):
        if ordered[k] != ordered[k - 1]:
            cost = k * ordered[k - 1] + (n - k) * ordered[-1]
            if cost < best:
                best, cut = cost, k
    if best > (1.0 - min_saving) * single:
        return [torch.arange(n, device=lengths.device)]
    return [order[:cut].sort().values, order[cut:].sort().values]


# --------------------------------------------------------------------------- shared prefix









@dataclass
class SharedSuffixes:
    """What :func:`run_shared_suffixes` gives: ``last`` [R, d], each row's last-layer state at
    its last suffix token (the first answer token's logits come from it); ``read`` [R, d], the
    state at the position asked for (h_im,a: :func:`h_ima_positions`); the ``cache`` to decode
    from; ``position`` [R], where each row's next token goes."""

    last: torch.Tensor
    cache: SharedPrefixCache
    position: torch.Tensor
    read: torch.Tensor


def h_ima_positions(tokenizer, suffix_ids: torch.Tensor, suffix_mask: torch.Tensor,
                    token: str) -> torch.Tensor:
    """Per suffix (``{question}<|im_end|>\n<|im_start|>assistant\n``, right-padded [A, Ls]),
    the index h_im,a is read at: its last token ("prompt_end") or the token before its
    ``<|im_end|>`` ("question")."""
    if token == "prompt_end":
        return suffix_mask.sum(1) - 1
    if token != "question":
        raise ValueError(f"h_im,a token must be one of {H_IMA_TOKENS}, got {token!r}")
    end = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    is_end = (suffix_ids == end) & suffix_mask.bool()
    if not is_end.any(1).all():
        raise ValueError(f"a question suffix has no {EOS_TOKEN}")
    first = is_end.int().argmax(1)
    if (first < 1).any():
        raise ValueError("a question suffix starts with its end of turn: empty question")
    return first - 1


def run_shared_suffixes(model, prefix: Prefix, suffix_ids: torch.Tensor,
                        suffix_mask: torch.Tensor, *, room: int = 0,
                        read_at: torch.Tensor | None = None) -> SharedSuffixes:
    """Every question's suffix (``suffix_ids``/``suffix_mask`` [A, Ls], right-padded) after
    every image's prefix, row ``i * A + a``, each image's prefix keys held once.

    The suffixes run in one pass, or in two by length (:func:`length_buckets`), each with
    explicit 3-D M-RoPE positions continuing its prefix; a suffix token attends to its image's
    prefix and causally to its own suffix (:func:`shared_prefix_attention`), so its state is
    that of one forward of prefix + suffix. ``room``: tokens to decode afterwards.
    ``read_at`` [A]: the suffix index whose state ``read`` holds, per question (default: the
    last token, as ``last``).
    """
    backbone = backbone_of(model)
    decoder, kwarg = backbone.language_model, cache_kwarg(backbone)
    n, n_q = prefix.mask.shape[0], suffix_ids.shape[0]
    device = prefix.mask.device
    lengths = suffix_mask.sum(1).to(device)
    row_lengths = lengths.repeat(n)
    start = prefix.next_position.repeat_interleave(n_q)
    cache = SharedPrefixCache(prefix, row_lengths, room=room)
    read_rows = row_lengths - 1 if read_at is None else read_at.to(device).repeat(n)
    last = read = None
    with shared_prefix_attention_for(decoder) as masks:
        for part in length_buckets(lengths):
            rows = (torch.arange(n, device=device)[:, None] * n_q + part[None, :]).reshape(-1)
            width = int(lengths[part].max())
            with cache.suffixes(rows):
                states = decoder(input_ids=suffix_ids[part, :width].to(device).repeat(n, 1),
                                 attention_mask=masks,
                                 position_ids=suffix_positions(start[rows], width),
                                 use_cache=True, **{kwarg: cache}).last_hidden_state
            index = torch.arange(len(rows), device=device)
            at = states[index, row_lengths[rows] - 1]
            if last is None:
                last = at.new_empty(n * n_q, at.shape[-1])
                read = at.new_empty(n * n_q, at.shape[-1])
            last[rows] = at
            read[rows] = states[index, read_rows[rows]]
    return SharedSuffixes(last, cache, start + row_lengths, read)
